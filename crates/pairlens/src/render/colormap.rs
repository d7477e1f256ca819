//! A diverging colour map (ColorBrewer RdBu): blue for negative, white at zero, red for positive.

/// Anchors from −1 to +1.
const ANCHORS: [[f32; 3]; 5] = [
    [5.0, 48.0, 97.0],
    [67.0, 147.0, 195.0],
    [247.0, 247.0, 247.0],
    [214.0, 96.0, 77.0],
    [103.0, 0.0, 31.0],
];

/// Colour of `value` on the symmetric range `[-limit, limit]` (values outside are clamped).
pub(crate) fn diverging(value: f32, limit: f32) -> [u8; 3] {
    let t = if limit > 0.0 && value.is_finite() {
        (value / limit).clamp(-1.0, 1.0)
    } else {
        0.0
    };
    let pos = (t + 1.0) * 0.5 * (ANCHORS.len() - 1) as f32;
    let i = (pos.floor() as usize).min(ANCHORS.len() - 2);
    let f = pos - i as f32;
    let mut out = [0u8; 3];
    for c in 0..3 {
        out[c] = (ANCHORS[i][c] * (1.0 - f) + ANCHORS[i + 1][c] * f).round() as u8;
    }
    out
}

/// The symmetric range that shows every value: max |v| (or 1 if all are zero).
pub(crate) fn symmetric_limit(values: &[f32]) -> f32 {
    let m = values
        .iter()
        .filter(|v| v.is_finite())
        .fold(0.0f32, |m, v| m.max(v.abs()));
    if m > 0.0 {
        m
    } else {
        1.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn ends_and_middle() {
        assert_eq!(diverging(0.0, 1.0), [247, 247, 247]);
        assert_eq!(diverging(1.0, 1.0), [103, 0, 31]);
        assert_eq!(diverging(-5.0, 1.0), [5, 48, 97]);
        assert_eq!(symmetric_limit(&[0.5, -2.0]), 2.0);
    }
}

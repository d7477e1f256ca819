//! Grounding metrics on one phrase. Boxes here are in network-input pixels `(x0, y0, x1, y1)`
//! with exclusive ends; heatmaps are row-major over the patch grid, CLS excluded.

use crate::{Error, Result};

/// Box in network-input pixels.
pub type InputBox = (f32, f32, f32, f32);

/// Pointing game: the patch with the largest value (the first one on ties) is a hit when its
/// centre lies inside one of the boxes (`x0 ≤ cx < x1`, `y0 ≤ cy < y1`). The centre rather than
/// any overlap so that a top patch grazing a box edge does not count.
pub fn pointing_game(
    heatmap: &[f32],
    grid: (usize, usize),
    patch: usize,
    boxes: &[InputBox],
) -> Result<bool> {
    if heatmap.len() != grid.0 * grid.1 || heatmap.is_empty() {
        return Err(Error::InvalidArgument(format!(
            "heatmap of {} values for a {}×{} grid",
            heatmap.len(),
            grid.0,
            grid.1
        )));
    }
    let mut best = 0;
    for (k, v) in heatmap.iter().enumerate() {
        if v.total_cmp(&heatmap[best]).is_gt() {
            best = k;
        }
    }
    let p = patch as f32;
    let (cx, cy) = (
        ((best % grid.1) as f32 + 0.5) * p,
        ((best / grid.1) as f32 + 0.5) * p,
    );
    Ok(boxes
        .iter()
        .any(|&(x0, y0, x1, y1)| x0 <= cx && cx < x1 && y0 <= cy && cy < y1))
}

/// Fraction of every patch's area inside the UNION of the boxes (overlapping boxes counted
/// once, unlike summing [`crate::attribution::patch_weights`] per box). Errors if no
/// box overlaps the input.
pub fn union_weights(grid: (usize, usize), patch: usize, boxes: &[InputBox]) -> Result<Vec<f32>> {
    let p = patch as f32;
    let (w, h) = (grid.1 as f32 * p, grid.0 as f32 * p);
    let clipped: Vec<InputBox> = boxes
        .iter()
        .map(|&(x0, y0, x1, y1)| (x0.max(0.0), y0.max(0.0), x1.min(w), y1.min(h)))
        .filter(|b| b.0 < b.2 && b.1 < b.3)
        .collect();
    if clipped.is_empty() {
        return Err(Error::InvalidArgument(format!(
            "no box overlaps the part of the image the model sees (0..{w} × 0..{h} after resize and crop): {boxes:?}"
        )));
    }
    let mut out = Vec::with_capacity(grid.0 * grid.1);
    for row in 0..grid.0 {
        for col in 0..grid.1 {
            let cell = (
                col as f32 * p,
                row as f32 * p,
                (col + 1) as f32 * p,
                (row + 1) as f32 * p,
            );
            out.push(union_area(&clipped, cell) / (p * p));
        }
    }
    Ok(out)
}

/// Area of the union of rectangles inside `cell`, by coordinate compression (few boxes).
fn union_area(boxes: &[InputBox], cell: InputBox) -> f32 {
    let inside: Vec<InputBox> = boxes
        .iter()
        .map(|b| {
            (
                b.0.max(cell.0),
                b.1.max(cell.1),
                b.2.min(cell.2),
                b.3.min(cell.3),
            )
        })
        .filter(|b| b.0 < b.2 && b.1 < b.3)
        .collect();
    let mut xs: Vec<f32> = inside.iter().flat_map(|b| [b.0, b.2]).collect();
    let mut ys: Vec<f32> = inside.iter().flat_map(|b| [b.1, b.3]).collect();
    xs.sort_by(f32::total_cmp);
    xs.dedup();
    ys.sort_by(f32::total_cmp);
    ys.dedup();
    let mut area = 0.0;
    for xw in xs.windows(2) {
        for yw in ys.windows(2) {
            let (mx, my) = ((xw[0] + xw[1]) / 2.0, (yw[0] + yw[1]) / 2.0);
            if inside
                .iter()
                .any(|b| b.0 <= mx && mx < b.2 && b.1 <= my && my < b.3)
            {
                area += (xw[1] - xw[0]) * (yw[1] - yw[0]);
            }
        }
    }
    area
}

/// Box mass: Σ wₜ·max(hₜ, 0) / Σ max(hₜ, 0) with `w` from [`union_weights`] — the share of the
/// positive attribution that falls inside the boxes, partly covered patches counting by their
/// covered fraction. `None` when the heatmap has no positive value (the share is undefined).
pub fn box_mass(heatmap: &[f32], weights: &[f32]) -> Result<Option<f32>> {
    if heatmap.len() != weights.len() {
        return Err(Error::InvalidArgument(format!(
            "{} heatmap values for {} patch weights",
            heatmap.len(),
            weights.len()
        )));
    }
    let (mut inside, mut total) = (0.0f64, 0.0f64);
    for (&v, &w) in heatmap.iter().zip(weights) {
        if v > 0.0 {
            total += v as f64;
            inside += (w as f64) * v as f64;
        }
    }
    Ok((total > 0.0).then_some((inside / total) as f32))
}

/// Reverse direction for one phrase: from the box's token scores back to the caption.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Reverse {
    /// The phrase's span has the strictly largest SUM of token scores among the caption's phrase
    /// spans (a tie is a miss). Sum, like `span_heatmap`, so a span's score is its whole
    /// interaction with the region.
    pub hit: bool,
    /// Positive token mass on the span over positive mass on all tokens (SOT and EOT included);
    /// `None` when no token scores positive.
    pub span_share: Option<f32>,
}

/// [`Reverse`] for `spans[which]`, given token scores (`region_token_scores`) and all the
/// caption's phrase spans (half-open token ranges).
pub fn reverse_direction(
    token_scores: &[f32],
    spans: &[(usize, usize)],
    which: usize,
) -> Result<Reverse> {
    let n = token_scores.len();
    if let Some(&(a, b)) = spans.iter().find(|&&(a, b)| a >= b || b > n) {
        return Err(Error::InvalidArgument(format!(
            "span {a}:{b} out of range for {n} tokens"
        )));
    }
    let Some(&(a, b)) = spans.get(which) else {
        return Err(Error::InvalidArgument(format!(
            "phrase {which} of {} spans",
            spans.len()
        )));
    };
    let sum = |(a, b): (usize, usize)| token_scores[a..b].iter().map(|&v| v as f64).sum::<f64>();
    let own = sum((a, b));
    let hit = spans
        .iter()
        .enumerate()
        .all(|(k, &s)| k == which || sum(s) < own);
    let pos = |v: &f32| v.max(0.0) as f64;
    let total: f64 = token_scores.iter().map(pos).sum();
    let on_span: f64 = token_scores[a..b].iter().map(pos).sum();
    Ok(Reverse {
        hit,
        span_share: (total > 0.0).then_some((on_span / total) as f32),
    })
}

/// Two-sided 95 % normal quantile.
const Z95: f64 = 1.959_963_984_540_054;

/// Wilson score interval (95 %) for `hits` successes out of `n`; `(0, 1)` when `n = 0`.
pub fn wilson(hits: usize, n: usize) -> (f64, f64) {
    if n == 0 {
        return (0.0, 1.0);
    }
    let (n, p, z2) = (n as f64, hits as f64 / n as f64, Z95 * Z95);
    let denom = 1.0 + z2 / n;
    let centre = (p + z2 / (2.0 * n)) / denom;
    let half = Z95 * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt() / denom;
    ((centre - half).max(0.0), (centre + half).min(1.0))
}

/// 97.5 % quantile of Student's t with `df` degrees of freedom: table to 30, then the
/// Cornish–Fisher expansion (error < 1e-4).
pub fn t975(df: usize) -> f64 {
    const T: [f64; 30] = [
        12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160,
        2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056,
        2.052, 2.048, 2.045, 2.042,
    ];
    match df {
        0 => f64::NAN,
        1..=30 => T[df - 1],
        _ => {
            let (z, d) = (Z95, df as f64);
            z + (z.powi(3) + z) / (4.0 * d)
                + (5.0 * z.powi(5) + 16.0 * z.powi(3) + 3.0 * z) / (96.0 * d * d)
        }
    }
}

/// Mean with a 95 % Student-t interval `(mean, lo, hi)`; NaN bounds for fewer than 2 values,
/// all NaN for none.
pub fn mean_ci(values: &[f64]) -> (f64, f64, f64) {
    let n = values.len();
    if n == 0 {
        return (f64::NAN, f64::NAN, f64::NAN);
    }
    let mean = values.iter().sum::<f64>() / n as f64;
    if n < 2 {
        return (mean, f64::NAN, f64::NAN);
    }
    let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
    let half = t975(n - 1) * (var / n as f64).sqrt();
    (mean, mean - half, mean + half)
}

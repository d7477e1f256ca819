//! Text on pictures with the public-domain 8×8 bitmap font (no font files, no system fonts).

use font8x8::UnicodeFonts;
use image::{Rgb, RgbImage};

/// Width in pixels of `text` drawn at `scale`.
pub fn text_width(text: &str, scale: u32) -> u32 {
    text.chars().count() as u32 * 8 * scale
}

fn glyph(c: char) -> [u8; 8] {
    font8x8::BASIC_FONTS
        .get(c)
        .or_else(|| font8x8::LATIN_FONTS.get(c))
        .or_else(|| font8x8::GREEK_FONTS.get(c))
        .or_else(|| font8x8::BOX_FONTS.get(c))
        .unwrap_or_else(|| font8x8::BASIC_FONTS.get('?').unwrap_or([0; 8]))
}

/// Draw `text` with its top-left corner at (x, y); pixels outside the image are skipped.
pub fn draw_text(img: &mut RgbImage, x: i64, y: i64, text: &str, scale: u32, colour: [u8; 3]) {
    let s = scale as i64;
    for (k, c) in text.chars().enumerate() {
        let rows = glyph(c);
        for (gy, bits) in rows.iter().enumerate() {
            for gx in 0..8 {
                if bits & (1 << gx) == 0 {
                    continue;
                }
                for dy in 0..s {
                    for dx in 0..s {
                        let px = x + (k as i64 * 8 + gx) * s + dx;
                        let py = y + gy as i64 * s + dy;
                        if px >= 0
                            && py >= 0
                            && (px as u32) < img.width()
                            && (py as u32) < img.height()
                        {
                            img.put_pixel(px as u32, py as u32, Rgb(colour));
                        }
                    }
                }
            }
        }
    }
}

/// A picture's title fitted to its width: the first line of the text large (scale 2), any
/// further lines (after `\n`) small (scale 1). Each is wrapped at spaces; a word longer than a
/// line is cut, and a line that would need more than two rows ends in "...". Pictures keep the
/// width of their content, so a long caption or span can never widen them into a mostly blank
/// canvas.
#[derive(Clone, Debug, PartialEq)]
pub struct Title {
    /// The rows to draw and their scale.
    rows: Vec<(String, u32)>,
}

/// Most rows one line of a title may take.
const ROWS_PER_LINE: usize = 2;
/// Pixels between rows and around the title.
const ROW_GAP: u32 = 4;
const TOP: u32 = 6;

impl Title {
    /// `text` laid out to fit `width` pixels.
    pub fn fit(text: &str, width: u32) -> Title {
        let mut rows = Vec::new();
        for (k, line) in text.lines().enumerate() {
            let scale = if k == 0 { 2 } else { 1 };
            let cap = (width / (8 * scale)).max(4) as usize;
            rows.extend(wrap(line, cap).into_iter().map(|r| (r, scale)));
        }
        Title { rows }
    }

    /// Pixels from the picture's top to below the title.
    pub fn height(&self) -> u32 {
        TOP + self
            .rows
            .iter()
            .map(|(_, scale)| 8 * scale + ROW_GAP)
            .sum::<u32>()
            + ROW_GAP
    }

    /// Draws the title from the top of `img`, indented by `x`.
    pub fn draw(&self, img: &mut RgbImage, x: i64) {
        let mut y = TOP;
        for (row, scale) in &self.rows {
            draw_text(img, x, y as i64, row, *scale, [0, 0, 0]);
            y += 8 * scale + ROW_GAP;
        }
    }

    /// The rows as drawn (for tests and callers that print them).
    pub fn rows(&self) -> impl Iterator<Item = &str> {
        self.rows.iter().map(|(r, _)| r.as_str())
    }
}

/// `line` wrapped at spaces into rows of at most `cap` characters, at most [`ROWS_PER_LINE`] of
/// them; what does not fit is cut and marked with "...".
fn wrap(line: &str, cap: usize) -> Vec<String> {
    // Whole words while they fit, else the start of the first one.
    let cut = |s: &str| -> String {
        let room = cap.saturating_sub(3);
        let mut keep = String::new();
        for w in s.split(' ').filter(|w| !w.is_empty()) {
            let sep = usize::from(!keep.is_empty());
            if keep.chars().count() + sep + w.chars().count() > room {
                break;
            }
            if sep == 1 {
                keep.push(' ');
            }
            keep.push_str(w);
        }
        if keep.is_empty() {
            keep = s.chars().take(room).collect();
        }
        format!("{keep}...")
    };
    let mut rows: Vec<String> = Vec::new();
    let mut row = String::new();
    let mut words = line.split(' ').filter(|w| !w.is_empty()).peekable();
    while let Some(word) = words.next() {
        let len = row.chars().count();
        let fits = if len == 0 {
            word.chars().count() <= cap
        } else {
            len + 1 + word.chars().count() <= cap
        };
        if fits {
            if len > 0 {
                row.push(' ');
            }
            row.push_str(word);
            continue;
        }
        if len > 0 && rows.len() + 1 < ROWS_PER_LINE {
            rows.push(std::mem::take(&mut row));
            if word.chars().count() <= cap {
                row.push_str(word);
                continue;
            }
        }
        // No room left (or a word longer than a whole row): the rest is cut.
        let rest: Vec<&str> = std::iter::once(word).chain(words).collect();
        let text = if row.is_empty() {
            rest.join(" ")
        } else {
            format!("{row} {}", rest.join(" "))
        };
        rows.push(cut(&text));
        return rows;
    }
    if !row.is_empty() || rows.is_empty() {
        rows.push(row);
    }
    rows
}

/// Black or white, whichever reads better on `background`.
pub(crate) fn ink_for(background: [u8; 3]) -> [u8; 3] {
    let luma =
        0.299 * background[0] as f32 + 0.587 * background[1] as f32 + 0.114 * background[2] as f32;
    if luma > 140.0 {
        [0, 0, 0]
    } else {
        [255, 255, 255]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn titles_wrap_and_cut_to_the_width() {
        // 10 characters per large row, 20 per small one.
        let t = Title::fit("whole caption\nscore 0.795  exclip L1/1 N=10", 160);
        let rows: Vec<&str> = t.rows().collect();
        assert_eq!(
            rows,
            ["whole", "caption", "score 0.795 exclip", "L1/1 N=10"]
        );
        assert_eq!(t.height(), 6 + 2 * 20 + 2 * 12 + 4);
        let t = Title::fit("\"a running shoe next to a boot\"", 160);
        let rows: Vec<&str> = t.rows().collect();
        assert_eq!(rows, ["\"a running", "shoe..."]);
        assert!(rows.iter().all(|r| r.chars().count() <= 10), "{rows:?}");
        let t = Title::fit("supercalifragilistic", 160);
        assert_eq!(t.rows().collect::<Vec<_>>(), ["superca..."]);
        assert_eq!(
            Title::fit("short", 160).rows().collect::<Vec<_>>(),
            ["short"]
        );
    }
}

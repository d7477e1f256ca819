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

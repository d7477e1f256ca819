//! A caption drawn as a strip of tokens, each on a background coloured by its score.

use super::colormap::{diverging, symmetric_limit};
use super::font::{draw_text, ink_for, text_width};
use super::heatmap::colour_bar;
use image::{Rgb, RgbImage};

const PAD: u32 = 6;
const LINE_H: u32 = 8 * 2 + 2 * PAD;

/// Tokens wrapped over lines of at most `max_width` pixels, each boxed in the colour of its
/// score, the score printed under it, and a colour bar on the right.
pub fn token_strip(tokens: &[String], scores: &[f32], title: &str, max_width: u32) -> RgbImage {
    let limit = symmetric_limit(scores);
    let max_width = max_width.max(200);
    // Lay out boxes.
    let mut boxes = Vec::with_capacity(tokens.len());
    let (mut x, mut line) = (PAD, 0u32);
    for (tok, score) in tokens.iter().zip(scores) {
        let label = format!("{score:+.1e}");
        let w = text_width(tok, 2).max(text_width(&label, 1)) + 2 * PAD;
        if x + w > max_width && x > PAD {
            x = PAD;
            line += 1;
        }
        boxes.push((x, line, w, tok, label, *score));
        x += w + 4;
    }
    let lines = line + 1;
    let title_h = 28;
    let row_h = LINE_H + 14;
    let height = title_h + lines * row_h + PAD;
    let mut img = RgbImage::from_pixel(max_width + 96, height.max(120), Rgb([255, 255, 255]));
    draw_text(&mut img, 8, 6, title, 2, [0, 0, 0]);
    for (bx, line, w, tok, label, score) in boxes {
        let y = title_h + line * row_h;
        let bg = diverging(score, limit);
        for dy in 0..LINE_H {
            for dx in 0..w {
                img.put_pixel(bx + dx, y + dy, Rgb(bg));
            }
        }
        draw_text(
            &mut img,
            (bx + PAD) as i64,
            (y + PAD) as i64,
            tok,
            2,
            ink_for(bg),
        );
        draw_text(
            &mut img,
            (bx + PAD) as i64,
            (y + LINE_H + 3) as i64,
            &label,
            1,
            [60, 60, 60],
        );
    }
    let bar_h = img.height() - title_h;
    colour_bar(&mut img, max_width + 16, title_h, bar_h, limit);
    img
}

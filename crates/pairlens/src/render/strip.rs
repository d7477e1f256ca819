//! A caption drawn as a strip of tokens, each on a background coloured by its score, optionally
//! beside a picture of what the scores refer to (the image with a box drawn on it).

use super::colormap::{diverging, symmetric_limit};
use super::font::{draw_text, ink_for, text_width, Title};
use super::heatmap::colour_bar;
use image::{Rgb, RgbImage};

const PAD: u32 = 6;
const LINE_H: u32 = 8 * 2 + 2 * PAD;

/// Tokens wrapped over lines of at most `max_width` pixels, each boxed in the colour of its
/// score, the score printed under it, and a colour bar on the right; `thumbnail` (e.g.
/// [`super::thumbnail::box_thumbnail`]) is drawn left of the tokens.
pub fn token_strip(
    tokens: &[String],
    scores: &[f32],
    title: &str,
    max_width: u32,
    thumbnail: Option<&RgbImage>,
) -> RgbImage {
    let limit = symmetric_limit(scores);
    let max_width = max_width.max(200);
    let left = thumbnail.map_or(0, |t| t.width() + 2 * PAD);
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
        boxes.push((left + x, line, w, tok, label, *score));
        x += w + 4;
    }
    let lines = line + 1;
    let width = left + max_width + 96;
    let title = Title::fit(title, width - 16);
    let title_h = title.height();
    let row_h = LINE_H + 14;
    let body_h = (lines * row_h).max(thumbnail.map_or(0, |t| t.height()));
    let height = title_h + body_h + PAD;
    let mut img = RgbImage::from_pixel(width, height.max(120), Rgb([255, 255, 255]));
    title.draw(&mut img, 8);
    if let Some(t) = thumbnail {
        image::imageops::replace(&mut img, t, PAD as i64, title_h as i64);
    }
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
    colour_bar(&mut img, left + max_width + 16, title_h, bar_h, limit);
    img
}

#[cfg(test)]
mod tests {
    use super::*;

    /// With a thumbnail, the picture sits left of the tokens, under the title, unchanged.
    #[test]
    fn thumbnail_beside_the_tokens() {
        let tokens: Vec<String> = ["<sot>", "a", "bag", "<eot>"].map(String::from).to_vec();
        let scores = [0.0, 0.1, -0.2, 0.05];
        let plain = token_strip(&tokens, &scores, "box", 720, None);
        let thumb = RgbImage::from_pixel(128, 140, Rgb([10, 200, 30]));
        let img = token_strip(&tokens, &scores, "box", 720, Some(&thumb));
        assert_eq!(img.width(), plain.width() + 128 + 2 * PAD);
        let top = Title::fit("box", img.width() - 16).height();
        assert!(img.height() >= top + 140);
        assert_eq!(img.get_pixel(PAD, top).0, [10, 200, 30]);
        assert_eq!(img.get_pixel(PAD + 127, top + 139).0, [10, 200, 30]);
        assert_eq!(img.get_pixel(PAD + 128, top).0, [255, 255, 255]);
    }
}

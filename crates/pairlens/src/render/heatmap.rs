//! A patch heatmap laid over the original image (not the resized crop), with a title and a
//! colour bar. Parts of the image the model never sees (cropped away) are dimmed.

use super::colormap::{diverging, symmetric_limit};
use super::font::{draw_text, Title};
use image::{Rgb, RgbImage};

/// Maps a point of the original image to network-input pixel coordinates.
pub type ToInput<'a> = &'a dyn Fn(f32, f32) -> (f32, f32);

const BAR_W: u32 = 96;

/// Upscale factor so that small images stay readable (short side ≥ 256 px).
fn display_scale(w: u32, h: u32) -> u32 {
    (256 / w.min(h).max(1)).clamp(1, 16)
}

/// Render `values` (row-major over a `grid = (rows, cols)` of patches covering the network input
/// of `input_size = (w, h)` pixels) over `original`. Colours use the symmetric range
/// `[-limit, limit]` (`None`: max |value|). The title is fitted to the picture's width
/// ([`Title`]): its first line large, lines after a `\n` small.
pub fn heatmap_overlay(
    original: &RgbImage,
    to_input: ToInput,
    input_size: (usize, usize),
    grid: (usize, usize),
    values: &[f32],
    limit: Option<f32>,
    title: &str,
) -> RgbImage {
    let limit = limit.unwrap_or_else(|| symmetric_limit(values));
    let (ow, oh) = original.dimensions();
    let s = display_scale(ow, oh);
    let (iw, ih) = (ow * s, oh * s);
    let width = iw + BAR_W;
    let title = Title::fit(title, width - 16);
    let top = title.height();
    let mut out = RgbImage::from_pixel(width, top + ih + 8, Rgb([255, 255, 255]));
    title.draw(&mut out, 8);
    let (pw, ph) = (
        input_size.0 as f32 / grid.1 as f32,
        input_size.1 as f32 / grid.0 as f32,
    );
    for y in 0..ih {
        for x in 0..iw {
            let src = original.get_pixel(x / s, y / s).0;
            // Centre of the displayed pixel in original coordinates.
            let (ox, oy) = ((x as f32 + 0.5) / s as f32, (y as f32 + 0.5) / s as f32);
            let (ix, iy) = to_input(ox, oy);
            let inside =
                ix >= 0.0 && iy >= 0.0 && ix < input_size.0 as f32 && iy < input_size.1 as f32;
            let px = if inside {
                let col = ((ix / pw) as usize).min(grid.1 - 1);
                let row = ((iy / ph) as usize).min(grid.0 - 1);
                let v = values[row * grid.1 + col];
                let colour = diverging(v, limit);
                // Opacity grows with |v|: neutral patches leave the photo visible.
                let a = 0.15 + 0.7 * (v.abs() / limit).min(1.0).powf(0.7);
                blend(grey(src), colour, a)
            } else {
                blend(grey(src), [255, 255, 255], 0.6)
            };
            out.put_pixel(x, top + y, Rgb(px));
        }
    }
    colour_bar(&mut out, iw + 12, top, ih, limit);
    out
}

fn grey(p: [u8; 3]) -> [u8; 3] {
    let l = (0.299 * p[0] as f32 + 0.587 * p[1] as f32 + 0.114 * p[2] as f32) as u8;
    [l, l, l]
}

fn blend(a: [u8; 3], b: [u8; 3], t: f32) -> [u8; 3] {
    let mut o = [0u8; 3];
    for c in 0..3 {
        o[c] = (a[c] as f32 * (1.0 - t) + b[c] as f32 * t).round() as u8;
    }
    o
}

/// Vertical colour bar from +limit (top) to −limit (bottom) with its end labels.
pub(crate) fn colour_bar(img: &mut RgbImage, x: u32, y: u32, height: u32, limit: f32) {
    let height = height.max(40);
    let bar_top = y + 12;
    let bar_h = height.saturating_sub(24).max(8);
    for dy in 0..bar_h {
        let v = limit * (1.0 - 2.0 * dy as f32 / (bar_h - 1).max(1) as f32);
        let c = diverging(v, limit);
        for dx in 0..14 {
            if x + dx < img.width() && bar_top + dy < img.height() {
                img.put_pixel(x + dx, bar_top + dy, Rgb(c));
            }
        }
    }
    let label = |v: f32| format!("{v:+.2e}");
    draw_text(img, x as i64, y as i64, &label(limit), 1, [0, 0, 0]);
    draw_text(
        img,
        x as i64,
        (bar_top + bar_h + 2) as i64,
        &label(-limit),
        1,
        [0, 0, 0],
    );
    draw_text(
        img,
        (x + 18) as i64,
        (bar_top + bar_h / 2 - 4) as i64,
        "0",
        1,
        [0, 0, 0],
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlay_colours_the_right_patch() {
        // 4×4 original, identity mapping onto a 4×4 input with a 2×2 grid of 2-pixel patches.
        let original = RgbImage::from_pixel(4, 4, Rgb([128, 128, 128]));
        let id = |x: f32, y: f32| (x, y);
        let img = heatmap_overlay(
            &original,
            &id,
            (4, 4),
            (2, 2),
            &[1.0, 0.0, 0.0, -1.0],
            None,
            "t",
        );
        let s = display_scale(4, 4);
        let top = Title::fit("t", 4 * s + BAR_W - 16).height();
        let top_left = img.get_pixel(0, top).0;
        let bottom_right = img.get_pixel(4 * s - 1, top + 4 * s - 1).0;
        assert!(top_left[0] > top_left[2], "positive is red: {top_left:?}");
        assert!(
            bottom_right[2] > bottom_right[0],
            "negative is blue: {bottom_right:?}"
        );
    }

    /// A title far wider than the picture wraps instead of widening it.
    #[test]
    fn long_titles_keep_the_picture_width() {
        let original = RgbImage::from_pixel(64, 64, Rgb([128, 128, 128]));
        let id = |x: f32, y: f32| (x, y);
        let title = "\"a running shoe next to a boot and a pair of trousers beside a blouse\"\n\
                     score 0.795  exclip  layers 1/1  N = 10";
        let img = heatmap_overlay(&original, &id, (64, 64), (8, 8), &[0.5; 64], None, title);
        let s = display_scale(64, 64);
        assert_eq!(img.width(), 64 * s + BAR_W);
        let top = Title::fit(title, 64 * s + BAR_W - 16).height();
        assert_eq!(img.height(), top + 64 * s + 8);
    }
}

//! Small copies of the original image for reports: scaled for display, and with a box drawn
//! on it, so that a box's token scores are shown next to the region they belong to.

use image::{imageops, Rgb, RgbImage};

/// Longest side of a box thumbnail, in pixels.
const THUMBNAIL_SIDE: u32 = 240;

/// A copy whose long side is at most `max_side` (downscaled smoothly) and whose short side is
/// at least ~128 px (upscaled by whole pixels, so small images stay crisp).
pub(crate) fn display_copy(img: &RgbImage, max_side: u32) -> RgbImage {
    let (w, h) = img.dimensions();
    if w.max(h) > max_side {
        let f = max_side as f32 / w.max(h) as f32;
        let (nw, nh) = (
            ((w as f32 * f).round() as u32).max(1),
            ((h as f32 * f).round() as u32).max(1),
        );
        imageops::resize(img, nw, nh, imageops::FilterType::Triangle)
    } else {
        let s = (128 / w.min(h).max(1))
            .clamp(1, 16)
            .min((max_side / w.max(h)).max(1));
        imageops::resize(img, w * s, h * s, imageops::FilterType::Nearest)
    }
}

/// The image with the box outlined (yellow inside black, visible on any background).
pub fn box_thumbnail(original: &RgbImage, [x0, y0, x1, y1]: [f32; 4]) -> RgbImage {
    let mut img = display_copy(original, THUMBNAIL_SIDE);
    let (w, h) = img.dimensions();
    let f = w as f32 / original.width() as f32;
    let clamp_x = |v: f32| ((v * f).round() as i64).clamp(0, w as i64 - 1);
    let clamp_y = |v: f32| ((v * f).round() as i64).clamp(0, h as i64 - 1);
    let (ax, ay, bx, by) = (clamp_x(x0), clamp_y(y0), clamp_x(x1) - 1, clamp_y(y1) - 1);
    let (bx, by) = (bx.max(ax), by.max(ay));
    for (inset, colour) in [
        (0i64, [0u8, 0, 0]),
        (1, [255, 214, 0]),
        (2, [255, 214, 0]),
        (3, [0, 0, 0]),
    ] {
        let (l, t, r, b) = (ax + inset, ay + inset, bx - inset, by - inset);
        if l > r || t > b {
            break;
        }
        for x in l..=r {
            img.put_pixel(x as u32, t as u32, Rgb(colour));
            img.put_pixel(x as u32, b as u32, Rgb(colour));
        }
        for y in t..=b {
            img.put_pixel(l as u32, y as u32, Rgb(colour));
            img.put_pixel(r as u32, y as u32, Rgb(colour));
        }
    }
    img
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The outline lies on the box's edges, scaled with the copy; pixels inside stay the image's.
    #[test]
    fn box_outline_follows_the_box() {
        let original = RgbImage::from_pixel(64, 32, Rgb([128, 128, 128]));
        let img = box_thumbnail(&original, [8.0, 4.0, 40.0, 28.0]);
        // 64×32 → ×3 (the long side within 240 px) = 192×96; the box spans x 24..120, y 12..84.
        assert_eq!(img.dimensions(), (192, 96));
        assert_eq!(img.get_pixel(24, 50).0, [0, 0, 0], "outer black edge");
        assert_eq!(img.get_pixel(25, 50).0, [255, 214, 0], "yellow");
        assert_eq!(img.get_pixel(119, 50).0, [0, 0, 0], "right edge");
        assert_eq!(img.get_pixel(72, 50).0, [128, 128, 128], "inside untouched");
        assert_eq!(
            img.get_pixel(10, 50).0,
            [128, 128, 128],
            "outside untouched"
        );
    }
}

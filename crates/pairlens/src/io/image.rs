//! Image decoding that keeps Pillow's view of the file.
//!
//! CLIP preprocessing is defined by what Pillow does, and Pillow's behaviour depends on the
//! image *mode* it opens a file as (a palette PNG resizes with NEAREST, an RGBA image resizes
//! premultiplied, a tRNS chunk is "transparency" info rather than an alpha band). So the decoder
//! records that mode next to the pixels instead of flattening everything to RGB.
//!
//! PNG is decoded with the `png` crate without its transformations, and expanded here the way
//! Pillow's unpackers do; JPEG goes through libjpeg-turbo's decoder (mozjpeg), WebP through the
//! `image` crate (its VP8/VP8L decoding matched libwebp exactly on the fixtures).

use std::path::Path;

use crate::{Error, Result};

/// Memory layout of [`DecodedImage::data`]: interleaved 8-bit channels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Greyscale, 1 byte per pixel.
    L,
    /// Greyscale and alpha, 2 bytes per pixel.
    LA,
    /// Red, green, blue, 3 bytes per pixel.
    Rgb,
    /// Red, green, blue and straight (not premultiplied) alpha, 4 bytes per pixel.
    Rgba,
}

impl Mode {
    /// Bytes per pixel.
    pub(crate) fn channels(self) -> usize {
        match self {
            Mode::L => 1,
            Mode::LA => 2,
            Mode::Rgb => 3,
            Mode::Rgba => 4,
        }
    }
}

/// The mode Pillow's `Image.open` reports for the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PilMode {
    /// Bilevel ("1"): 1-bit greyscale PNG. Stored as L with 0/255.
    One,
    /// Greyscale ("L").
    L,
    /// Greyscale with alpha ("LA").
    LA,
    /// Palette ("P"): stored expanded to RGB; Pillow resizes these with NEAREST.
    P,
    /// Truecolour ("RGB").
    Rgb,
    /// Truecolour with alpha ("RGBA").
    Rgba,
}

impl PilMode {
    /// Pillow's name for the mode (`Image.mode`): "1", "L", "LA", "P", "RGB" or "RGBA".
    pub fn as_str(self) -> &'static str {
        match self {
            PilMode::One => "1",
            PilMode::L => "L",
            PilMode::LA => "LA",
            PilMode::P => "P",
            PilMode::Rgb => "RGB",
            PilMode::Rgba => "RGBA",
        }
    }
}

/// A decoded 8-bit image plus what Pillow would know about it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecodedImage {
    /// Width in pixels (non-zero).
    pub width: usize,
    /// Height in pixels (non-zero).
    pub height: usize,
    /// Layout of `data`.
    pub mode: Mode,
    /// Row-major interleaved samples, `width * height * mode.channels()` bytes.
    pub data: Vec<u8>,
    /// The mode Pillow opens the file as, which decides how it is resized and converted.
    pub pil_mode: PilMode,
    /// Per-pixel alpha from a PNG tRNS chunk on an L/RGB/P image: Pillow keeps this in
    /// `info["transparency"]` (used by `convert("RGBA")`), not as a band.
    pub transparency: Option<Vec<u8>>,
}

fn img_err(path: &Path, msg: impl Into<String>) -> Error {
    Error::Image {
        path: path.to_path_buf(),
        msg: msg.into(),
    }
}

impl DecodedImage {
    /// Build from raw samples (tests, synthetic inputs). `data` must match the size and mode.
    pub fn from_raw(width: usize, height: usize, mode: Mode, data: Vec<u8>) -> Result<Self> {
        if width == 0 || height == 0 || data.len() != width * height * mode.channels() {
            return Err(Error::InvalidArgument(format!(
                "image buffer of {} bytes does not fit {width}x{height} {mode:?}",
                data.len()
            )));
        }
        let pil_mode = match mode {
            Mode::L => PilMode::L,
            Mode::LA => PilMode::LA,
            Mode::Rgb => PilMode::Rgb,
            Mode::Rgba => PilMode::Rgba,
        };
        Ok(Self {
            width,
            height,
            mode,
            data,
            pil_mode,
            transparency: None,
        })
    }

    /// Pillow's `Image.convert("RGB")`: grey replicated, alpha (band or tRNS) dropped.
    pub fn to_rgb(&self) -> Vec<u8> {
        let n = self.width * self.height;
        let c = self.mode.channels();
        let mut out = Vec::with_capacity(n * 3);
        for px in self.data.chunks_exact(c) {
            match self.mode {
                Mode::L | Mode::LA => out.extend_from_slice(&[px[0], px[0], px[0]]),
                Mode::Rgb | Mode::Rgba => out.extend_from_slice(&px[..3]),
            }
        }
        out
    }

    /// Alpha of every pixel as Pillow's `convert("RGBA")` sees it (band, tRNS, or opaque).
    fn alpha(&self) -> Option<Vec<u8>> {
        match self.mode {
            Mode::LA => Some(self.data.chunks_exact(2).map(|p| p[1]).collect()),
            Mode::Rgba => Some(self.data.chunks_exact(4).map(|p| p[3]).collect()),
            _ => self.transparency.clone(),
        }
    }

    /// Whether transformers' `convert_to_rgb` composites this image on white
    /// (`"A" in getbands()` or `info["transparency"]` set).
    pub(crate) fn has_alpha(&self) -> bool {
        matches!(self.mode, Mode::LA | Mode::Rgba) || self.transparency.is_some()
    }

    /// transformers' `convert_to_rgb`: images with alpha are alpha-composited onto opaque
    /// white with Pillow's integer `alpha_composite`, others are `convert("RGB")`.
    pub(crate) fn to_rgb_on_white(&self) -> Vec<u8> {
        let mut rgb = self.to_rgb();
        if let Some(alpha) = self.alpha() {
            for (px, &a) in rgb.chunks_exact_mut(3).zip(&alpha) {
                for v in px.iter_mut() {
                    *v = composite_over_white(*v, a);
                }
            }
        }
        rgb
    }
}

/// One channel of Pillow's `ImagingAlphaComposite(white, src)` (7 extra precision bits,
/// rounded divisions by 255 via shifts). With an opaque destination the output alpha is 255.
fn composite_over_white(s: u8, a: u8) -> u8 {
    const PB: u32 = 7;
    if a == 0 {
        return 255;
    }
    let (sa, da, dv) = (a as u32, 255u32, 255u32);
    let blend = da * (255 - sa);
    let outa255 = sa * 255 + blend;
    let coef1 = sa * 255 * 255 * (1 << PB) / outa255;
    let coef2 = 255 * (1 << PB) - coef1;
    let tmp = s as u32 * coef1 + dv * coef2 + (0x80 << PB);
    ((((tmp >> 8) + tmp) >> 8) >> PB) as u8
}

/// The largest image decoded unless a caller sets another limit: 40 megapixels (e.g. 8000 ×
/// 5000), ~160 MB of decoded samples at most.
pub const DEFAULT_MAX_PIXELS: u64 = 40_000_000;

/// Decode a JPEG, PNG or WebP file (format sniffed from its bytes, not its name), of at most
/// [`DEFAULT_MAX_PIXELS`].
pub fn decode_file(path: &Path) -> Result<DecodedImage> {
    decode_file_within(path, DEFAULT_MAX_PIXELS)
}

/// [`decode_file`] for images of at most `max_pixels`. The file's size is bounded by the
/// limit too, so neither reading nor decoding can take memory the limit does not allow.
pub fn decode_file_within(path: &Path, max_pixels: u64) -> Result<DecodedImage> {
    let bytes = read_image_file(path, max_pixels)?;
    decode_bytes_within(&bytes, path, max_pixels)
}

/// The bytes of an image file of at most `max_pixels`, undecoded: refused when it is not a
/// regular file, is empty, or is larger than such an image can be.
pub fn read_image_file(path: &Path, max_pixels: u64) -> Result<Vec<u8>> {
    let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    // A device or a pipe has no size to check, may never end (/dev/zero) or block forever
    // (a FIFO with no writer): only regular files are images.
    if meta.is_dir() {
        return Err(img_err(path, "is a directory, not an image file"));
    }
    if !meta.is_file() {
        return Err(img_err(
            path,
            "not a regular file (a device, pipe or socket): give an image file",
        ));
    }
    let len = meta.len();
    if len == 0 {
        return Err(img_err(path, "the file is empty"));
    }
    // No format stores pixels in more than ~5 bytes each; the floor leaves room for metadata.
    let max_bytes = (64 << 20).max(5 * max_pixels);
    if len > max_bytes {
        return Err(img_err(
            path,
            format!(
                "the file is {} MB, more than an image of at most {} megapixels needs (limit \
                 {} MB)",
                len >> 20,
                max_pixels as f64 / 1e6,
                max_bytes >> 20
            ),
        ));
    }
    // Read at most what the size check allowed, should the file grow meanwhile.
    let mut bytes = Vec::with_capacity(len as usize);
    std::fs::File::open(path)
        .and_then(|f| {
            std::io::Read::read_to_end(&mut std::io::Read::take(f, max_bytes), &mut bytes)
        })
        .map_err(|e| Error::io(path, e))?;
    Ok(bytes)
}

/// Decode in-memory file bytes of an image of at most [`DEFAULT_MAX_PIXELS`]; `path` is only
/// used in error messages.
pub fn decode_bytes(bytes: &[u8], path: &Path) -> Result<DecodedImage> {
    decode_bytes_within(bytes, path, DEFAULT_MAX_PIXELS)
}

/// [`decode_bytes`] for images of at most `max_pixels`: the dimensions are read from the
/// header and checked before anything the size of the image is allocated (a small file can
/// claim a huge image).
pub fn decode_bytes_within(bytes: &[u8], path: &Path, max_pixels: u64) -> Result<DecodedImage> {
    let gate = Gate { path, max_pixels };
    if bytes.is_empty() {
        return Err(img_err(path, "the file is empty"));
    }
    if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        decode_png(bytes, gate)
    } else if bytes.starts_with(&[0xFF, 0xD8]) {
        decode_jpeg(bytes, gate)
    } else if bytes.len() >= 12 && &bytes[..4] == b"RIFF" && &bytes[8..12] == b"WEBP" {
        decode_with_image_crate(bytes, image::ImageFormat::WebP, gate)
    } else {
        Err(img_err(
            path,
            "not a JPEG, PNG or WebP file (unrecognised signature)",
        ))
    }
}

/// Where an image comes from and how large it may be: checked once the header is read.
#[derive(Clone, Copy)]
struct Gate<'a> {
    path: &'a Path,
    max_pixels: u64,
}

impl Gate<'_> {
    fn check(&self, width: usize, height: usize) -> Result<()> {
        if width == 0 || height == 0 {
            return Err(img_err(self.path, "image has zero width or height"));
        }
        if width as u64 * height as u64 > self.max_pixels {
            return Err(Error::ImageTooLarge {
                path: self.path.to_path_buf(),
                width,
                height,
                max_pixels: self.max_pixels,
            });
        }
        Ok(())
    }
}

fn decode_with_image_crate(
    bytes: &[u8],
    format: image::ImageFormat,
    gate: Gate,
) -> Result<DecodedImage> {
    let path = gate.path;
    let failed = |e: image::ImageError| img_err(path, format!("{format:?} decoding failed: {e}"));
    let reader = || image::ImageReader::with_format(std::io::Cursor::new(bytes), format);
    let (w, h) = reader().into_dimensions().map_err(failed)?;
    gate.check(w as usize, h as usize)?;
    let img = reader().decode().map_err(failed)?;
    let (w, h) = (img.width() as usize, img.height() as usize);
    if w == 0 || h == 0 {
        return Err(img_err(path, "image has zero width or height"));
    }
    let (mode, data) = match img {
        image::DynamicImage::ImageLuma8(b) => (Mode::L, b.into_raw()),
        image::DynamicImage::ImageLumaA8(b) => (Mode::LA, b.into_raw()),
        image::DynamicImage::ImageRgb8(b) => (Mode::Rgb, b.into_raw()),
        image::DynamicImage::ImageRgba8(b) => (Mode::Rgba, b.into_raw()),
        other => {
            return Err(img_err(
                path,
                format!("unsupported {format:?} pixel layout {:?}", other.color()),
            ))
        }
    };
    let mut d =
        DecodedImage::from_raw(w, h, mode, data).map_err(|e| img_err(path, e.to_string()))?;
    if format == image::ImageFormat::WebP && mode == Mode::Rgba {
        d.pil_mode = PilMode::Rgba;
    }
    Ok(d)
}

/// JPEG through libjpeg-turbo's decoder (as vendored by mozjpeg), the decoder Pillow links:
/// same IDCT, fancy upsampling and YCbCr conversion, so pixels match Pillow exactly (the pure
/// Rust zune-jpeg differed by up to 4 levels on the fixtures).
fn decode_jpeg(bytes: &[u8], gate: Gate) -> Result<DecodedImage> {
    let path = gate.path;
    // libjpeg pads a truncated scan with grey and only warns; Pillow refuses the file.
    let sos = bytes.windows(2).position(|w| w == [0xFF, 0xDA]);
    let has_eoi = sos.is_some_and(|i| bytes[i..].windows(2).any(|w| w == [0xFF, 0xD9]));
    if !has_eoi {
        return Err(img_err(
            path,
            "truncated JPEG (no scan data or no end-of-image marker)",
        ));
    }
    // libjpeg reports fatal errors by unwinding out of its error handler.
    let decoded = std::panic::catch_unwind(|| -> Result<(usize, usize, Mode, Vec<u8>)> {
        let failed = |e: std::io::Error| img_err(path, format!("JPEG decoding failed: {e}"));
        let d = mozjpeg::Decompress::new_mem(bytes).map_err(failed)?;
        let (w, h) = (d.width(), d.height());
        gate.check(w, h)?;
        let (mode, data) =
            match d.image().map_err(failed)? {
                mozjpeg::decompress::Format::RGB(mut s) => {
                    let data: Vec<u8> = s.read_scanlines().map_err(failed)?;
                    s.finish().map_err(failed)?;
                    (Mode::Rgb, data)
                }
                mozjpeg::decompress::Format::Gray(mut s) => {
                    let data: Vec<u8> = s.read_scanlines().map_err(failed)?;
                    s.finish().map_err(failed)?;
                    (Mode::L, data)
                }
                mozjpeg::decompress::Format::CMYK(_) => return Err(img_err(
                    path,
                    "JPEG decoding failed: CMYK/YCCK JPEG is not supported (Pillow opens it as \
                     mode CMYK)",
                )),
            };
        Ok((w, h, mode, data))
    });
    let (w, h, mode, data) = match decoded {
        Ok(result) => result?,
        Err(panic) => {
            let msg = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "libjpeg error".into());
            return Err(img_err(path, format!("JPEG decoding failed: {msg}")));
        }
    };
    DecodedImage::from_raw(w, h, mode, data).map_err(|e| img_err(path, e.to_string()))
}

/// Unpack `bits`-per-sample big-endian packed samples of one row (PNG sub-byte layouts).
fn unpack_row(row: &[u8], bits: u8, count: usize, out: &mut Vec<u16>) {
    match bits {
        8 => out.extend(row[..count].iter().map(|&v| v as u16)),
        16 => out.extend(
            row[..count * 2]
                .chunks_exact(2)
                .map(|b| u16::from_be_bytes([b[0], b[1]])),
        ),
        _ => {
            let per_byte = 8 / bits as usize;
            let mask = (1u16 << bits) - 1;
            for i in 0..count {
                let byte = row[i / per_byte] as u16;
                let shift = 8 - bits as usize * (i % per_byte + 1);
                out.push((byte >> shift) & mask);
            }
        }
    }
}

fn decode_png(bytes: &[u8], gate: Gate) -> Result<DecodedImage> {
    let path = gate.path;
    use png::{BitDepth, ColorType, Transformations};
    let err = |e: png::DecodingError| img_err(path, format!("PNG decoding failed: {e}"));
    let mut dec = png::Decoder::new(std::io::Cursor::new(bytes));
    dec.set_transformations(Transformations::IDENTITY);
    let mut reader = dec.read_info().map_err(err)?;
    let (w, h, color, depth, palette, trns) = {
        let info = reader.info();
        (
            info.width as usize,
            info.height as usize,
            info.color_type,
            info.bit_depth,
            info.palette.as_ref().map(|p| p.to_vec()),
            info.trns.as_ref().map(|t| t.to_vec()),
        )
    };
    gate.check(w, h)?;
    let bits = depth as u8;
    if color == ColorType::Grayscale && depth == BitDepth::Sixteen {
        // Pillow opens this as "I;16" and CLIP's `convert("RGB")` clips every value above 255
        // (both transformers and open_clip), so the model would see a white image, not the
        // picture: refused rather than matched.
        return Err(img_err(
            path,
            "16-bit greyscale PNG is not supported: Pillow opens it as mode I;16, whose RGB \
             conversion in CLIP preprocessing turns every value above 255 white; convert it to \
             8-bit first",
        ));
    }
    let size = reader
        .output_buffer_size()
        .ok_or_else(|| img_err(path, "PNG too large"))?;
    let mut buf = vec![0u8; size];
    let frame = reader.next_frame(&mut buf).map_err(err)?;
    let line = frame.line_size;
    let samples_per_px = match color {
        ColorType::Grayscale | ColorType::Indexed => 1,
        ColorType::GrayscaleAlpha => 2,
        ColorType::Rgb => 3,
        ColorType::Rgba => 4,
    };
    let mut s: Vec<u16> = Vec::with_capacity(w * h * samples_per_px);
    for y in 0..h {
        unpack_row(
            &buf[y * line..(y + 1) * line],
            bits,
            w * samples_per_px,
            &mut s,
        );
    }
    // Pillow keeps the high byte of 16-bit samples ("RGB;16B" etc.).
    let to8 = |v: u16| if bits == 16 { (v >> 8) as u8 } else { v as u8 };
    // tRNS on grey/RGB: Pillow compares the 16-bit tRNS value with the *8-bit unpacked*
    // pixel, so we do the same (including its quirks for sub-8-bit and 16-bit images).
    // (The png crate keeps only the low byte of each tRNS value for depths below 16.)
    let trns_vals = |n: usize| -> Option<Vec<u16>> {
        let t = trns.as_ref()?;
        if t.len() == n {
            Some(t.iter().map(|&b| b as u16).collect())
        } else if t.len() >= 2 * n {
            Some(
                (0..n)
                    .map(|i| u16::from_be_bytes([t[2 * i], t[2 * i + 1]]))
                    .collect(),
            )
        } else {
            None
        }
    };
    let n = w * h;
    let d = match color {
        ColorType::Grayscale => {
            let scale: u16 = match bits {
                1 => 255,
                2 => 85,
                4 => 17,
                _ => 1,
            };
            let data: Vec<u8> = s
                .iter()
                .map(|&v| if bits < 8 { (v * scale) as u8 } else { to8(v) })
                .collect();
            let transparency = trns_vals(1).map(|t| {
                data.iter()
                    .map(|&v| if v as u16 == t[0] { 0 } else { 255 })
                    .collect()
            });
            let pil_mode = if bits == 1 { PilMode::One } else { PilMode::L };
            DecodedImage {
                width: w,
                height: h,
                mode: Mode::L,
                data,
                pil_mode,
                transparency,
            }
        }
        // Pillow opens 16-bit grey + alpha as RGBA (unpacker "LA;16B"), grey replicated.
        ColorType::GrayscaleAlpha if bits == 16 => DecodedImage {
            width: w,
            height: h,
            mode: Mode::Rgba,
            data: s
                .chunks_exact(2)
                .flat_map(|p| {
                    let (l, a) = (to8(p[0]), to8(p[1]));
                    [l, l, l, a]
                })
                .collect(),
            pil_mode: PilMode::Rgba,
            transparency: None,
        },
        ColorType::GrayscaleAlpha => DecodedImage {
            width: w,
            height: h,
            mode: Mode::LA,
            data: s.iter().map(|&v| to8(v)).collect(),
            pil_mode: PilMode::LA,
            transparency: None,
        },
        ColorType::Rgb => {
            let data: Vec<u8> = s.iter().map(|&v| to8(v)).collect();
            let transparency = trns_vals(3).map(|t| {
                data.chunks_exact(3)
                    .map(|p| {
                        if p.iter().zip(&t).all(|(&v, &k)| v as u16 == k) {
                            0
                        } else {
                            255
                        }
                    })
                    .collect()
            });
            DecodedImage {
                width: w,
                height: h,
                mode: Mode::Rgb,
                data,
                pil_mode: PilMode::Rgb,
                transparency,
            }
        }
        ColorType::Rgba => DecodedImage {
            width: w,
            height: h,
            mode: Mode::Rgba,
            data: s.iter().map(|&v| to8(v)).collect(),
            pil_mode: PilMode::Rgba,
            transparency: None,
        },
        ColorType::Indexed => {
            let pal = palette.ok_or_else(|| img_err(path, "palette PNG without a PLTE chunk"))?;
            let mut data = Vec::with_capacity(n * 3);
            for &i in &s {
                let i = i as usize;
                // Entries past the palette's end read as black, as in Pillow's padded palette.
                let rgb = pal.get(3 * i..3 * i + 3).unwrap_or(&[0, 0, 0]);
                data.extend_from_slice(rgb);
            }
            let transparency = trns.as_ref().map(|t| {
                s.iter()
                    .map(|&i| t.get(i as usize).copied().unwrap_or(255))
                    .collect()
            });
            DecodedImage {
                width: w,
                height: h,
                mode: Mode::Rgb,
                data,
                pil_mode: PilMode::P,
                transparency,
            }
        }
    };
    if d.data.len() != n * d.mode.channels() {
        return Err(img_err(path, "PNG pixel data has the wrong size"));
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Vec<u8> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/images");
        std::fs::read(dir.join(name)).unwrap()
    }

    /// A PNG whose header claims `w × h` (the IHDR rewritten, its CRC fixed; the pixel data
    /// is the original's, far too short).
    fn png_claiming(w: u32, h: u32) -> Vec<u8> {
        let mut png = fixture("rgb_37x23.png");
        png[16..20].copy_from_slice(&w.to_be_bytes());
        png[20..24].copy_from_slice(&h.to_be_bytes());
        let mut crc = flate2::Crc::new();
        crc.update(&png[12..29]); // chunk type and data
        png[29..33].copy_from_slice(&crc.sum().to_be_bytes());
        png
    }

    /// A JPEG whose frame header claims `w × h`.
    fn jpeg_claiming(w: u16, h: u16) -> Vec<u8> {
        let mut jpeg = fixture("photo_45x45.jpg");
        let sof = jpeg
            .windows(2)
            .position(|m| m[0] == 0xFF && (0xC0..=0xC2).contains(&m[1]))
            .expect("a frame header");
        jpeg[sof + 5..sof + 7].copy_from_slice(&h.to_be_bytes());
        jpeg[sof + 7..sof + 9].copy_from_slice(&w.to_be_bytes());
        jpeg
    }

    /// A small file claiming a huge image is refused from its header, in every format, before
    /// anything its size is allocated; within the limit the same gate lets images through.
    #[test]
    fn the_size_gate_reads_headers_first() {
        let path = Path::new("claim");
        let too_large = |r: Result<DecodedImage>| match r {
            Err(Error::ImageTooLarge { width, height, .. }) => (width, height),
            other => panic!("expected ImageTooLarge, got {other:?}"),
        };
        let png = png_claiming(20_000, 20_000);
        assert_eq!(too_large(decode_bytes(&png, path)), (20_000, 20_000));
        let jpeg = jpeg_claiming(65_000, 65_000);
        assert_eq!(too_large(decode_bytes(&jpeg, path)), (65_000, 65_000));
        let webp = fixture("lossless_24x30.webp");
        assert_eq!(too_large(decode_bytes_within(&webp, path, 719)), (24, 30));
        assert!(decode_bytes_within(&webp, path, 720).is_ok());
        let e = decode_bytes_within(&fixture("rgb_37x23.png"), path, 100).unwrap_err();
        assert!(
            e.to_string()
                .contains("37×23 pixels, over the limit of 0.0001 megapixels"),
            "{e}"
        );
        // A file far larger than any image within the limit is not even read.
        let big = std::env::temp_dir().join(format!("pairlens-big-{}.png", std::process::id()));
        std::fs::File::create(&big)
            .unwrap()
            .set_len(80 << 20)
            .unwrap(); // sparse
        let e = decode_file_within(&big, 1000).unwrap_err().to_string();
        assert!(e.contains("the file is 80 MB"), "{e}");
        std::fs::remove_file(&big).unwrap();
    }

    #[test]
    fn composite_matches_pillow_formula_edges() {
        assert_eq!(composite_over_white(0, 255), 0);
        assert_eq!(composite_over_white(200, 255), 200);
        assert_eq!(composite_over_white(0, 0), 255);
        // Half transparent black on white is mid grey.
        let v = composite_over_white(0, 128);
        assert!((126..=128).contains(&v), "{v}");
    }

    #[test]
    fn unpack_sub_byte_rows() {
        let mut out = Vec::new();
        unpack_row(&[0b1101_0010], 2, 4, &mut out);
        assert_eq!(out, vec![3, 1, 0, 2]);
        out.clear();
        unpack_row(&[0b1010_0000], 1, 3, &mut out);
        assert_eq!(out, vec![1, 0, 1]);
    }

    /// A 16-bit PNG of `samples` in the given colour type, written with the png crate.
    fn png16(w: u32, h: u32, color: png::ColorType, samples: &[u16]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut enc = png::Encoder::new(&mut out, w, h);
        enc.set_color(color);
        enc.set_depth(png::BitDepth::Sixteen);
        let bytes: Vec<u8> = samples.iter().flat_map(|v| v.to_be_bytes()).collect();
        let mut writer = enc.write_header().unwrap();
        writer.write_image_data(&bytes).unwrap();
        writer.finish().unwrap();
        out
    }

    /// 16-bit greyscale is refused with the reason (Pillow's I;16 turns white through CLIP's
    /// RGB conversion); the other 16-bit layouts keep the high byte, as Pillow does (pixel
    /// parity with Pillow: tests/preprocess_parity.rs).
    #[test]
    fn sixteen_bit_png_layouts() {
        let path = Path::new("deep.png");
        let grey = png16(2, 1, png::ColorType::Grayscale, &[0x1234, 0xffff]);
        let e = decode_bytes(&grey, path).unwrap_err().to_string();
        assert!(
            e.contains("deep.png") && e.contains("16-bit greyscale") && e.contains("8-bit"),
            "{e}"
        );
        let la = png16(
            2,
            1,
            png::ColorType::GrayscaleAlpha,
            &[0x1234, 0xff00, 0xabcd, 0x0080],
        );
        let d = decode_bytes(&la, path).unwrap();
        assert_eq!((d.mode, d.pil_mode), (Mode::Rgba, PilMode::Rgba));
        assert_eq!(d.data, [0x12, 0x12, 0x12, 0xff, 0xab, 0xab, 0xab, 0x00]);
        let rgb = png16(1, 1, png::ColorType::Rgb, &[0x0102, 0x0304, 0xfffe]);
        let d = decode_bytes(&rgb, path).unwrap();
        assert_eq!(
            (d.pil_mode, d.data.as_slice()),
            (PilMode::Rgb, &[1u8, 3, 255][..])
        );
    }

    #[test]
    fn garbage_is_a_clear_error() {
        let e = decode_bytes(b"hello world", Path::new("x.png")).unwrap_err();
        assert!(
            e.to_string().contains("x.png") && e.to_string().contains("signature"),
            "{e}"
        );
    }
}

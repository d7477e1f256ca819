//! CLIP image preprocessing, matching transformers' `CLIPImageProcessorPil` and open_clip's
//! `image_transform` (eval) to the last bit.
//!
//! The two pipelines differ in ways that change pixels: HF converts to RGB *first* (compositing
//! transparency onto white), open_clip resizes the image in the mode Pillow opened it in
//! (palette images with NEAREST, RGBA premultiplied) and converts with `convert("RGB")` only
//! after cropping; HF crops with floor margins, torchvision with round-half-even; HF rescales
//! in f64 (`x * 1/255`), torchvision divides in f32 (`x / 255`). Each of those is a field here.

use std::path::Path;

use candle_core::{Device, Tensor};
use serde_json::Value;

use crate::io::image::{decode_file, DecodedImage, Mode, PilMode, DEFAULT_MAX_PIXELS};
use crate::io::resample::{self, Filter};
use crate::{Error, Result};

/// OpenAI CLIP normalisation constants (HF `OPENAI_CLIP_MEAN/STD`, open_clip `OPENAI_DATASET_*`),
/// written with the upstream decimals.
#[allow(clippy::excessive_precision)]
const OPENAI_CLIP_MEAN: [f32; 3] = [0.48145466, 0.4578275, 0.40821073];
#[allow(clippy::excessive_precision)]
const OPENAI_CLIP_STD: [f32; 3] = [0.26862954, 0.26130258, 0.27577711];

/// How the resize step sizes its output.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ResizeMode {
    /// Short side to this size, long side `int(size * long / short)` (HF and torchvision).
    ShortestEdge(usize),
    /// Resize to exactly this size, ignoring the aspect ratio.
    Exact {
        /// Output height in pixels.
        height: usize,
        /// Output width in pixels.
        width: usize,
    },
    /// open_clip's `ResizeKeepRatio` for a non-square target with resize_mode 'shortest':
    /// scale by `min(h / height, w / width)`, each side rounded half-to-even.
    KeepRatio {
        /// Target height in pixels.
        height: usize,
        /// Target width in pixels.
        width: usize,
    },
    /// No resize (HF `do_resize: false`).
    None,
}

/// The resize filter as the configs name it (HF `resample`, open_clip `interpolation`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Interpolation {
    /// Pillow BICUBIC (3).
    Bicubic,
    /// Pillow BILINEAR (2).
    Bilinear,
    /// Pillow NEAREST (0).
    Nearest,
}

impl Interpolation {
    fn filter(self) -> Filter {
        match self {
            Interpolation::Bicubic => Filter::Bicubic,
            Interpolation::Bilinear => Filter::Bilinear,
            Interpolation::Nearest => Filter::Nearest,
        }
    }
}

/// How the centre crop places its window when the margin is odd.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum CropRounding {
    /// HF: margin `(size - crop) // 2`; a too-small image is zero-padded, `ceil` before.
    Floor,
    /// torchvision: margin `int(round((size - crop) / 2))`; padding is `floor` before.
    RoundHalfEven,
}

/// How the image becomes 3-channel RGB.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RgbConversion {
    /// transformers' `convert_to_rgb`: anything with alpha or tRNS is composited on white.
    CompositeOnWhite,
    /// Pillow `convert("RGB")`: alpha dropped, grey replicated (open_clip).
    PilConvert,
    /// No conversion (HF `do_convert_rgb: false`): only images Pillow opens as RGB work.
    Never,
}

/// How 8-bit values become floats before normalisation.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum PixelScaling {
    /// HF `rescale`: `f32(f64(x) * factor)`.
    MulF64(f64),
    /// torchvision `to_tensor`: `f32(x) / divisor` in f32.
    DivF32(f32),
    /// HF `do_rescale: false`: `f32(x)`.
    None,
}

/// A checkpoint's image preprocessing: decoded image → normalised `[3, H, W]` f32 input, with
/// every step that differs between HF and open_clip made explicit.
#[derive(Clone, Debug, PartialEq)]
pub struct PreprocessConfig {
    /// The resize step.
    pub(crate) resize: ResizeMode,
    /// The resize filter (palette and bilevel images always use NEAREST, as in Pillow).
    interpolation: Interpolation,
    /// Center crop (height, width).
    pub(crate) crop: Option<(usize, usize)>,
    /// Where the crop window starts when the margin is odd.
    crop_rounding: CropRounding,
    /// Per-channel (R, G, B) mean subtracted after scaling.
    pub(crate) mean: [f32; 3],
    /// Per-channel (R, G, B) divisor applied after the mean is subtracted.
    pub(crate) std: [f32; 3],
    /// HF: true (convert, then resize); open_clip: false (resize and crop, then convert).
    convert_rgb_first: bool,
    /// How the image becomes RGB.
    rgb_conversion: RgbConversion,
    /// How 8-bit values become floats.
    pub(crate) scaling: PixelScaling,
}

/// Where things went: maps original-image pixels to network-input pixels.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Geometry {
    /// (w, h) of the decoded image.
    pub original: (usize, usize),
    /// (w, h) after resizing.
    resized: (usize, usize),
    /// (x, y) of the crop window's top-left corner in the resized image.
    crop_offset: (usize, usize),
    /// (x, y) at which the resized image starts in the input when the crop is larger than the
    /// image and is zero-padded (0 otherwise).
    pad_offset: (usize, usize),
    /// (w, h) of the network input.
    pub input: (usize, usize),
}

impl Geometry {
    /// Map a point in original-image pixel coordinates (continuous: pixel `i` spans `[i, i+1)`)
    /// to network-input pixel coordinates, following Pillow's resize mapping (edges to edges).
    pub fn to_input(&self, x: f32, y: f32) -> (f32, f32) {
        let sx = self.resized.0 as f32 / self.original.0 as f32;
        let sy = self.resized.1 as f32 / self.original.1 as f32;
        (
            x * sx - self.crop_offset.0 as f32 + self.pad_offset.0 as f32,
            y * sy - self.crop_offset.1 as f32 + self.pad_offset.1 as f32,
        )
    }

    /// A box `(x0, y0, x1, y1)` of original-image pixels in network-input pixels.
    pub fn box_to_input(&self, b: [f32; 4]) -> (f32, f32, f32, f32) {
        let (x0, y0) = self.to_input(b[0], b[1]);
        let (x1, y1) = self.to_input(b[2], b[3]);
        (x0, y0, x1, y1)
    }

    /// A box a user drew on the original image, clipped to the image and mapped to
    /// network-input pixels; an error says why a box cannot be used (not finite, empty, outside
    /// the image).
    pub(crate) fn user_box_to_input(&self, b: [f32; 4]) -> Result<(f32, f32, f32, f32)> {
        let [x0, y0, x1, y1] = b;
        let bad = |msg: String| Err(Error::InvalidArgument(format!("box {b:?} {msg}")));
        if !b.iter().all(|v| v.is_finite()) {
            return bad("has coordinates that are not finite numbers".into());
        }
        if !(x0 < x1 && y0 < y1) {
            return bad("is empty: expected x0 < x1 and y0 < y1".into());
        }
        let (w, h) = (self.original.0 as f32, self.original.1 as f32);
        let clipped = [x0.max(0.0), y0.max(0.0), x1.min(w), y1.min(h)];
        if !(clipped[0] < clipped[2] && clipped[1] < clipped[3]) {
            return bad(format!("lies outside the image ({w}×{h} pixels)"));
        }
        Ok(self.box_to_input(clipped))
    }

    /// (w, h) of the image after resizing, before the crop.
    pub fn resized(&self) -> (usize, usize) {
        self.resized
    }

    /// (x, y) of the crop window's top-left corner in the resized image.
    pub fn crop_offset(&self) -> (usize, usize) {
        self.crop_offset
    }

    /// Whether the crop cuts part of the resized image away, so that the model does not see the
    /// whole image: boxes and heatmaps only cover [`Geometry::visible`].
    pub fn crops(&self) -> bool {
        self.resized.0 > self.input.0 || self.resized.1 > self.input.1
    }

    /// The part of the original image the network input shows, `[x0, y0, x1, y1]` in original
    /// pixels.
    pub fn visible(&self) -> [f32; 4] {
        let (x0, y0) = self.to_original(0.0, 0.0);
        let (x1, y1) = self.to_original(self.input.0 as f32, self.input.1 as f32);
        let (w, h) = (self.original.0 as f32, self.original.1 as f32);
        [x0.max(0.0), y0.max(0.0), x1.min(w), y1.min(h)]
    }

    /// Inverse of [`Geometry::to_input`].
    #[allow(clippy::wrong_self_convention)] // takes `&self` like `to_input`
    pub fn to_original(&self, x: f32, y: f32) -> (f32, f32) {
        let sx = self.resized.0 as f32 / self.original.0 as f32;
        let sy = self.resized.1 as f32 / self.original.1 as f32;
        (
            (x + self.crop_offset.0 as f32 - self.pad_offset.0 as f32) / sx,
            (y + self.crop_offset.1 as f32 - self.pad_offset.1 as f32) / sy,
        )
    }
}

/// A network input and where its pixels came from.
#[derive(Clone, Debug)]
pub struct Preprocessed {
    /// [3, H, W] f32, normalised.
    pub pixels: Tensor,
    /// The mapping between original-image and input pixels.
    pub geometry: Geometry,
}

/// The 8-bit RGB image right before float conversion (after resize, crop and RGB conversion).
#[derive(Clone, Debug, PartialEq)]
pub struct CroppedRgb {
    /// Width in pixels (the network input's).
    pub width: usize,
    /// Height in pixels (the network input's).
    pub height: usize,
    /// Row-major interleaved RGB.
    pub data: Vec<u8>,
    /// The mapping between original-image and input pixels.
    geometry: Geometry,
}

fn bad(path: &Path, msg: impl Into<String>) -> Error {
    Error::bad_config(path, msg)
}

fn get_bool(
    obj: &serde_json::Map<String, Value>,
    key: &str,
    default: bool,
    path: &Path,
) -> Result<bool> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(default),
        Some(Value::Bool(b)) => Ok(*b),
        Some(v) => Err(bad(path, format!("`{key}` must be true or false, got {v}"))),
    }
}

fn as_size(v: &Value, key: &str, path: &Path) -> Result<usize> {
    v.as_u64()
        .filter(|&n| n > 0)
        .map(|n| n as usize)
        .ok_or_else(|| bad(path, format!("`{key}` must be a positive integer, got {v}")))
}

/// What a one-entry list means for a per-channel field. The two reference pipelines disagree:
/// transformers' `CLIPImageProcessorPil` (`normalize`) refuses a list whose length is not the
/// channel count and broadcasts only a bare number, while open_clip hands the list to
/// torchvision's `Normalize`, whose tensor arithmetic broadcasts a single entry (both checked
/// with transformers 5.25 and open_clip 3.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum OneEntryList {
    /// An error naming the file and the field (HF).
    Reject,
    /// The entry for every channel (open_clip).
    Broadcast,
}

fn get_triple(
    obj: &serde_json::Map<String, Value>,
    key: &str,
    default: [f32; 3],
    one_entry: OneEntryList,
    path: &Path,
) -> Result<[f32; 3]> {
    let err = |v: &Value| {
        bad(
            path,
            format!("`{key}` must be a number or a list of 3 numbers, got {v}"),
        )
    };
    match obj.get(key) {
        None | Some(Value::Null) => Ok(default),
        Some(Value::Number(n)) => {
            let x = n.as_f64().ok_or_else(|| err(&obj[key]))? as f32;
            Ok([x; 3])
        }
        Some(v @ Value::Array(a)) => {
            if a.len() == 1 {
                let x = a[0].as_f64().ok_or_else(|| err(v))? as f32;
                return match one_entry {
                    OneEntryList::Broadcast => Ok([x; 3]),
                    OneEntryList::Reject => Err(bad(
                        path,
                        format!(
                            "`{key}` {v} has 1 entry but the model has 3 channels: give one per \
                             channel (R, G, B), or a bare number ({}) for all three, as \
                             transformers' CLIPImageProcessorPil requires",
                            a[0]
                        ),
                    )),
                };
            }
            if a.len() != 3 {
                return Err(err(v));
            }
            let mut out = [0f32; 3];
            for (o, x) in out.iter_mut().zip(a) {
                *o = x.as_f64().ok_or_else(|| err(v))? as f32;
            }
            Ok(out)
        }
        Some(v) => Err(err(v)),
    }
}

/// HF size dicts: an int, `{"shortest_edge"}`, or `{"height", "width"}`.
fn hf_size(v: &Value, key: &str, default_to_square: bool, path: &Path) -> Result<ResizeMode> {
    if v.is_u64() {
        let s = as_size(v, key, path)?;
        return Ok(if default_to_square {
            ResizeMode::Exact {
                height: s,
                width: s,
            }
        } else {
            ResizeMode::ShortestEdge(s)
        });
    }
    let obj = v.as_object().ok_or_else(|| {
        bad(
            path,
            format!("`{key}` must be an integer or an object, got {v}"),
        )
    })?;
    let mut keys: Vec<&str> = obj
        .iter()
        .filter(|(_, x)| !x.is_null())
        .map(|(k, _)| k.as_str())
        .collect();
    keys.sort_unstable();
    match keys.as_slice() {
        ["shortest_edge"] => Ok(ResizeMode::ShortestEdge(as_size(&obj["shortest_edge"], key, path)?)),
        ["height", "width"] => Ok(ResizeMode::Exact {
            height: as_size(&obj["height"], key, path)?,
            width: as_size(&obj["width"], key, path)?,
        }),
        _ => Err(bad(
            path,
            format!("unsupported `{key}` {v}: expected {{\"shortest_edge\"}} or {{\"height\", \"width\"}}"),
        )),
    }
}

impl PreprocessConfig {
    /// HF `preprocessor_config.json` (CLIPImageProcessor fields). Unknown keys are ignored;
    /// unsupported values are `Error::BadConfig`.
    pub fn from_hf_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let v: Value =
            serde_json::from_str(&text).map_err(|e| bad(path, format!("invalid JSON: {e}")))?;
        Self::from_hf_json(&v, path)
    }

    /// As [`PreprocessConfig::from_hf_file`], from parsed JSON.
    pub fn from_hf_json(v: &Value, path: &Path) -> Result<Self> {
        Self::from_hf_json_over(v, path, Self::hf_default((224, 224)))
    }

    /// SigLIP's `preprocessor_config.json` (`SiglipImageProcessorPil` fields: CLIP's, with other
    /// defaults and no centre crop), for a model of input `image_size`.
    pub fn siglip_from_hf_file(path: &Path, image_size: (usize, usize)) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let v: Value =
            serde_json::from_str(&text).map_err(|e| bad(path, format!("invalid JSON: {e}")))?;
        let defaults = Self::siglip_default(image_size);
        let cfg = Self::from_hf_json_over(&v, path, defaults)?;
        if cfg.crop.is_some() {
            return Err(bad(path, "SigLIP's image processor has no centre crop"));
        }
        Ok(cfg)
    }

    /// transformers' SigLIP defaults: resize to the input size exactly (no aspect ratio kept,
    /// no crop), bicubic, mean = std = 0.5.
    pub fn siglip_default(image_size: (usize, usize)) -> Self {
        let (height, width) = image_size;
        PreprocessConfig {
            resize: ResizeMode::Exact { height, width },
            crop: None,
            mean: [0.5; 3],
            std: [0.5; 3],
            ..Self::hf_default(image_size)
        }
    }

    /// `v`'s keys laid over `defaults` (a key that is absent keeps the default; a centre crop
    /// is on by default only where `defaults` crops).
    fn from_hf_json_over(v: &Value, path: &Path, defaults: Self) -> Result<Self> {
        let obj = v
            .as_object()
            .ok_or_else(|| bad(path, "expected a JSON object"))?;
        let mut cfg = defaults;
        let crops_by_default = cfg.crop.is_some();
        if !get_bool(obj, "do_resize", true, path)? {
            cfg.resize = ResizeMode::None;
        } else if let Some(s) = obj.get("size").filter(|s| !s.is_null()) {
            cfg.resize = hf_size(s, "size", false, path)?;
        }
        if let Some(r) = obj.get("resample").filter(|s| !s.is_null()) {
            cfg.interpolation = match r.as_u64() {
                Some(0) => Interpolation::Nearest,
                Some(2) => Interpolation::Bilinear,
                Some(3) => Interpolation::Bicubic,
                _ => {
                    return Err(bad(
                        path,
                        format!(
                        "unsupported `resample` {r} (supported: 0 nearest, 2 bilinear, 3 bicubic)"
                    ),
                    ))
                }
            };
        }
        if !get_bool(obj, "do_center_crop", crops_by_default, path)? {
            cfg.crop = None;
        } else if let Some(s) = obj.get("crop_size").filter(|s| !s.is_null()) {
            cfg.crop = match hf_size(s, "crop_size", true, path)? {
                ResizeMode::Exact { height, width } => Some((height, width)),
                _ => {
                    return Err(bad(
                        path,
                        format!("`crop_size` {s} must give height and width"),
                    ))
                }
            };
        }
        if get_bool(obj, "do_rescale", true, path)? {
            let f = match obj.get("rescale_factor") {
                None | Some(Value::Null) => 1.0 / 255.0,
                Some(x) => x.as_f64().ok_or_else(|| {
                    bad(path, format!("`rescale_factor` must be a number, got {x}"))
                })?,
            };
            cfg.scaling = PixelScaling::MulF64(f);
        } else {
            cfg.scaling = PixelScaling::None;
        }
        if get_bool(obj, "do_normalize", true, path)? {
            let reject = OneEntryList::Reject;
            cfg.mean = get_triple(obj, "image_mean", cfg.mean, reject, path)?;
            cfg.std = get_triple(obj, "image_std", cfg.std, reject, path)?;
            if cfg.std.contains(&0.0) {
                return Err(bad(path, "`image_std` contains 0"));
            }
        } else {
            // (x - 0) / 1 is exact, so this is the identity.
            cfg.mean = [0.0; 3];
            cfg.std = [1.0; 3];
        }
        if !get_bool(obj, "do_convert_rgb", true, path)? {
            cfg.rgb_conversion = RgbConversion::Never;
        }
        if get_bool(obj, "do_pad", false, path)? {
            return Err(bad(
                path,
                "`do_pad: true` is not supported for CLIP preprocessing",
            ));
        }
        Ok(cfg)
    }

    /// HF defaults when `preprocessor_config.json` is absent: shortest edge and crop both the
    /// model's image size (for a non-square size the shortest edge is the larger side, so the
    /// crop never needs padding), bicubic, OpenAI mean/std.
    pub fn hf_default(image_size: (usize, usize)) -> Self {
        let (h, w) = image_size;
        PreprocessConfig {
            resize: ResizeMode::ShortestEdge(h.max(w)),
            interpolation: Interpolation::Bicubic,
            crop: Some((h, w)),
            crop_rounding: CropRounding::Floor,
            mean: OPENAI_CLIP_MEAN,
            std: OPENAI_CLIP_STD,
            convert_rgb_first: true,
            rgb_conversion: RgbConversion::CompositeOnWhite,
            scaling: PixelScaling::MulF64(1.0 / 255.0),
        }
    }

    /// open_clip's eval `image_transform` from a `preprocess_cfg` object (keys `size`, `mode`,
    /// `mean`, `std`, `interpolation`, `resize_mode`, `fill_color`; missing ones take
    /// open_clip's defaults) and the model's `image_size` (h, w), used when `size` is absent.
    pub fn from_open_clip(
        cfg: &Value,
        image_size: (usize, usize),
        path_for_errors: &Path,
    ) -> Result<Self> {
        let path = path_for_errors;
        let empty = serde_json::Map::new();
        let obj = match cfg {
            Value::Null => &empty,
            Value::Object(o) => o,
            v => {
                return Err(bad(
                    path,
                    format!("`preprocess_cfg` must be an object, got {v}"),
                ))
            }
        };
        let (h, w) = match obj.get("size").filter(|s| !s.is_null()) {
            None => image_size,
            Some(v) if v.is_u64() => {
                let s = as_size(v, "size", path)?;
                (s, s)
            }
            Some(Value::Array(a)) if a.len() == 2 => {
                (as_size(&a[0], "size", path)?, as_size(&a[1], "size", path)?)
            }
            Some(v) => {
                return Err(bad(
                    path,
                    format!("`size` must be an integer or [h, w], got {v}"),
                ))
            }
        };
        if h == 0 || w == 0 {
            return Err(bad(path, format!("image size {h}x{w} is empty")));
        }
        if let Some(m) = obj.get("mode").filter(|s| !s.is_null()) {
            if m.as_str() != Some("RGB") {
                return Err(bad(
                    path,
                    format!("unsupported preprocess `mode` {m} (only \"RGB\")"),
                ));
            }
        }
        let interpolation =
            match obj
                .get("interpolation")
                .and_then(|v| if v.is_null() { None } else { Some(v) })
            {
                None => Interpolation::Bicubic,
                Some(v) => match v.as_str() {
                    // 'random' only matters in training; eval uses bicubic.
                    Some("bicubic") | Some("random") => Interpolation::Bicubic,
                    Some("bilinear") => Interpolation::Bilinear,
                    _ => return Err(bad(path, format!("unsupported `interpolation` {v}"))),
                },
            };
        let resize_mode = match obj.get("resize_mode").filter(|s| !s.is_null()) {
            None => "shortest",
            Some(v) => v
                .as_str()
                .ok_or_else(|| bad(path, format!("`resize_mode` must be a string, got {v}")))?,
        };
        let (resize, crop, interpolation) = match resize_mode {
            "shortest" if h == w => (ResizeMode::ShortestEdge(h), Some((h, w)), interpolation),
            // open_clip builds `ResizeKeepRatio(image_size)` here, whose default is bicubic:
            // the configured interpolation is ignored.
            "shortest" => (
                ResizeMode::KeepRatio {
                    height: h,
                    width: w,
                },
                Some((h, w)),
                Interpolation::Bicubic,
            ),
            "squash" => (
                ResizeMode::Exact {
                    height: h,
                    width: w,
                },
                None,
                interpolation,
            ),
            "longest" => return Err(bad(
                path,
                "open_clip resize_mode 'longest' (resize + pad with fill_color) is not supported",
            )),
            other => {
                return Err(bad(
                    path,
                    format!("unknown open_clip resize_mode {other:?}"),
                ))
            }
        };
        let broadcast = OneEntryList::Broadcast;
        let mean = get_triple(obj, "mean", OPENAI_CLIP_MEAN, broadcast, path)?;
        let std = get_triple(obj, "std", OPENAI_CLIP_STD, broadcast, path)?;
        if std.contains(&0.0) {
            return Err(bad(path, "`std` contains 0"));
        }
        Ok(PreprocessConfig {
            resize,
            interpolation,
            crop,
            crop_rounding: CropRounding::RoundHalfEven,
            mean,
            std,
            convert_rgb_first: false,
            rgb_conversion: RgbConversion::PilConvert,
            scaling: PixelScaling::DivF32(255.0),
        })
    }

    /// The (w, h) the resize step produces for an input of (w, h).
    fn resized_size(&self, w: usize, h: usize) -> (usize, usize) {
        match self.resize {
            ResizeMode::None => (w, h),
            ResizeMode::Exact { height, width } => (width, height),
            ResizeMode::ShortestEdge(s) => {
                let (short, long) = if w <= h { (w, h) } else { (h, w) };
                // Python: int(s * long / short), true division of exact integers (the product
                // in u128 cannot overflow; the conversion saturates, for [`Self::check_image`]
                // to refuse).
                let new_long = ((s as u128 * long as u128) as f64 / short as f64) as usize;
                if w <= h {
                    (s, new_long)
                } else {
                    (new_long, s)
                }
            }
            ResizeMode::KeepRatio { height, width } => {
                let ratio_h = h as f64 / height as f64;
                let ratio_w = w as f64 / width as f64;
                // max(..) * 0. + min(..) * (1. - 0.), as open_clip computes it (longest = 0).
                let ratio = ratio_h.max(ratio_w) * 0.0 + ratio_h.min(ratio_w) * 1.0;
                let nh = (h as f64 / ratio).round_ties_even() as usize;
                let nw = (w as f64 / ratio).round_ties_even() as usize;
                (nw.max(1), nh.max(1))
            }
        }
    }
}

/// Crop window start and padding for one axis: (offset into the image, offset into the output).
fn crop_axis(size: usize, crop: usize, rounding: CropRounding) -> (usize, usize) {
    if size >= crop {
        let d = size - crop;
        let off = match rounding {
            CropRounding::Floor => d / 2,
            CropRounding::RoundHalfEven => (d as f64 / 2.0).round_ties_even() as usize,
        };
        (off, 0)
    } else {
        let d = crop - size;
        let pad = match rounding {
            CropRounding::Floor => d.div_ceil(2),
            CropRounding::RoundHalfEven => d / 2,
        };
        (0, pad)
    }
}

fn rgb_of(img: &DecodedImage, conv: RgbConversion) -> Result<Vec<u8>> {
    match conv {
        RgbConversion::CompositeOnWhite => Ok(if img.has_alpha() {
            img.to_rgb_on_white()
        } else {
            img.to_rgb()
        }),
        RgbConversion::PilConvert => Ok(img.to_rgb()),
        RgbConversion::Never => Ok(img.data.clone()),
    }
}

impl PreprocessConfig {
    /// Whether this preprocessing can take `img`, with the reason when it cannot: a quick test
    /// callers make before any work.
    pub fn check_image(&self, img: &DecodedImage) -> Result<()> {
        if self.rgb_conversion == RgbConversion::Never && img.pil_mode != PilMode::Rgb {
            return Err(Error::InvalidArgument(format!(
                "image has mode {} but the preprocessor config disables RGB conversion (do_convert_rgb: false)",
                img.pil_mode.as_str()
            )));
        }
        let (rw, rh) = self.resized_size(img.width, img.height);
        if rw == 0 || rh == 0 {
            return Err(Error::InvalidArgument(format!(
                "image of {}x{} resizes to an empty {rw}x{rh} image",
                img.width, img.height
            )));
        }
        // A thin strip resized to the model's short side grows by the model's size over its
        // width (1 x 4 000 000 pixels to 224 x 896 000 000): refused before anything is
        // allocated, as is a configuration asking for a huge crop.
        let (cw, ch) = self.crop.map_or((rw, rh), |(h, w)| (w, h));
        let too_many = |w: usize, h: usize| w as u128 * h as u128 > MAX_RESIZED_PIXELS as u128;
        let (what, w, h, why) = if too_many(rw, rh) {
            ("resizes to", rw, rh, "its aspect ratio is too extreme")
        } else if too_many(cw, ch) {
            ("is cropped to", cw, ch, "a huge input size")
        } else {
            return Ok(());
        };
        Err(Error::InvalidArgument(format!(
            "image of {}x{} {what} {w}x{h} for the model, more than {} megapixels: {why}",
            img.width,
            img.height,
            MAX_RESIZED_PIXELS / 1_000_000
        )))
    }
}

/// The most pixels preprocessing makes of an image at any step (the resize, the crop): as many
/// as the largest image decoded by default. Only an image of extreme aspect ratio, or a
/// configuration asking for a huge size, comes near it.
pub const MAX_RESIZED_PIXELS: u64 = DEFAULT_MAX_PIXELS;

/// Resize, crop and convert to 8-bit RGB: everything before the float conversion.
pub fn preprocess_u8(img: &DecodedImage, cfg: &PreprocessConfig) -> Result<CroppedRgb> {
    cfg.check_image(img)?;
    let original = (img.width, img.height);
    let converted;
    let mut cur = img;
    if cfg.convert_rgb_first {
        let rgb = rgb_of(img, cfg.rgb_conversion)?;
        converted = DecodedImage::from_raw(img.width, img.height, Mode::Rgb, rgb)?;
        cur = &converted;
    }
    let (rw, rh) = cfg.resized_size(img.width, img.height);
    let resized = resample::resize(cur, rw, rh, cfg.interpolation.filter());
    let (cw, ch) = match cfg.crop {
        Some((h, w)) => (w, h),
        None => (rw, rh),
    };
    let (cx, px) = crop_axis(rw, cw, cfg.crop_rounding);
    let (cy, py) = crop_axis(rh, ch, cfg.crop_rounding);
    let c = resized.mode.channels();
    // Zero padding in the image's own mode (0 in every band, alpha included), as both numpy
    // and Pillow's `ImageOps.expand(fill=0)` do.
    let mut cropped = vec![0u8; cw * ch * c];
    let copy_w = (rw - cx).min(cw - px);
    for y in 0..ch {
        let sy = y as isize + cy as isize - py as isize;
        if sy < 0 || sy >= rh as isize {
            continue;
        }
        let src = (sy as usize * rw + cx) * c;
        let dst = (y * cw + px) * c;
        cropped[dst..dst + copy_w * c].copy_from_slice(&resized.data[src..src + copy_w * c]);
    }
    let data = if cfg.convert_rgb_first {
        cropped
    } else {
        let mut out = DecodedImage::from_raw(cw, ch, resized.mode, cropped)?;
        out.pil_mode = resized.pil_mode;
        rgb_of(&out, cfg.rgb_conversion)?
    };
    Ok(CroppedRgb {
        width: cw,
        height: ch,
        data,
        geometry: Geometry {
            original,
            resized: (rw, rh),
            crop_offset: (cx, cy),
            pad_offset: (px, py),
            input: (cw, ch),
        },
    })
}

/// The float pixel values, [3, H, W] in channel-major order.
pub(crate) fn to_chw_f32(rgb: &CroppedRgb, cfg: &PreprocessConfig) -> Vec<f32> {
    let n = rgb.width * rgb.height;
    let mut out = vec![0f32; 3 * n];
    for (i, px) in rgb.data.chunks_exact(3).enumerate() {
        for ch in 0..3 {
            let x = match cfg.scaling {
                PixelScaling::MulF64(f) => (px[ch] as f64 * f) as f32,
                PixelScaling::DivF32(d) => px[ch] as f32 / d,
                PixelScaling::None => px[ch] as f32,
            };
            out[ch * n + i] = (x - cfg.mean[ch]) / cfg.std[ch];
        }
    }
    out
}

/// The network input for `img`: [`preprocess_u8`], then scaling and normalisation to
/// `[3, H, W]` f32 on the CPU.
pub fn preprocess(img: &DecodedImage, cfg: &PreprocessConfig) -> Result<Preprocessed> {
    let rgb = preprocess_u8(img, cfg)?;
    let v = to_chw_f32(&rgb, cfg);
    let pixels = Tensor::from_vec(v, (3, rgb.height, rgb.width), &Device::Cpu)?;
    Ok(Preprocessed {
        pixels,
        geometry: rgb.geometry,
    })
}

/// [`preprocess`] of the image file at `path` (JPEG, PNG or WebP); an image the configuration
/// cannot take is reported as an error about that file.
pub fn preprocess_file(path: &Path, cfg: &PreprocessConfig) -> Result<Preprocessed> {
    let img = decode_file(path)?;
    preprocess(&img, cfg).map_err(|e| match e {
        Error::InvalidArgument(msg) => Error::Image {
            path: path.to_path_buf(),
            msg,
        },
        other => other,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by `fuzz/` (image_decode): a 1 x 4 000 000 PNG (8 KB) was resized to
    /// 32 x 128 000 000 before the crop, and a 1 x 40 000 000 one (78 KB, within the decoding
    /// limit) asked for 224 x 8 960 000 000 pixels; a preprocessor config's huge
    /// `shortest_edge` overflowed `s * long`.
    #[test]
    fn extreme_aspect_ratios_are_refused_before_allocating() {
        let strip = |w: usize, h: usize| DecodedImage::from_raw(w, h, Mode::L, vec![128; w * h]);
        let square =
            PreprocessConfig::from_open_clip(&Value::Null, (32, 32), Path::new("x")).unwrap();
        let err = preprocess(&strip(1, 4_000_000).unwrap(), &square).unwrap_err();
        assert!(
            matches!(&err, Error::InvalidArgument(m) if m.contains("1x4000000 resizes to 32x128000000")),
            "{err}"
        );
        // Moderately thin images still work, on both pipelines.
        for cfg in [&square, &PreprocessConfig::hf_default((32, 32))] {
            let p = preprocess(&strip(3, 1000).unwrap(), cfg).unwrap();
            assert_eq!(p.geometry.resized, (32, 10_666));
            assert_eq!(p.pixels.dims(), [3, 32, 32]);
        }
        // Sizes from a hostile config: no overflow, a refusal.
        let huge: Value = serde_json::json!({"size": {"shortest_edge": u64::MAX}});
        let cfg = PreprocessConfig::from_hf_json(&huge, Path::new("x")).unwrap();
        assert_eq!(cfg.resized_size(2, 3).1, usize::MAX);
        assert!(preprocess(&strip(2, 3).unwrap(), &cfg).is_err());
        let crop: Value =
            serde_json::json!({"crop_size": {"height": 1_000_000, "width": 1_000_000}});
        let cfg = PreprocessConfig::from_hf_json(&crop, Path::new("x")).unwrap();
        let err = preprocess(&strip(2, 3).unwrap(), &cfg).unwrap_err();
        assert!(
            err.to_string().contains("cropped to 1000000x1000000"),
            "{err}"
        );
    }

    #[test]
    fn shortest_edge_sizes_follow_python_int() {
        let cfg = PreprocessConfig::hf_default((224, 224));
        assert_eq!(cfg.resized_size(640, 480), (298, 224));
        assert_eq!(cfg.resized_size(480, 640), (224, 298));
        assert_eq!(cfg.resized_size(224, 224), (224, 224));
    }

    #[test]
    fn crop_axis_rules() {
        assert_eq!(crop_axis(27, 24, CropRounding::Floor), (1, 0));
        assert_eq!(crop_axis(27, 24, CropRounding::RoundHalfEven), (2, 0)); // round(1.5) = 2
        assert_eq!(crop_axis(29, 24, CropRounding::RoundHalfEven), (2, 0)); // round(2.5) = 2
        assert_eq!(crop_axis(21, 24, CropRounding::Floor), (0, 2)); // ceil(3/2)
        assert_eq!(crop_axis(21, 24, CropRounding::RoundHalfEven), (0, 1)); // 3 // 2
    }

    #[test]
    fn geometry_hand_computed() {
        // 640x480 -> shortest edge 224 -> 298x224, center crop 224 at x = (298-224)//2 = 37.
        let img = DecodedImage::from_raw(640, 480, Mode::L, vec![0; 640 * 480]).unwrap();
        let g = preprocess_u8(&img, &PreprocessConfig::hf_default((224, 224)))
            .unwrap()
            .geometry;
        assert_eq!(g.resized, (298, 224));
        assert_eq!(g.crop_offset, (37, 0));
        let (x, y) = g.to_input(320.0, 240.0);
        assert!((x - (320.0 * 298.0 / 640.0 - 37.0)).abs() < 1e-4 && (y - 112.0).abs() < 1e-4);
        let (x0, y0) = g.to_original(x, y);
        assert!((x0 - 320.0).abs() < 1e-3 && (y0 - 240.0).abs() < 1e-3);
        // The crop keeps x 37..261 of the 298 resized columns: 79.5..560.9 of the original.
        assert!(g.crops());
        let v = g.visible();
        let want = [37.0 * 640.0 / 298.0, 0.0, 261.0 * 640.0 / 298.0, 480.0];
        assert!(
            v.iter().zip(want).all(|(a, b)| (a - b).abs() < 1e-3),
            "{v:?}"
        );
        // A square image is resized, not cropped.
        let img = DecodedImage::from_raw(50, 50, Mode::L, vec![0; 2500]).unwrap();
        let g = preprocess_u8(&img, &PreprocessConfig::hf_default((16, 16)))
            .unwrap()
            .geometry;
        assert!(!g.crops() && g.visible() == [0.0, 0.0, 50.0, 50.0]);
    }

    #[test]
    fn open_clip_config_parsing() {
        let p = Path::new("open_clip_config.json");
        let c = PreprocessConfig::from_open_clip(&Value::Null, (224, 224), p).unwrap();
        assert_eq!(c.resize, ResizeMode::ShortestEdge(224));
        assert_eq!(c.crop, Some((224, 224)));
        let v: Value = serde_json::json!({"resize_mode": "longest"});
        let e = PreprocessConfig::from_open_clip(&v, (224, 224), p).unwrap_err();
        assert!(e.to_string().contains("longest"), "{e}");
        let v: Value = serde_json::json!({"interpolation": "lanczos"});
        assert!(PreprocessConfig::from_open_clip(&v, (224, 224), p).is_err());
    }

    #[test]
    fn hf_config_parsing() {
        let p = Path::new("preprocessor_config.json");
        let v =
            serde_json::json!({"size": 336, "crop_size": 336, "resample": 3, "do_resize": true});
        let c = PreprocessConfig::from_hf_json(&v, p).unwrap();
        assert_eq!(c.resize, ResizeMode::ShortestEdge(336));
        assert_eq!(c.crop, Some((336, 336)));
        let v = serde_json::json!({"resample": 1});
        let e = PreprocessConfig::from_hf_json(&v, p).unwrap_err();
        assert!(e.to_string().contains("resample"), "{e}");
        let v = serde_json::json!({"size": {"shortest_edge": 10, "longest_edge": 20}});
        assert!(PreprocessConfig::from_hf_json(&v, p).is_err());
    }

    /// A per-channel field as HF and open_clip read it: a bare number is every channel's in
    /// both, a one-entry list only in open_clip (HF's PIL processor refuses it), other lengths
    /// in neither.
    #[test]
    fn one_entry_mean_and_std() {
        let hf = Path::new("preprocessor_config.json");
        for key in ["image_mean", "image_std"] {
            let c = PreprocessConfig::from_hf_json(&serde_json::json!({ key: 0.5 }), hf).unwrap();
            assert_eq!(if key == "image_mean" { c.mean } else { c.std }, [0.5; 3]);
            let e = PreprocessConfig::from_hf_json(&serde_json::json!({ key: [0.5] }), hf)
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("preprocessor_config.json")
                    && e.contains(&format!("`{key}` [0.5] has 1 entry"))
                    && e.contains("3 channels"),
                "{e}"
            );
            let e = PreprocessConfig::from_hf_json(&serde_json::json!({ key: [0.5, 0.5] }), hf)
                .unwrap_err();
            assert!(e.to_string().contains(key), "{e}");
        }
        let oc = Path::new("open_clip_config.json");
        let v = serde_json::json!({"mean": [0.5], "std": 0.25});
        let c = PreprocessConfig::from_open_clip(&v, (16, 16), oc).unwrap();
        assert_eq!((c.mean, c.std), ([0.5; 3], [0.25; 3]));
        let v = serde_json::json!({"mean": [0.5, 0.5]});
        let e = PreprocessConfig::from_open_clip(&v, (16, 16), oc).unwrap_err();
        assert!(e.to_string().contains("open_clip_config.json"), "{e}");
    }
}

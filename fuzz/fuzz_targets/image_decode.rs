//! Image bytes → `decode_bytes_within` (PNG, JPEG, WebP; 4 MP limit) → `preprocess` with one
//! of four configurations (picked by the input's length): the built-in model's HF processor
//! (64 px, shortest edge + centre crop), open_clip's eval transform square and non-square
//! (resize in the image's own mode, round-half-even crop) and an HF squash without crop. Every
//! step must return `Ok` or `Err`, never panic, and a success must have the promised shape.

#![no_main]

use std::path::Path;
use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use pairlens::io::image::decode_bytes_within;
use pairlens::io::preprocess::{preprocess, PreprocessConfig};

/// Small enough that a decoded image (and its float copy) stays far below the fuzzer's
/// `-rss_limit_mb`.
const MAX_PIXELS: u64 = 4_000_000;

static CONFIGS: LazyLock<Vec<PreprocessConfig>> = LazyLock::new(|| {
    let p = Path::new("fuzz-config.json");
    let builtin: serde_json::Value = serde_json::from_str(include_str!(
        "../../crates/pairlens/assets/builtin/preprocessor_config.json"
    ))
    .unwrap();
    let squash = serde_json::json!({
        "do_center_crop": false,
        "size": {"height": 24, "width": 40},
        "resample": 2,
    });
    let open_clip = serde_json::json!({"size": [40, 24], "interpolation": "bilinear"});
    vec![
        PreprocessConfig::from_hf_json(&builtin, p).unwrap(),
        PreprocessConfig::from_open_clip(&serde_json::Value::Null, (32, 32), p).unwrap(),
        PreprocessConfig::from_open_clip(&open_clip, (32, 32), p).unwrap(),
        PreprocessConfig::from_hf_json(&squash, p).unwrap(),
    ]
});

fuzz_target!(|data: &[u8]| {
    let configs = &*CONFIGS;
    let Ok(img) = decode_bytes_within(data, Path::new("fuzz-input"), MAX_PIXELS) else {
        return;
    };
    assert!(img.width > 0 && img.height > 0);
    assert!(img.width as u64 * img.height as u64 <= MAX_PIXELS);
    let channels = match img.mode {
        pairlens::io::image::Mode::L => 1,
        pairlens::io::image::Mode::LA => 2,
        pairlens::io::image::Mode::Rgb => 3,
        pairlens::io::image::Mode::Rgba => 4,
    };
    assert_eq!(img.data.len(), img.width * img.height * channels);
    if let Some(t) = &img.transparency {
        assert_eq!(t.len(), img.width * img.height);
    }
    // One configuration per input (picked by the bytes) keeps the exec rate up; the fuzzer
    // still reaches all of them.
    let cfg = &configs[data.len() % configs.len()];
    // A thin strip is resized to tens of megapixels (up to `MAX_RESIZED_PIXELS`), seconds per
    // input here: only the check that bounds it runs for those.
    let (short, long) = (img.width.min(img.height), img.width.max(img.height));
    if long / short > 64 {
        let _ = cfg.check_image(&img);
        return;
    }
    if let Ok(p) = preprocess(&img, cfg) {
        let dims = p.pixels.dims().to_vec();
        assert_eq!(dims.len(), 3);
        assert_eq!(dims[0], 3);
        assert_eq!((dims[2], dims[1]), p.geometry.input);
    }
});

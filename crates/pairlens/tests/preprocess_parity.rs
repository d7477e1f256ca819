//! Parity of decoding, Pillow resampling and CLIP preprocessing against the real Python
//! libraries, through the committed fixtures of `scripts/fixtures/images.py`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use pairlens::io::image::{decode_file, DecodedImage, Mode, PilMode};
use pairlens::io::preprocess::{preprocess, preprocess_file, preprocess_u8, PreprocessConfig};
use pairlens::io::resample::{resize, Filter};
use pairlens::Error;
use safetensors::{Dtype, SafeTensors};
use serde_json::Value;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/images")
}

struct Expected {
    bytes: Vec<u8>,
    manifest: Value,
}

impl Expected {
    fn load() -> Self {
        let dir = fixtures();
        let bytes = std::fs::read(dir.join("expected.safetensors")).expect("expected.safetensors");
        let manifest =
            serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).unwrap())
                .unwrap();
        Expected { bytes, manifest }
    }
    fn st(&self) -> SafeTensors<'_> {
        SafeTensors::deserialize(&self.bytes).unwrap()
    }
    fn u8(&self, name: &str) -> (Vec<usize>, Vec<u8>) {
        let st = self.st();
        let t = st
            .tensor(name)
            .unwrap_or_else(|_| panic!("missing fixture tensor {name}"));
        assert_eq!(t.dtype(), Dtype::U8, "{name}");
        (t.shape().to_vec(), t.data().to_vec())
    }
    fn f32(&self, name: &str) -> (Vec<usize>, Vec<f32>) {
        let st = self.st();
        let t = st
            .tensor(name)
            .unwrap_or_else(|_| panic!("missing fixture tensor {name}"));
        assert_eq!(t.dtype(), Dtype::F32, "{name}");
        let v = t
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        (t.shape().to_vec(), v)
    }
    fn has(&self, name: &str) -> bool {
        self.st().tensor(name).is_ok()
    }
    fn images(&self) -> Vec<(String, String)> {
        self.manifest["images"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v["mode"].as_str().unwrap().to_string()))
            .collect()
    }
}

/// (max abs diff, mean abs diff) between two byte buffers.
fn diff(a: &[u8], b: &[u8]) -> (u8, f64) {
    assert_eq!(a.len(), b.len());
    let mut max = 0u8;
    let mut sum = 0u64;
    for (x, y) in a.iter().zip(b) {
        let d = x.abs_diff(*y);
        max = max.max(d);
        sum += d as u64;
    }
    (max, sum as f64 / a.len().max(1) as f64)
}

fn mode_of(pil: &str) -> Mode {
    match pil {
        "L" => Mode::L,
        "LA" => Mode::LA,
        "RGB" => Mode::Rgb,
        "RGBA" => Mode::Rgba,
        m => panic!("no native layout for {m}"),
    }
}

/// The image exactly as Pillow decoded it, so resampling is tested apart from decoding.
fn pillow_decoded(exp: &Expected, name: &str, ours: &DecodedImage) -> DecodedImage {
    let key = format!("native/{name}");
    if !exp.has(&key) {
        return ours.clone();
    }
    let (shape, data) = exp.u8(&key);
    let mode = mode_of(ours.pil_mode.as_str());
    let mut img = DecodedImage::from_raw(shape[1], shape[0], mode, data).unwrap();
    img.pil_mode = ours.pil_mode;
    img.transparency = ours.transparency.clone();
    img
}

#[test]
fn decoding_matches_pillow() {
    let exp = Expected::load();
    // 16-bit PNGs as Pillow opens them (high byte kept; grey + alpha becomes RGBA; a tRNS colour
    // compared with the 8-bit pixels); 16-bit greyscale is refused (`io::image` unit test).
    let sixteen: Vec<(String, String)> = exp
        .images()
        .into_iter()
        .filter(|(name, _)| name.contains("16_"))
        .collect();
    let want = [
        ("la16_13x8.png", "RGBA"),
        ("rgb16_12x10.png", "RGB"),
        ("rgb16_trns_10x7.png", "RGB"),
        ("rgba16_11x9.png", "RGBA"),
    ];
    assert_eq!(
        sixteen,
        want.map(|(n, m)| (n.to_string(), m.to_string())),
        "16-bit fixtures"
    );
    let mut report = Vec::new();
    for (name, mode) in exp.images() {
        let img = decode_file(&fixtures().join(&name)).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(img.pil_mode.as_str(), mode, "{name}: Pillow mode");
        let (shape, want) = exp.u8(&format!("rgb/{name}"));
        assert_eq!(
            (img.height, img.width),
            (shape[0], shape[1]),
            "{name}: size"
        );
        let got = img.to_rgb();
        let (max, mean) = diff(&got, &want);
        report.push(format!("{name}: convert(RGB) max {max} mean {mean:.4}"));
        // JPEG via libjpeg-turbo (as in Pillow) and WebP via image-webp match exactly too;
        // zune-jpeg (the `image` crate's JPEG decoder) was off by up to 4 levels here.
        assert_eq!(
            max, 0,
            "{name}: decoded pixels differ from Pillow (mean {mean})"
        );
        if exp.has(&format!("native/{name}")) {
            let (_, native) = exp.u8(&format!("native/{name}"));
            assert_eq!(img.data, native, "{name}: native-mode pixels");
        }
    }
    eprintln!("{}", report.join("\n"));
}

#[test]
fn resize_is_bit_exact_vs_pillow() {
    let exp = Expected::load();
    let mut checked = 0;
    for (name, _) in exp.images() {
        let ours = decode_file(&fixtures().join(&name)).unwrap();
        let img = pillow_decoded(&exp, &name, &ours);
        for r in exp.manifest["images"][&name]["resize"].as_array().unwrap() {
            let fname = r[0].as_str().unwrap();
            let (tw, th) = (
                r[1].as_u64().unwrap() as usize,
                r[2].as_u64().unwrap() as usize,
            );
            let filter = match fname {
                "bicubic" => Filter::Bicubic,
                "bilinear" => Filter::Bilinear,
                f => panic!("{f}"),
            };
            let out = resize(&img, tw, th, filter);
            let (shape, want) = exp.u8(&format!("resize/{name}/{fname}/{tw}x{th}"));
            let got = if let (PilMode::P, Some(t)) = (img.pil_mode, &out.transparency) {
                // Pillow fixture is convert("RGBA") of the resized palette image.
                out.data
                    .chunks_exact(3)
                    .zip(t)
                    .flat_map(|(p, &a)| [p[0], p[1], p[2], a])
                    .collect()
            } else {
                out.data.clone()
            };
            assert_eq!(
                shape[0] * shape[1],
                tw * th,
                "{name} {fname} {tw}x{th}: shape"
            );
            let (max, mean) = diff(&got, &want);
            assert_eq!(
                max, 0,
                "{name} {fname} {tw}x{th}: max diff {max}, mean {mean}"
            );
            checked += 1;
        }
    }
    assert!(checked > 150, "only {checked} resize cases");
}

fn check_pipeline(exp: &Expected, prefix: &str, cfg_name: &str, cfg: &PreprocessConfig) {
    for (name, _) in exp.images() {
        let path = fixtures().join(&name);
        let img = decode_file(&path).unwrap();
        let u8s = preprocess_u8(&img, cfg).unwrap();
        let (shape, want_u8) = exp.u8(&format!("{prefix}_u8/{cfg_name}/{name}"));
        assert_eq!(
            shape,
            vec![3, u8s.height, u8s.width],
            "{prefix}/{cfg_name}/{name}: shape"
        );
        let got_chw: Vec<u8> = (0..3)
            .flat_map(|c| u8s.data.chunks_exact(3).map(move |p| p[c]))
            .collect();
        let (max, mean) = diff(&got_chw, &want_u8);
        assert_eq!(
            max, 0,
            "{prefix}/{cfg_name}/{name}: u8 crop differs (mean {mean})"
        );

        let out = preprocess(&img, cfg).unwrap();
        let (shape, want) = exp.f32(&format!("{prefix}/{cfg_name}/{name}"));
        assert_eq!(
            out.pixels.dims(),
            shape.as_slice(),
            "{prefix}/{cfg_name}/{name}"
        );
        let got: Vec<f32> = out.pixels.flatten_all().unwrap().to_vec1().unwrap();
        let maxf = got
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(
            maxf <= 1e-6,
            "{prefix}/{cfg_name}/{name}: max |diff| {maxf}"
        );
        assert_eq!(out.geometry.input, (u8s.width, u8s.height));

        // End to end from the file with our decoder.
        let from_file = preprocess_file(&path, cfg).unwrap();
        let got: Vec<f32> = from_file.pixels.flatten_all().unwrap().to_vec1().unwrap();
        let maxf = got
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(
            maxf <= 1e-6,
            "{prefix}/{cfg_name}/{name} from file: max |diff| {maxf}"
        );
    }
}

#[test]
fn hf_clip_image_processor_parity() {
    let exp = Expected::load();
    let cfgs: BTreeMap<String, Value> =
        serde_json::from_value(exp.manifest["hf_configs"].clone()).unwrap();
    assert!(cfgs.len() >= 3);
    for (cname, v) in &cfgs {
        let cfg = PreprocessConfig::from_hf_json(v, Path::new(cname)).unwrap();
        check_pipeline(&exp, "hf", cname, &cfg);
    }
}

#[test]
fn open_clip_transform_parity() {
    let exp = Expected::load();
    let cfgs: BTreeMap<String, Value> =
        serde_json::from_value(exp.manifest["oc_configs"].clone()).unwrap();
    assert!(cfgs.len() >= 3);
    for (cname, v) in &cfgs {
        let isz = match &v["image_size"] {
            Value::Number(n) => (n.as_u64().unwrap() as usize, n.as_u64().unwrap() as usize),
            Value::Array(a) => (
                a[0].as_u64().unwrap() as usize,
                a[1].as_u64().unwrap() as usize,
            ),
            other => panic!("{other}"),
        };
        let cfg =
            PreprocessConfig::from_open_clip(&v["preprocess_cfg"], isz, Path::new(cname)).unwrap();
        check_pipeline(&exp, "oc", cname, &cfg);
    }
}

#[test]
fn hf_config_file_round_trip() {
    let dir = std::env::temp_dir().join(format!("pairlens-pp-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join("preprocessor_config.json");
    std::fs::write(
        &p,
        r#"{"crop_size": {"height": 224, "width": 224}, "do_center_crop": true, "do_normalize": true,
            "do_resize": true, "image_processor_type": "CLIPImageProcessor",
            "image_mean": [0.48145466, 0.4578275, 0.40821073], "image_std": [0.26862954, 0.26130258, 0.27577711],
            "resample": 3, "size": {"shortest_edge": 224}}"#,
    )
    .unwrap();
    let cfg = PreprocessConfig::from_hf_file(&p).unwrap();
    assert_eq!(cfg, PreprocessConfig::hf_default((224, 224)));
    std::fs::write(&p, r#"{"resample": 1}"#).unwrap();
    let e = PreprocessConfig::from_hf_file(&p).unwrap_err();
    assert!(matches!(e, Error::BadConfig { .. }), "{e}");
    assert!(e.to_string().contains("preprocessor_config.json"), "{e}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn bad_files_give_clear_errors() {
    let dir = std::env::temp_dir().join(format!("pairlens-img-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = PreprocessConfig::hf_default((16, 16));

    let missing = dir.join("nope.png");
    let e = preprocess_file(&missing, &cfg).unwrap_err();
    assert!(e.to_string().contains("nope.png"), "{e}");

    let text = dir.join("notes.jpg");
    std::fs::write(&text, "this is not an image").unwrap();
    let e = decode_file(&text).unwrap_err();
    assert!(matches!(e, Error::Image { .. }), "{e}");
    assert!(e.to_string().contains("notes.jpg"), "{e}");

    let png = std::fs::read(fixtures().join("rgb_37x23.png")).unwrap();
    let trunc = dir.join("truncated.png");
    std::fs::write(&trunc, &png[..png.len() / 2]).unwrap();
    let e = decode_file(&trunc).unwrap_err();
    assert!(matches!(e, Error::Image { .. }), "{e}");
    assert!(e.to_string().contains("truncated.png"), "{e}");

    let jpg = std::fs::read(fixtures().join("photo_45x45.jpg")).unwrap();
    let tj = dir.join("truncated.jpg");
    std::fs::write(&tj, &jpg[..200]).unwrap();
    let e = decode_file(&tj).unwrap_err();
    assert!(
        matches!(e, Error::Image { .. }) && e.to_string().contains("truncated.jpg"),
        "{e}"
    );
    // A corrupt scan (libjpeg fatal error inside the C decoder) is an error, not a crash.
    let mut bad = jpg.clone();
    let sof = bad.windows(2).position(|w| w == [0xFF, 0xC0]).unwrap();
    bad[sof + 9] = 0; // number of components = 0
    let bj = dir.join("corrupt.jpg");
    std::fs::write(&bj, &bad).unwrap();
    let e = decode_file(&bj).unwrap_err();
    assert!(e.to_string().contains("corrupt.jpg"), "{e}");
    let e = preprocess_file(&text, &cfg).unwrap_err();
    assert!(e.to_string().contains("notes.jpg"), "{e}");
    std::fs::remove_dir_all(&dir).ok();
}

//! Forward parity with PyTorch (transformers `CLIPModel`, open_clip `CLIP`) on the random-weight
//! checkpoints of fixtures/models (made by scripts/fixtures/models.py). The checkpoints are read
//! through `io::checkpoint::load`, so this also proves the loaders' name/shape/transposition
//! mapping: any dropped or mis-split tensor moves the outputs far beyond 1e-5. This binary
//! installs the CLI's allocator, so the weights are the files' own pages (zero-copy), as in
//! `pairlens`; the other test binaries load by copying.

use std::collections::HashMap;
use std::path::PathBuf;

mod support;

use candle_core::{DType, Device, Tensor};
use pairlens::io::checkpoint::{self, CheckpointFormat, LoadedModel};
use support::FixtureDir;

#[global_allocator]
static ALLOCATOR: pairlens::io::mapped::MappingAllocator = pairlens::io::mapped::MappingAllocator;

/// Whether `t`'s data lies in a checkpoint file's mapping.
fn file_backed(t: &Tensor) -> bool {
    let (storage, layout) = t.storage_and_layout();
    match &*storage {
        candle_core::Storage::Cpu(candle_core::CpuStorage::F32(v)) => {
            pairlens::io::mapped::is_file_backed(v[layout.start_offset()..].as_ptr() as *const u8)
        }
        _ => false,
    }
}

/// Embeddings: absolute. Hidden states grow through the residual stream (|h| up to ~12 here),
/// where f32 rounding alone (summation order of matmuls/conv) reaches a few 1e-6 *relative*;
/// they are held to TOL × max(1, max |reference|). Set PARITY_REPORT=1 to print every measure.
const TOL: f32 = 1e-5;

fn fixtures() -> PathBuf {
    support::fixtures().join("models")
}

struct Case {
    name: &'static str,
    loaded: LoadedModel,
    expected: HashMap<String, Tensor>,
    meta: serde_json::Value,
}

fn case(name: &'static str) -> Case {
    let dir = FixtureDir::new(name);
    let loaded = checkpoint::load(&dir.path, &Device::Cpu)
        .unwrap_or_else(|e| panic!("{name}: load failed: {e}"));
    let expected = candle_core::safetensors::load(
        fixtures().join(format!("{name}.expected.safetensors")),
        &Device::Cpu,
    )
    .unwrap();
    let meta: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join(format!("{name}.expected.json"))).unwrap(),
    )
    .unwrap();
    Case {
        name,
        loaded,
        expected,
        meta,
    }
}

impl Case {
    fn get(&self, key: &str) -> &Tensor {
        self.expected
            .get(key)
            .unwrap_or_else(|| panic!("{}: fixture lacks {key}", self.name))
    }
    fn ids(&self) -> Tensor {
        self.get("text_ids").to_dtype(DType::U32).unwrap()
    }
    fn pool(&self) -> Vec<usize> {
        let ids: Vec<Vec<u32>> = self.ids().to_vec2().unwrap();
        let pool: Vec<usize> = ids
            .iter()
            .map(|r| self.loaded.model.text.config.pooling.index(r).unwrap())
            .collect();
        let want: Vec<i64> = self.get("text_pool").to_vec1().unwrap();
        assert_eq!(
            pool,
            want.iter().map(|&i| i as usize).collect::<Vec<_>>(),
            "{}: pooled positions",
            self.name
        );
        pool
    }
    fn layers(&self, key: &str) -> Vec<usize> {
        self.meta[key]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as usize)
            .collect()
    }
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims());
    a.sub(b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar()
        .unwrap()
}

fn max_abs(t: &Tensor) -> f32 {
    t.abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar()
        .unwrap()
}

fn check(what: &str, got: &Tensor, want: &Tensor, tol: f32) {
    let d = max_abs_diff(got, want);
    if std::env::var_os("PARITY_REPORT").is_some() {
        eprintln!(
            "{what}: max abs diff {d:.3e} (max |ref| {:.2}, tol {tol:.1e})",
            max_abs(want)
        );
    }
    assert!(d <= tol, "{what}: max abs difference {d:e} > {tol:e}");
}

fn assert_close(what: &str, got: &Tensor, want: &Tensor) {
    check(what, got, want, TOL)
}

fn assert_close_scaled(what: &str, got: &Tensor, want: &Tensor) {
    check(what, got, want, TOL * max_abs(want).max(1.0))
}

fn check_model(name: &'static str, format: CheckpointFormat) {
    let c = case(name);
    let m = &c.loaded.model;
    assert_eq!(c.loaded.format, format);
    let block = &m.vision.weights.blocks[0];
    for (what, t) in [
        ("fc1", &block.fc1.weight),
        ("q", &block.q.weight),
        ("k bias", block.k.bias.as_ref().unwrap()),
    ] {
        assert!(file_backed(t), "{name}: {what} was copied, not mapped");
    }
    let lscale = c.meta["logit_scale"].as_f64().unwrap() as f32;
    assert!((m.logit_scale - lscale).abs() < 1e-6, "{name}: logit_scale");

    // Text: embeddings, hidden states entering chosen blocks, and embed_from those states.
    let ids = c.ids();
    let pool = c.pool();
    assert_close(
        &format!("{name} text embeddings"),
        &m.text.forward(&ids, &pool).unwrap(),
        c.get("text_embeds"),
    );
    for k in c.layers("text_hidden_layers") {
        let want = c.get(&format!("text_hidden_{k}"));
        assert_close_scaled(
            &format!("{name} text hidden_at({k})"),
            &m.text.hidden_at(k, &ids).unwrap(),
            want,
        );
        let e = m.text.embed_from(k, want, &pool).unwrap();
        assert_close(
            &format!("{name} text embed_from({k})"),
            &e,
            c.get("text_embeds"),
        );
    }

    // Vision.
    let px = c.get("image_pixels");
    assert_close(
        &format!("{name} image embeddings"),
        &m.vision.forward(px).unwrap(),
        c.get("image_embeds"),
    );
    for k in c.layers("image_hidden_layers") {
        let want = c.get(&format!("image_hidden_{k}"));
        assert_close_scaled(
            &format!("{name} image hidden_at({k})"),
            &m.vision.hidden_at(k, px).unwrap(),
            want,
        );
        let e = m.vision.embed_from(k, want).unwrap();
        assert_close(
            &format!("{name} image embed_from({k})"),
            &e,
            c.get("image_embeds"),
        );
    }
}

#[test]
fn hf_tiny_quickgelu() {
    check_model("hf-tiny-quickgelu", CheckpointFormat::Hf);
}

#[test]
fn hf_small_gelu() {
    check_model("hf-small-gelu", CheckpointFormat::Hf);
}

#[test]
fn openclip_a_quickgelu() {
    check_model("openclip-a-quickgelu", CheckpointFormat::OpenClip);
}

#[test]
fn openclip_b_gelu() {
    check_model("openclip-b-gelu", CheckpointFormat::OpenClip);
}

/// The tokenizer the loader picks (HF tokenizer.json without cleaning; open_clip: bundled BPE with
/// open_clip cleaning, pad 0) gives the reference library's ids for every fixture caption.
#[test]
fn loader_tokenizers_match_reference_ids() {
    for name in [
        "hf-tiny-quickgelu",
        "hf-small-gelu",
        "openclip-a-quickgelu",
        "openclip-b-gelu",
    ] {
        let c = case(name);
        let want: Vec<Vec<u32>> = c.ids().to_vec2().unwrap();
        for (caption, want) in c.meta["captions"].as_array().unwrap().iter().zip(&want) {
            let enc = c
                .loaded
                .tokenizer
                .encode(caption.as_str().unwrap(), false)
                .unwrap();
            assert_eq!(&enc.ids, want, "{name}: ids of {caption}");
        }
    }
}

/// `read_config` agrees with the geometry `load` uses.
#[test]
fn read_config_matches_load() {
    for name in ["hf-tiny-quickgelu", "openclip-b-gelu"] {
        let c = case(name);
        let dir = FixtureDir::new(name);
        let (fmt, cfg) = checkpoint::read_config(&dir.path).unwrap();
        assert_eq!(fmt, c.loaded.format);
        assert_eq!(cfg, c.loaded.model.config(), "{name}");
    }
}

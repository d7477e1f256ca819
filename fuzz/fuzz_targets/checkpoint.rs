//! A checkpoint directory built from the input → `pairlens::io::checkpoint::load` (the whole
//! loading path of `Explainer::open(ModelSource::Dir(..))`: layout detection, config.json or
//! open_clip_config.json, the safetensors header and tensors, tokenizer.json with its side
//! files, the preprocessing config and the cross-checks between them), plus the tokenizer.json
//! and preprocessing parsers on their own, so that they are reached even when the model
//! config is broken.
//!
//! Input format (see `fuzz/README.md`): one flags byte, then the files' contents separated by
//! [`SEP`]; the n-th part is written to the n-th name of the layout the flags choose, missing
//! parts are absent files:
//!
//! - flags bit 0 clear (Hugging Face): `config.json`, the weights (`model.safetensors`, or with
//!   flags bit 1 `model-00001.safetensors`, a shard), `tokenizer.json`,
//!   `preprocessor_config.json`, `model.safetensors.index.json`, `special_tokens_map.json`;
//! - flags bit 0 set (open_clip): `open_clip_config.json`, `open_clip_model.safetensors`,
//!   `tokenizer.json`, `special_tokens_map.json`.
//!
//! With flags bit 2 an empty part is an absent file (to reach the later names without the
//! earlier ones); bits 4-7 are the context length (2 + value) of the stand-alone tokenizer.

#![no_main]

use std::path::{Path, PathBuf};
use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use pairlens::io::checkpoint;
use pairlens::io::image::{DecodedImage, Mode};
use pairlens::io::preprocess::{preprocess, PreprocessConfig};
use pairlens::io::tokenizer::{ClipTokenizer, TextCleaning};
use pairlens::Device;

/// Separates the files in an input (in `fuzz/dict/checkpoint.dict` too).
const SEP: &[u8] = b"\0PART\0";

const HF_FILES: [&str; 6] = [
    "config.json",
    "model.safetensors",
    "tokenizer.json",
    "preprocessor_config.json",
    "model.safetensors.index.json",
    "special_tokens_map.json",
];
const OPEN_CLIP_FILES: [&str; 4] = [
    "open_clip_config.json",
    "open_clip_model.safetensors",
    "tokenizer.json",
    "special_tokens_map.json",
];

/// One directory per fuzzing process, emptied before every input; on tmpfs where there is one.
static DIR: LazyLock<PathBuf> = LazyLock::new(|| {
    let shm = Path::new("/dev/shm");
    let root = if shm.is_dir() {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    };
    let dir = root.join(format!("pairlens-fuzz-checkpoint-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch directory");
    dir
});

fn split<'a>(mut data: &'a [u8], sep: &[u8]) -> Vec<&'a [u8]> {
    let mut parts = Vec::new();
    while let Some(i) = data.windows(sep.len()).position(|w| w == sep) {
        parts.push(&data[..i]);
        data = &data[i + sep.len()..];
    }
    parts.push(data);
    parts
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let dir = &*DIR;
    for entry in std::fs::read_dir(dir).expect("scratch directory").flatten() {
        std::fs::remove_file(entry.path()).expect("scratch file");
    }
    let open_clip = flags & 1 != 0;
    let mut names: Vec<&str> = match open_clip {
        true => OPEN_CLIP_FILES.to_vec(),
        false => HF_FILES.to_vec(),
    };
    if !open_clip && flags & 2 != 0 {
        names[1] = "model-00001.safetensors";
    }
    let parts = split(rest, SEP);
    let empty_is_absent = flags & 4 != 0;
    for (name, part) in names.iter().zip(&parts) {
        if !(part.is_empty() && empty_is_absent) {
            std::fs::write(dir.join(name), part).expect("scratch file");
        }
    }

    // The parsers that loading reaches only behind a valid model config, on their own.
    let tok_path = dir.join("tokenizer.json");
    if tok_path.is_file() {
        let cleaning = match open_clip {
            true => TextCleaning::OpenClip,
            false => TextCleaning::None,
        };
        let ctx = 2 + (flags >> 4) as usize; // short contexts truncate often
        if let Ok(tok) = ClipTokenizer::from_file(&tok_path, cleaning, ctx, None) {
            for truncate in [false, true] {
                if let Ok(e) = tok.encode("a photo of a dog, red car!", truncate) {
                    assert_eq!(e.ids.len(), ctx);
                    assert_eq!(e.ids[0], tok.sot_id());
                    assert_eq!(e.ids[e.len - 1], tok.eot_id());
                }
            }
        }
    }
    let pp_path = dir.join("preprocessor_config.json");
    if !open_clip && pp_path.is_file() {
        if let Ok(cfg) = PreprocessConfig::from_hf_file(&pp_path) {
            let _ = check_preprocess(&cfg);
        }
    }
    if open_clip {
        if let Some(v) = parts
            .first()
            .and_then(|p| serde_json::from_slice::<serde_json::Value>(p).ok())
        {
            let pp = v.get("preprocess_cfg").cloned().unwrap_or_default();
            if let Ok(cfg) = PreprocessConfig::from_open_clip(&pp, (8, 8), Path::new("fuzz")) {
                let _ = check_preprocess(&cfg);
            }
        }
    }
    let _ = checkpoint::read_config(dir);

    // The whole load.
    let loaded = checkpoint::load(dir, &Device::Cpu);
    if std::env::var_os("PAIRLENS_FUZZ_VERBOSE").is_some() {
        match &loaded {
            Ok(m) => eprintln!("loaded: {:?}", m.model.config()),
            Err(e) => eprintln!("not loaded: {e}"),
        }
    }
    if let Ok(m) = loaded {
        let cfg = m.model.config();
        assert!(m.tokenizer.vocab_size() <= cfg.text.vocab_size);
        if let Ok(e) = m.tokenizer.encode("a photo of a dog", true) {
            assert_eq!(e.ids.len(), cfg.text.context_length);
            assert!(e.ids.iter().all(|&id| (id as usize) < cfg.text.vocab_size));
        }
        if let Ok(p) = check_preprocess(&m.preprocess) {
            // Loading checked that preprocessing produces the vision tower's input.
            let (h, w) = cfg.vision.image_size;
            assert_eq!(p, (w, h));
        }
    }
});

/// Preprocesses a small odd-sized RGBA image; returns the input size (w, h) on success.
fn check_preprocess(cfg: &PreprocessConfig) -> pairlens::Result<(usize, usize)> {
    static IMAGE: LazyLock<DecodedImage> = LazyLock::new(|| {
        let (w, h) = (13, 7);
        let data = (0..w * h * 4).map(|i| (i * 37 % 251) as u8).collect();
        DecodedImage::from_raw(w, h, Mode::Rgba, data).unwrap()
    });
    let p = preprocess(&IMAGE, cfg)?;
    let dims = p.pixels.dims().to_vec();
    assert_eq!(dims, [3, p.geometry.input.1, p.geometry.input.0]);
    Ok(p.geometry.input)
}

//! Derives two tables from the bundled CLIP vocabulary (`assets/clip_bpe_tokenizer.json.gz`),
//! so that a run reads them instead of parsing 1.7 MB of JSON (`io::clip_bpe`):
//! - `clip_merges.bin`: every merge in rank order as three little-endian u32 ids
//!   (left, right, merged);
//! - `clip_head.json`: the tokenizer.json without its model's vocabulary and merges, plus the
//!   tokens no merge produces (the byte alphabet, with and without the end-of-word suffix, and
//!   the specials) by id.

use std::collections::{BTreeMap, HashSet};
use std::io::Read;
use std::path::PathBuf;

const SOURCE: &str = "assets/clip_bpe_tokenizer.json.gz";

fn main() {
    println!("cargo:rerun-if-changed={SOURCE}");
    let mut json = Vec::new();
    flate2::read::GzDecoder::new(std::fs::File::open(SOURCE).expect(SOURCE))
        .read_to_end(&mut json)
        .expect("decompress the bundled vocabulary");
    let mut file: serde_json::Value = serde_json::from_slice(&json).expect("tokenizer.json");
    let model = &file["model"];
    let vocab = model["vocab"].as_object().expect("model.vocab");
    let id = |t: &str| -> u32 {
        let v = vocab
            .get(t)
            .unwrap_or_else(|| panic!("merge token {t:?} not in the vocabulary"));
        v.as_u64().expect("id") as u32
    };
    let mut table = Vec::new();
    let mut merged = HashSet::new();
    for m in model["merges"].as_array().expect("model.merges") {
        let (a, b) = match m {
            serde_json::Value::Array(p) => (p[0].as_str().expect("a"), p[1].as_str().expect("b")),
            serde_json::Value::String(s) => s.split_once(' ').expect("\"a b\""),
            other => panic!("merge {other}"),
        };
        let c = id(&format!("{a}{b}"));
        for v in [id(a), id(b), c] {
            table.extend_from_slice(&v.to_le_bytes());
        }
        merged.insert(c);
    }
    let base: BTreeMap<u32, &str> = vocab
        .iter()
        .map(|(t, v)| (v.as_u64().expect("id") as u32, t.as_str()))
        .filter(|(i, _)| !merged.contains(i))
        .collect();
    let base = serde_json::to_value(&base).expect("base tokens");
    let size = vocab.len();
    file["model"]["vocab"] = serde_json::json!({});
    file["model"]["merges"] = serde_json::json!([]);
    let head = serde_json::json!({ "tokenizer": file, "base": base, "size": size });
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR"));
    std::fs::write(out.join("clip_merges.bin"), table).expect("write clip_merges.bin");
    std::fs::write(out.join("clip_head.json"), head.to_string()).expect("write clip_head.json");
}

//! SigLIP 2's tokenizer (Gemma's BPE with byte fallback, from `tokenizer.json`) against
//! transformers (fixtures from scripts/fixtures/gemma_tokenizer.py): for every caption and for
//! max_length 16 and 64, the ids of `tok(caption, padding="max_length", max_length=L,
//! truncation=True)` as a SigLIP 2 FixRes directory loads it (GemmaTokenizer), and as
//! Siglip2Tokenizer (lower-casing) does; then a SigLIP directory with this tokenizer instead of
//! spiece.model loads and explains.

mod support;

use std::path::{Path, PathBuf};

use candle_core::Device;
use pairlens::io::siglip_tokenizer::SiglipTokenizer;
use pairlens::{Error, Explainer, ModelSource};
use serde_json::Value;
use support::ids;

fn dir() -> PathBuf {
    support::fixtures().join("tokenizers/gemma-bpe")
}

fn expected() -> Value {
    support::read_json(&dir().join("expected.json"))
}

/// A fresh temporary directory for this test.
fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("pairlens-gemma-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn copy_dir(src: &Path, dst: &Path) {
    for e in std::fs::read_dir(src).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), dst.join(e.file_name())).unwrap();
    }
}

/// The gemma-bpe fixture with `tokenizer_class` changed.
fn with_class(name: &str, class: &str) -> PathBuf {
    let d = scratch(name);
    for f in ["tokenizer.json", "tokenizer_config.json"] {
        std::fs::copy(dir().join(f), d.join(f)).unwrap();
    }
    let p = d.join("tokenizer_config.json");
    let mut cfg: Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
    cfg["tokenizer_class"] = class.into();
    std::fs::write(&p, cfg.to_string()).unwrap();
    d
}

#[test]
fn special_ids_and_vocabulary_match_transformers() {
    let exp = expected();
    let t = SiglipTokenizer::from_dir(&dir(), 64).unwrap();
    assert_eq!(t.vocab_size() as u64, exp["vocab_size"].as_u64().unwrap());
    assert!(
        t.vocab_size() <= 300,
        "must fit the fixture models' embedding"
    );
    assert_eq!(u64::from(t.pad_id()), exp["pad_id"].as_u64().unwrap());
    assert_eq!(u64::from(t.eos_id()), exp["eos_id"].as_u64().unwrap());
    assert_eq!(u64::from(t.unk_id()), exp["unk_id"].as_u64().unwrap());
    let vocab = t.vocabulary();
    assert_eq!(vocab.len(), t.vocab_size());
    assert_eq!(vocab[..5], ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>"]);
    // Display strings: word-start `▁` stripped, byte pieces as they are.
    for (id, piece) in exp["vocab"].as_array().unwrap().iter().enumerate() {
        let piece = piece.as_str().unwrap();
        let shown = &vocab[id];
        if piece == "\u{2581}" || piece.starts_with('<') {
            assert_eq!(shown, piece);
        } else {
            assert_eq!(shown, piece.strip_prefix('\u{2581}').unwrap_or(piece));
        }
    }
    assert_eq!(t.token_str(1_000_000), "<id 1000000>");
    let r = t.reference();
    assert_eq!((r.len, r.tokens.len(), r.ids.len()), (0, 0, 64));
    assert!(r.ids.iter().all(|&i| i == 0));
    // transformers, as a FixRes checkpoint loads it: GemmaTokenizer, no lower-casing.
    let info = &exp["transformers"];
    assert_eq!(info["fixres_tokenizer_class"], "GemmaTokenizer");
    assert_eq!(info["fixres_lower_cases"], false);
    assert_eq!(info["siglip2_class_lower_cases"], true);
    assert_eq!(info["padding_side"], "right");
}

#[test]
fn ids_match_transformers_for_every_caption_and_length() {
    let exp = expected();
    let cases = exp["cases"].as_array().unwrap();
    assert!(cases.len() >= 40);
    let lower = with_class("lower", "Siglip2Tokenizer");
    for l in [16usize, 64] {
        let t = SiglipTokenizer::from_dir(&dir(), l).unwrap();
        let s2 = SiglipTokenizer::from_dir(&lower, l).unwrap();
        for case in cases {
            let caption = case["caption"].as_str().unwrap();
            let want = ids(&case[format!("ids_{l}")]);
            assert_eq!(case[format!("keys_{l}")], serde_json::json!(["input_ids"]));
            let e = t
                .encode(caption, true)
                .unwrap_or_else(|e| panic!("{caption:?} @ {l}: {e}"));
            assert_eq!(e.ids, want, "{caption:?} @ {l}");
            // `len`: up to and including the last non-pad id.
            let last = want.iter().rposition(|&i| i != 0).map_or(0, |p| p + 1);
            assert_eq!(e.len, last, "{caption:?} @ {l}");
            assert_eq!(e.tokens.len(), e.len);
            assert_eq!(e.ids[e.len - 1], 1, "ends with <eos>: {caption:?} @ {l}");
            let untruncated = ids(&case["ids"]);
            if untruncated.len() <= l {
                assert_eq!(t.encode(caption, false).unwrap().ids, want, "{caption:?}");
            } else {
                let err = t.encode(caption, false).unwrap_err().to_string();
                let n = format!("{} tokens", untruncated.len());
                assert!(err.contains(&n) && err.contains(&l.to_string()), "{err}");
            }
            let want = ids(&case[format!("siglip2_class_ids_{l}")]);
            assert_eq!(
                s2.encode(caption, true).unwrap().ids,
                want,
                "lower: {caption:?}"
            );
        }
    }
    let _ = std::fs::remove_dir_all(&lower);
}

#[test]
fn captions_tokens_and_unknown_words() {
    let t = SiglipTokenizer::from_dir(&dir(), 16).unwrap();
    for c in ["", "   ", "\t\n"] {
        let e = t.encode(c, true).unwrap_err();
        assert!(matches!(e, Error::Caption { .. }), "{c:?}: {e}");
    }
    let e = t.encode("A photo of a DOG.", false).unwrap();
    assert_eq!(e.tokens.last().map(String::as_str), Some("<eos>"));
    assert_eq!(e.tokens[..3], ["A", "photo", "of"]);
    // Byte fallback: each UTF-8 byte of a character missing from the vocabulary is a piece.
    let e = t.encode("café", false).unwrap();
    assert_eq!(e.tokens[e.len - 3..], ["<0xC3>", "<0xA9>", "<eos>"]);
    // This vocabulary has no byte pieces for printable ASCII, so `~` is <unk>; the real one
    // (all 256 byte pieces) never makes <unk>.
    assert_eq!(
        t.unknown_words("a ~tilde~ and 猫, a ~tilde~").unwrap(),
        vec!["~tilde~".to_string()]
    );
    assert!(t.unknown_words("a photo of a 🐶").unwrap().is_empty());
    // A very long caption is cut, in time linear in its length.
    let huge = "a photo of a dog on the beach! ".repeat(20_000);
    let e = t.encode(&huge, true).unwrap();
    assert_eq!((e.len, e.ids.len(), e.ids[15]), (16, 16, 1));
}

#[test]
fn bad_tokenizer_files() {
    let d = scratch("bad");
    std::fs::write(d.join("tokenizer.json"), b"{not json").unwrap();
    let e = SiglipTokenizer::from_dir(&d, 16).unwrap_err().to_string();
    assert!(e.contains("tokenizer.json"), "{e}");
    std::fs::copy(dir().join("tokenizer.json"), d.join("tokenizer.json")).unwrap();
    let cfg = |v: Value| std::fs::write(d.join("tokenizer_config.json"), v.to_string()).unwrap();
    cfg(serde_json::json!({"tokenizer_class": "GemmaTokenizer", "padding_side": "left"}));
    let e = SiglipTokenizer::from_dir(&d, 16).unwrap_err().to_string();
    assert!(e.contains("padding side") && e.contains("left"), "{e}");
    cfg(serde_json::json!({"tokenizer_class": "GemmaTokenizer"}));
    let e = SiglipTokenizer::from_dir(&d, 16).unwrap_err().to_string();
    assert!(e.contains("padding side"), "{e}");
    cfg(serde_json::json!({"padding_side": "right", "pad_token": "<nope>"}));
    let e = SiglipTokenizer::from_dir(&d, 16).unwrap_err().to_string();
    assert!(e.contains("<nope>"), "{e}");
    // The file as it is (no class rebuilding it), the file's post-processor: same ids.
    cfg(serde_json::json!({"padding_side": "right"}));
    let t = SiglipTokenizer::from_dir(&d, 16).unwrap();
    assert_eq!(
        t.encode("A cat", false).unwrap().ids[..4],
        [189, 254, 277, 1]
    );
    // add_eos_token false rebuilds the post-processor without <eos>.
    cfg(serde_json::json!({"padding_side": "right", "add_eos_token": false}));
    let t = SiglipTokenizer::from_dir(&d, 16).unwrap();
    let e = t.encode("A cat", false).unwrap();
    assert_eq!((e.len, &e.ids[..4]), (3, &[189, 254, 277, 0][..]));
    let _ = std::fs::remove_dir_all(&d);
}

/// A SigLIP checkpoint directory with SigLIP 2's tokenizer.json instead of spiece.model loads,
/// encodes like transformers and explains.
#[test]
fn siglip_directory_with_tokenizer_json_explains() {
    let d = scratch("model");
    copy_dir(&support::fixtures().join("models/siglip-a"), &d);
    for f in [
        "spiece.model",
        "tokenizer_config.json",
        "special_tokens_map.json",
    ] {
        std::fs::remove_file(d.join(f)).unwrap();
    }
    copy_dir(&dir(), &d);
    std::fs::remove_file(d.join("expected.json")).unwrap();
    let _ = std::fs::remove_file(d.join("README.md"));

    let explainer = Explainer::open(ModelSource::Dir(d.clone()), &Device::Cpu)
        .unwrap_or_else(|e| panic!("{e}"));
    let exp = expected();
    let case = exp["cases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["caption"] == "A cat")
        .unwrap();
    let e = explainer.encode("A cat", false).unwrap();
    assert_eq!(e.ids, ids(&case["ids_16"]));

    let img =
        pairlens::io::image::decode_file(&support::fixtures().join("siglip/gradient_45x30.png"))
            .unwrap();
    let pixels = explainer.preprocess(&img).unwrap().pixels;
    let side = explainer
        .image(&pixels, &explainer.default_settings())
        .unwrap();
    let out = explainer.explain(&side, &["A cat"]).unwrap();
    assert_eq!(out.len(), 1);
    let x = &out[0];
    assert_eq!(x.tokens.len(), 16, "{:?}", x.tokens);
    assert_eq!(x.interactions.dims()[0], 16);
    assert_eq!(x.tokens[..5], ["A", "c", "at", "<eos>", "<pad>"][..]);
    assert!(x.score.is_finite());

    // Neither tokenizer file: the error names spiece.model.
    std::fs::remove_file(d.join("tokenizer.json")).unwrap();
    let err = match Explainer::open(ModelSource::Dir(d.clone()), &Device::Cpu) {
        Ok(_) => panic!("loaded without a tokenizer"),
        Err(e) => e.to_string(),
    };
    assert!(
        err.contains("spiece.model") && err.contains("tokenizer.json"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&d);
}

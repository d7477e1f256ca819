//! SigLIP tokenizer parity against transformers' `SiglipTokenizer` (fixtures from
//! scripts/fixtures/siglip_tokenizer.py): for every caption and for max_length 16 and 64, the
//! ids of `tok(caption, padding="max_length", max_length=L, truncation=True)`, and the
//! untruncated ids where they fit.

mod support;

use std::path::PathBuf;

use pairlens::io::sentencepiece::SentencePiece;
use pairlens::io::siglip_tokenizer::SiglipTokenizer;
use pairlens::Error;
use serde_json::Value;
use support::ids;

fn dir() -> PathBuf {
    support::fixtures().join("tokenizers/siglip-spm")
}

fn expected() -> Value {
    support::read_json(&dir().join("expected.json"))
}

#[test]
fn special_ids_and_vocabulary_match_transformers() {
    let exp = expected();
    let t = SiglipTokenizer::from_dir(&dir(), 64).unwrap();
    assert_eq!(t.vocab_size() as u64, exp["vocab_size"].as_u64().unwrap());
    assert_eq!(u64::from(t.pad_id()), exp["pad_id"].as_u64().unwrap());
    assert_eq!(u64::from(t.eos_id()), exp["eos_id"].as_u64().unwrap());
    assert_eq!(u64::from(t.unk_id()), exp["unk_id"].as_u64().unwrap());
    let sp = SentencePiece::from_file(&dir().join("spiece.model")).unwrap();
    let pieces: Vec<&str> = exp["pieces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    let ours: Vec<&str> = sp.pieces().iter().map(|p| p.piece.as_str()).collect();
    assert_eq!(ours, pieces);
    let n = &exp["normalizer"];
    assert_eq!(sp.normalizer().name, n["name"].as_str().unwrap());
    assert_eq!(
        sp.normalizer().add_dummy_prefix,
        n["add_dummy_prefix"].as_bool().unwrap()
    );
    assert_eq!(t.vocabulary().len(), pieces.len());
}

#[test]
fn ids_match_transformers_for_every_caption_and_length() {
    let exp = expected();
    let cases = exp["cases"].as_array().unwrap();
    assert!(cases.len() >= 40, "{} cases", cases.len());
    let mut failures = Vec::new();
    let mut compared = 0;
    for l in exp["lengths"].as_array().unwrap() {
        let l = l.as_u64().unwrap() as usize;
        let t = SiglipTokenizer::from_dir(&dir(), l).unwrap();
        for c in cases {
            let cap = c["caption"].as_str().unwrap();
            let want = ids(&c[format!("ids_{l}")]);
            let raw = ids(&c["ids_untruncated"]);
            let canonical = c["canonical"].as_str().unwrap();
            if canonical.is_empty() || raw.len() <= 1 {
                // transformers returns just the end id; pairlens refuses the caption.
                match t.encode(cap, true) {
                    Err(Error::Caption { .. }) => {}
                    other => failures.push(format!(
                        "{cap:?} (L={l}): expected a caption error, got {other:?}"
                    )),
                }
                continue;
            }
            assert_eq!(want.len(), l);
            match t.encode(cap, true) {
                Ok(e) => {
                    compared += 1;
                    if e.ids != want {
                        failures.push(format!(
                            "{cap:?} (L={l}):\n  ours {:?}\n  HF   {want:?}\n  tokens {:?}",
                            e.ids, e.tokens
                        ));
                    }
                    let mask_key = format!("attention_mask_{l}");
                    if let Some(mask) = c.get(&mask_key) {
                        let ones = ids(mask).iter().filter(|&&m| m == 1).count();
                        if ones != e.len {
                            failures.push(format!(
                                "{cap:?} (L={l}): len {} but HF mask has {ones} ones",
                                e.len
                            ));
                        }
                    }
                    assert_eq!(e.tokens.len(), e.len);
                }
                Err(err) => failures.push(format!("{cap:?} (L={l}): {err}")),
            }
            // Without truncation: the same ids when they fit, else an error.
            match t.encode(cap, false) {
                Ok(e) => {
                    if e.ids[..e.len] != raw[..] {
                        failures.push(format!(
                            "{cap:?} (L={l}, untruncated): {:?} vs {raw:?}",
                            &e.ids[..e.len]
                        ));
                    }
                }
                Err(Error::Caption { msg, .. }) if raw.len() > l => {
                    assert!(msg.contains(&format!("{} tokens", raw.len())), "{msg}");
                }
                Err(err) => failures.push(format!("{cap:?} (L={l}, untruncated): {err}")),
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(compared >= 70, "only {compared} comparisons");
}

/// What transformers returns besides `input_ids`: nothing with the real checkpoints' config
/// (`model_input_names: ["input_ids"]`, as the fixture's), an all-ones/zeros `attention_mask`
/// with the class defaults.
#[test]
fn transformers_return_keys() {
    let exp = expected();
    let strs = |v: &Value| -> Vec<String> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|k| k.as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(strs(&exp["model_input_names"]), ["input_ids"]);
    assert_eq!(
        strs(&exp["keys_with_class_defaults"]),
        ["attention_mask", "input_ids"]
    );
    for c in exp["cases"].as_array().unwrap() {
        assert_eq!(strs(&c["keys_16"]), ["input_ids"]);
        assert_eq!(strs(&c["keys_64"]), ["input_ids"]);
    }
}

#[test]
fn sentencepiece_matches_the_library_on_random_text() {
    let exp = expected();
    let sp = SentencePiece::from_file(&dir().join("spiece.model")).unwrap();
    let fuzz = exp["fuzz"].as_array().unwrap();
    assert!(fuzz.len() >= 100);
    let mut failures = Vec::new();
    for c in fuzz {
        let cap = c["caption"].as_str().unwrap();
        let enc = sp.encode(cap).unwrap();
        let got_ids: Vec<u32> = enc.iter().map(|p| p.id).collect();
        let got_pieces: Vec<&str> = enc.iter().map(|p| p.piece.as_str()).collect();
        let want_pieces: Vec<&str> = c["spm_pieces"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p.as_str().unwrap())
            .collect();
        if got_ids != ids(&c["spm_ids"]) || got_pieces != want_pieces {
            failures.push(format!(
                "{cap:?}:\n  ours {got_pieces:?} {got_ids:?}\n  spm  {want_pieces:?} {:?}",
                ids(&c["spm_ids"])
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn siglip_tokenizer_matches_transformers_on_random_text() {
    let exp = expected();
    let t = SiglipTokenizer::from_dir(&dir(), 64).unwrap();
    let mut failures = Vec::new();
    let mut compared = 0;
    for c in exp["fuzz"].as_array().unwrap() {
        let cap = c["caption"].as_str().unwrap();
        let want = ids(&c["ids_64"]);
        let raw = ids(&c["ids_untruncated"]);
        match t.encode(cap, true) {
            Ok(e) => {
                compared += 1;
                if e.ids != want {
                    failures.push(format!(
                        "{cap:?}:\n  ours {:?}\n  HF   {want:?}",
                        &e.ids[..e.len]
                    ));
                }
            }
            // Refused only where transformers has nothing but special tokens.
            Err(Error::Caption { .. })
                if raw.iter().all(|&i| i == t.eos_id() || i == t.unk_id()) && raw.len() <= 2 => {}
            Err(err) => failures.push(format!("{cap:?}: {err} (HF {raw:?})")),
        }
    }
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(compared >= 300, "only {compared} compared");
}

/// Byte fallback, user-defined symbols, the identity normaliser, whitespace as suffix, no dummy
/// prefix, kept extra whitespace: sentencepiece-level parity on small models.
#[test]
fn sentencepiece_options_match_the_library() {
    let vdir = support::fixtures().join("tokenizers/sentencepiece-variants");
    let p = vdir.join("expected.json");
    let exp: Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
    let models = exp["models"].as_object().unwrap();
    assert_eq!(models.len(), 2);
    let mut failures = Vec::new();
    for (name, m) in models {
        let sp = SentencePiece::from_file(&vdir.join(format!("{name}.model"))).unwrap();
        for c in m["cases"].as_array().unwrap() {
            let text = c["text"].as_str().unwrap();
            let enc = sp.encode(text).unwrap();
            let got_ids: Vec<u32> = enc.iter().map(|p| p.id).collect();
            let got: Vec<&str> = enc.iter().map(|p| p.piece.as_str()).collect();
            let want: Vec<&str> = c["pieces"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p.as_str().unwrap())
                .collect();
            if got_ids != ids(&c["ids"]) || got != want {
                failures.push(format!("{name} {text:?}:\n  ours {got:?}\n  spm  {want:?}"));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

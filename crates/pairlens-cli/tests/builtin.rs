//! The built-in model is the default: `pairlens embed` and `explain` without `--model` on the
//! committed example mosaics, checked against transformers (fixtures/builtin/expected.json,
//! written by scripts/fixtures/builtin.py from crates/pairlens/assets/builtin).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A fresh cache directory, so every run also exercises the first-use materialisation.
fn fresh_cache(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "pairlens-builtin-cli-{name}-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn pairlens(cache: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pairlens"))
        .args(args)
        .env("XDG_CACHE_HOME", cache)
        .output()
        .expect("run pairlens")
}

fn floats(v: &serde_json::Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn embed_without_model_matches_transformers() {
    let expected: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(repo().join("fixtures/builtin/expected.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        expected["model_hash"].as_str().unwrap(),
        pairlens::builtin::hash(),
        "fixtures/builtin/expected.json was made for other built-in weights: \
         run /work/venv/bin/python scripts/fixtures/builtin.py"
    );
    let cases = expected["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 4);
    let cache = fresh_cache("embed");
    // All four at once: concurrent first uses of an empty cache must agree.
    let outputs: Vec<Output> = std::thread::scope(|s| {
        let handles: Vec<_> = cases
            .iter()
            .map(|c| {
                let image = repo()
                    .join("examples/mosaics")
                    .join(c["image"].as_str().unwrap());
                let caption = c["caption"].as_str().unwrap().to_string();
                let cache = &cache;
                s.spawn(move || {
                    pairlens(
                        cache,
                        &[
                            "embed",
                            "--image",
                            image.to_str().unwrap(),
                            "--caption",
                            &caption,
                            "--json",
                        ],
                    )
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (c, out) in cases.iter().zip(outputs) {
        let what = c["image"].as_str().unwrap();
        assert!(
            out.status.success(),
            "{what}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        // Named as the built-in model, not by its cache directory (checked below).
        assert_eq!(v["model"], "built-in", "{what}");
        assert_eq!(v["ids"], c["ids"], "{what}: ids");
        let dt = max_diff(&floats(&v["text_embedding"]), &floats(&c["text_embedding"]));
        let di = max_diff(
            &floats(&v["image_embedding"]),
            &floats(&c["image_embedding"]),
        );
        let ds = (v["score"].as_f64().unwrap() - c["score"].as_f64().unwrap()).abs();
        assert!(dt <= 1e-5, "{what}: text embedding off by {dt}");
        assert!(di <= 1e-5, "{what}: image embedding off by {di}");
        assert!(ds <= 1e-5, "{what}: score off by {ds}");
    }
    // One materialised copy, no temporary directories left behind.
    let entries: Vec<_> = std::fs::read_dir(&cache)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(entries.len(), 1, "{entries:?}");
    let copy = entries[0].to_string_lossy();
    assert!(copy.starts_with("pairlens-builtin-"), "{copy}");
    std::fs::remove_dir_all(&cache).unwrap();
}

#[test]
fn explain_without_model_uses_the_example() {
    let cache = fresh_cache("explain");
    let row = std::fs::read_to_string(repo().join("examples/mosaics/data.jsonl")).unwrap();
    let row: serde_json::Value = serde_json::from_str(row.lines().next().unwrap()).unwrap();
    let span = &row["phrases"][0]["span"];
    let span = format!("{}:{}", span[0], span[1]);
    let image = repo()
        .join("examples/mosaics")
        .join(row["image"].as_str().unwrap());
    let caption = row["caption"].as_str().unwrap();
    let out = pairlens(
        &cache,
        &[
            "explain",
            "--image",
            image.to_str().unwrap(),
            "--caption",
            caption,
            "--span",
            &span,
            "--steps",
            "2",
            "--json",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let c = &v["captions"][0];
    let tokens: Vec<&str> = c["spans"][0]["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    // The data set's span names the phrase's words (tokens may carry the BPE end-of-word mark).
    let phrase = row["phrases"][0]["text"].as_str().unwrap();
    for (tok, word) in tokens.iter().zip(phrase.split(' ')) {
        assert_eq!(
            tok.trim_end_matches("</w>"),
            word,
            "span tokens {tokens:?} vs {phrase:?}"
        );
    }
    assert!(c["score"].as_f64().unwrap().is_finite());
    std::fs::remove_dir_all(&cache).unwrap();
}

#[test]
fn unwritable_cache_is_reported() {
    let file = fresh_cache("unwritable");
    std::fs::write(&file, b"a file, not a directory").unwrap();
    let image = repo().join("examples/mosaics/00001.png");
    // Neither the cache nor the temp directory fallback can hold a directory.
    let tmp = file.join("tmp");
    let out = Command::new(env!("CARGO_BIN_EXE_pairlens"))
        .args([
            "embed",
            "--image",
            image.to_str().unwrap(),
            "--caption",
            "a bag",
        ])
        .env("XDG_CACHE_HOME", &file)
        .env("TMPDIR", &tmp)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with("error: ") && !err.contains("panicked"),
        "{err}"
    );
    for want in [
        "built-in",
        "XDG_CACHE_HOME",
        &file.display().to_string(),
        &tmp.display().to_string(),
    ] {
        assert!(err.contains(want), "{want:?} missing from {err}");
    }
    std::fs::remove_file(&file).unwrap();
}

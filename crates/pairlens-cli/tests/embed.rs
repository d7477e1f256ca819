//! `pairlens embed` end to end on the tiny HF fixture: the built binary's JSON must match the
//! PyTorch pipeline (CLIPImageProcessorPil + CLIPTokenizerFast + CLIPModel) that
//! scripts/fixtures/models.py ran on the same image file and caption.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use candle_core::Device;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/models")
}

fn pairlens(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pairlens"))
        .args(args)
        .output()
        .expect("run pairlens")
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn embed_json_matches_pytorch() {
    let name = "hf-tiny-quickgelu";
    let meta: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join(format!("{name}.expected.json"))).unwrap(),
    )
    .unwrap();
    let cli = &meta["cli"];
    let model = fixtures().join(name);
    let image = fixtures()
        .join("images")
        .join(cli["image"].as_str().unwrap());
    let caption = cli["caption"].as_str().unwrap();
    let out = pairlens(&[
        "embed",
        "--model",
        model.to_str().unwrap(),
        "--image",
        image.to_str().unwrap(),
        "--caption",
        caption,
        "--json",
    ]);
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(
        stdout.trim().lines().count(),
        1,
        "exactly one JSON line: {stdout}"
    );
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();

    let exp = candle_core::safetensors::load(
        fixtures().join(format!("{name}.expected.safetensors")),
        &Device::Cpu,
    )
    .unwrap();
    let floats = |k: &str| -> Vec<f32> {
        v[k].as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap() as f32)
            .collect()
    };
    let want_img: Vec<f32> = exp["cli_image_embed"].to_vec1().unwrap();
    let want_txt: Vec<f32> = exp["cli_text_embed"].to_vec1().unwrap();
    let di = max_diff(&floats("image_embedding"), &want_img);
    let dt = max_diff(&floats("text_embedding"), &want_txt);
    assert!(dt <= 1e-5, "text embedding off by {dt}");
    // Includes image decoding + Pillow-exact resize/crop/normalise on top of the forward pass.
    assert!(di <= 1e-5, "image embedding off by {di}");
    let ds = (v["score"].as_f64().unwrap() - cli["score"].as_f64().unwrap()).abs();
    assert!(ds <= 1e-5, "score off by {ds}");

    let ids: Vec<u64> = v["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap())
        .collect();
    let want_ids: Vec<u64> = cli["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap())
        .collect();
    assert_eq!(ids, want_ids[..ids.len()], "ids");
    let tokens = v["tokens"].as_array().unwrap();
    assert_eq!(tokens.len(), ids.len());
    assert!(
        tokens.iter().any(|t| t.as_str().unwrap().contains("dog")),
        "tokens {tokens:?}"
    );
    assert_eq!(v["format"], "hf");
}

#[test]
fn embed_text_output() {
    let model = fixtures().join("hf-small-gelu");
    let image = fixtures().join("images/blocks_36x52.png");
    let out = pairlens(&[
        "embed",
        "--model",
        model.to_str().unwrap(),
        "--image",
        image.to_str().unwrap(),
        "--caption",
        "a red car",
    ]);
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s = String::from_utf8(out.stdout).unwrap();
    for w in [
        "score (cosine):",
        "image embedding (20):",
        "text embedding (20):",
        "tokens (",
    ] {
        assert!(s.contains(w), "{w:?} missing from:\n{s}");
    }
}

#[test]
fn embed_errors_exit_1() {
    let image = fixtures().join("images/blocks_36x52.png");
    let out = pairlens(&[
        "embed",
        "--model",
        "/no/such/model",
        "--image",
        image.to_str().unwrap(),
        "--caption",
        "x",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.starts_with("error: ") && err.contains("/no/such/model"),
        "{err}"
    );

    // Too long for the 32-token context: refused unless --truncate.
    let model = fixtures().join("hf-tiny-quickgelu");
    let long = "a photo of a cat ".repeat(20);
    let args = [
        "embed",
        "--model",
        model.to_str().unwrap(),
        "--image",
        image.to_str().unwrap(),
        "--caption",
        &long,
    ];
    let out = pairlens(&args);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.starts_with("error: ") && err.contains("--truncate"),
        "{err}"
    );
    let mut args = args.to_vec();
    args.push("--truncate");
    assert!(pairlens(&args).status.success());

    let out = pairlens(&[
        "embed",
        "--model",
        model.to_str().unwrap(),
        "--image",
        "/no/such.png",
        "--caption",
        "x",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8(out.stderr)
        .unwrap()
        .contains("/no/such.png"));
}

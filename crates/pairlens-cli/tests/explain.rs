//! `pairlens explain` end to end on the tiny HF fixture: outputs, queries and errors.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/models")
}

fn model() -> String {
    fixtures().join("hf-tiny-quickgelu").display().to_string()
}

fn image() -> String {
    fixtures()
        .join("images/gradient_44x30.png")
        .display()
        .to_string()
}

fn pairlens(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pairlens"))
        .args(args)
        .output()
        .expect("run pairlens")
}

fn ok_json(args: &[&str]) -> serde_json::Value {
    let out = pairlens(args);
    assert!(
        out.status.success(),
        "pairlens failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("one JSON object")
}

fn error_of(args: &[&str]) -> String {
    let out = pairlens(args);
    assert_eq!(
        out.status.code(),
        Some(1),
        "expected failure, got {:?}",
        out.status
    );
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(err.starts_with("error: "), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    err
}

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("pairlens-explain-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn json_summary_queries_and_conservation() {
    let (m, i) = (model(), image());
    let j = ok_json(&[
        "explain",
        "--model",
        &m,
        "--image",
        &i,
        "--caption",
        "a dog on a red car",
        "--caption",
        "a cat",
        "--span",
        "1:3",
        "--box",
        "0,0,20,15",
        "--steps",
        "4",
        "--json",
    ]);
    let caps = j["captions"].as_array().unwrap();
    assert_eq!(caps.len(), 2);
    let grid = j["settings"]["grid"].as_array().unwrap();
    let (gh, gw) = (
        grid[0].as_u64().unwrap() as usize,
        grid[1].as_u64().unwrap() as usize,
    );
    for c in caps {
        let tokens = c["tokens"].as_array().unwrap();
        let totals: Vec<f64> = c["token_totals"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        assert_eq!(totals.len(), tokens.len());
        // score = Σ A + f(x)·g(r) + f̃(r)·g(y) − f̃(r)·g(r) + residual, by definition.
        let r = &c["reference_terms"];
        let sum = c["sum"].as_f64().unwrap();
        let rebuilt = sum
            + r["text_vs_image_reference"].as_f64().unwrap()
            + r["text_reference_vs_image"].as_f64().unwrap()
            - r["reference_vs_reference"].as_f64().unwrap()
            + c["residual"].as_f64().unwrap();
        assert!((rebuilt - c["score"].as_f64().unwrap()).abs() < 1e-5);
        assert!((totals.iter().sum::<f64>() - sum).abs() < 1e-4);
        // The span heatmap covers the grid; the box gives one score per token.
        let span = &c["spans"][0];
        assert_eq!(span["span"], serde_json::json!([1, 3]));
        let hm = span["heatmap"].as_array().unwrap();
        assert_eq!((hm.len(), hm[0].as_array().unwrap().len()), (gh, gw));
        let scores = c["boxes"][0]["token_scores"].as_array().unwrap();
        assert_eq!(scores.len(), tokens.len());
    }
    assert!(j["timings"]["total_s"].as_f64().unwrap() > 0.0);
}

#[test]
fn writes_safetensors_and_pngs_without_overwriting() {
    let dir = temp_dir("out");
    let out = dir.join("e.safetensors").display().to_string();
    let png = dir.join("png").display().to_string();
    let (m, i) = (model(), image());
    let args = [
        "explain",
        "--model",
        &m,
        "--image",
        &i,
        "--caption",
        "a dog",
        "--span",
        "1:2",
        "--box",
        "5,5,30,25",
        "--out",
        &out,
        "--png",
        &png,
    ];
    let run = pairlens(&args);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let text = String::from_utf8_lossy(&run.stdout);
    assert!(text.contains("residual"), "{text}");
    let tensors = candle_core::safetensors::load(&out, &candle_core::Device::Cpu).unwrap();
    let a = &tensors["interactions"];
    assert_eq!(a.dims()[0], 4, "<sot> a dog <eot>");
    assert_eq!(a.dims()[1], 1 + 16, "CLS + 4×4 patches");
    for f in ["caption1.png", "caption1_span1-2.png", "caption1_box1.png"] {
        let img = image::open(Path::new(&png).join(f)).unwrap();
        assert!(img.width() > 100 && img.height() > 50, "{f}");
    }
    // A second run must not replace what the first wrote…
    let err = error_of(&args);
    assert!(
        err.contains("already exists") && err.contains("--force"),
        "{err}"
    );
    // …unless asked to.
    let mut forced = args.to_vec();
    forced.push("--force");
    assert!(pairlens(&forced).status.success());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_input_gives_clear_errors() {
    let (m, i) = (model(), image());
    let base = |extra: &[&str]| {
        let mut v = vec!["explain", "--model", m.as_str(), "--image", i.as_str()];
        v.extend_from_slice(extra);
        error_of(&v)
    };
    let e = base(&["--caption", "a dog", "--text-layer", "9"]);
    assert!(e.contains("text layer 9 is out of range"), "{e}");
    let e = base(&["--caption", "a dog", "--image-layer", "99"]);
    assert!(e.contains("image layer 99 is out of range"), "{e}");
    let e = base(&["--caption", "   "]);
    assert!(e.contains("empty caption"), "{e}");
    let e = base(&["--caption", "a dog", "--span", "1:9"]);
    assert!(e.contains("out of range"), "{e}");
    let e = base(&["--caption", "a dog", "--box", "500,500,600,600"]);
    assert!(e.contains("outside the image"), "{e}");
    let e = base(&["--caption", "a dog", "--steps", "0"]);
    assert!(e.contains("steps"), "{e}");
    // Flag values clap rejects exit with its usage code, 2.
    let out = pairlens(&[
        "explain",
        "--image",
        &i,
        "--caption",
        "a dog",
        "--box",
        "0,0,inf,5",
    ]);
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.code() == Some(2) && e.contains("finite"), "{e}");
    // A caption far too long is named by its start and length, not echoed whole.
    let long = "dog ".repeat(2000);
    let e = base(&["--caption", &long]);
    assert!(
        e.contains("(8000 characters)") && e.contains("--truncate") && e.len() < 400,
        "{e}"
    );
    // An output that is a directory is never taken for a file, --force or not.
    let dir = temp_dir("html-dir");
    let d = dir.display().to_string();
    for force in [false, true] {
        let mut args = vec!["--caption", "a dog", "--html", &d];
        if force {
            args.push("--force");
        }
        let e = base(&args);
        assert!(e.contains("is a directory: give a file name"), "{e}");
    }
    // The image is refused from its header, naming its size, the limit and the flag.
    let e = base(&["--caption", "a dog", "--max-pixels", "1000"]);
    assert!(
        e.contains("gradient_44x30.png")
            && e.contains("44×30 pixels, over the limit of 0.001 megapixels")
            && e.contains("--max-pixels"),
        "{e}"
    );
    let missing = fixtures().join("nope.png").display().to_string();
    let e = error_of(&[
        "explain",
        "--model",
        &m,
        "--image",
        &missing,
        "--caption",
        "a dog",
    ]);
    assert!(e.contains("nope.png"), "{e}");
    assert_eq!(
        e.matches("No such file").count(),
        1,
        "the OS error once: {e}"
    );
    let not_image = fixtures()
        .join("hf-tiny-quickgelu/config.json")
        .display()
        .to_string();
    let e = error_of(&[
        "explain",
        "--model",
        &m,
        "--image",
        &not_image,
        "--caption",
        "a dog",
    ]);
    assert!(e.contains("config.json"), "{e}");
}

/// A box reaching past the image's edges (negative coordinates included) is clipped, as the
/// README says, not mistaken for a flag.
#[test]
fn boxes_past_the_edges_are_clipped() {
    let (m, i) = (model(), image());
    let mut args = vec!["explain", "--model", &m, "--image", &i];
    args.extend(["--caption", "a dog", "--box", "-10,-10,30,30", "--json"]);
    let j = ok_json(&args);
    let scores = &j["captions"][0]["boxes"][0]["token_scores"];
    assert!(scores.as_array().is_some_and(|s| !s.is_empty()), "{j}");
}

/// `--device` names are checked before any work; a GPU asked of a build without CUDA says so.
#[test]
fn device_flag() {
    let (m, i) = (model(), image());
    let run = |device: &str| {
        let mut args = vec!["explain", "--model", &m, "--image", &i];
        args.extend(["--caption", "a dog", "--device", device]);
        pairlens(&args)
    };
    let out = run("cpu");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = run("tpu");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("expected cpu, cuda or cuda:N"), "{err}");
    if !cfg!(feature = "cuda") {
        let out = run("cuda:0");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("built without CUDA"), "{err}");
    }
}

/// Weights are checked through the results, not at load: a NaN in a weight the explanation uses
/// still fails, naming the tensor and the value's position.
#[test]
fn a_nan_weight_is_named() {
    let dir = temp_dir("nan-weight");
    for f in [
        "config.json",
        "model.safetensors",
        "preprocessor_config.json",
        "tokenizer.json",
    ] {
        std::fs::copy(fixtures().join("hf-tiny-quickgelu").join(f), dir.join(f)).unwrap();
    }
    let file = dir.join("model.safetensors");
    let mut tensors = candle_core::safetensors::load(&file, &candle_core::Device::Cpu).unwrap();
    let name = "vision_model.encoder.layers.1.mlp.fc1.weight";
    let t = &tensors[name];
    let mut v: Vec<f32> = t.flatten_all().unwrap().to_vec1().unwrap();
    v[7] = f32::NAN;
    let bad = candle_core::Tensor::from_vec(v, t.shape(), &candle_core::Device::Cpu).unwrap();
    tensors.insert(name.to_string(), bad);
    candle_core::safetensors::save(&tensors, &file).unwrap();
    let (m, i) = (dir.display().to_string(), image());
    let e = error_of(&[
        "explain",
        "--model",
        &m,
        "--image",
        &i,
        "--caption",
        "a dog",
    ]);
    assert!(
        e.contains(&format!("`{name}`")) && e.contains("non-finite value NaN at flat index 7"),
        "{e}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A SigLIP checkpoint end to end: every text position is a row (the bidirectional tower reads
/// the padding), the columns are the patches alone (no CLS), the references are recorded, the
/// HTML report and PNGs are written, and `embed` reports the model's logit and its sigmoid.
#[test]
fn siglip_end_to_end() {
    let m = fixtures().join("siglip-a").display().to_string();
    let i = image();
    let dir = temp_dir("siglip");
    let out = dir.join("e.safetensors").display().to_string();
    let html = dir.join("e.html").display().to_string();
    let j = ok_json(&[
        "explain",
        "--model",
        &m,
        "--image",
        &i,
        "--caption",
        "a cat",
        "--span",
        "0:2",
        "--box",
        "0,0,20,15",
        "--out",
        &out,
        "--html",
        &html,
        "--json",
    ]);
    let s = &j["settings"];
    assert_eq!(s["class_token"], false);
    assert_eq!(
        (s["text_layer"].as_u64(), s["image_layer"].as_u64()),
        (Some(1), Some(2))
    );
    assert_eq!(
        s["text_reference_ids"],
        serde_json::json!(vec![1; 16]),
        "padding everywhere"
    );
    let c = &j["captions"][0];
    let tokens: Vec<&str> = c["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    assert_eq!(tokens.len(), 16, "every position of the padded caption");
    assert_eq!(c["spans"][0]["cls"], serde_json::Value::Null);
    let tensors = candle_core::safetensors::load(&out, &candle_core::Device::Cpu).unwrap();
    assert_eq!(
        tensors["interactions"].dims(),
        &[16, 16],
        "16 positions × 4×4 patches"
    );
    assert!(std::fs::read_to_string(&html).unwrap().contains("a cat"));

    let e = ok_json(&[
        "embed",
        "--model",
        &m,
        "--image",
        &i,
        "--caption",
        "a cat",
        "--json",
    ]);
    let (cos, logit) = (e["score"].as_f64().unwrap(), e["logit"].as_f64().unwrap());
    let bias = e["logit_bias"].as_f64().expect("SigLIP has a logit bias");
    let scale = e["logit_scale"].as_f64().unwrap();
    assert!((logit - (scale * cos + bias)).abs() < 1e-4);
    let p = e["probability"].as_f64().unwrap();
    assert!((p - 1.0 / (1.0 + (-logit).exp())).abs() < 1e-6);
    let _ = std::fs::remove_dir_all(&dir);
}

//! What a first run shows besides the numbers: unknown words named, written files announced,
//! pictures that fit and are numbered like the report, the built-in model named as such, the
//! crop stated, valid ranges in the help, the limit on N, `serve --addr localhost:PORT`, and
//! labelled reference terms in `--out`.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn tiny_model() -> String {
    repo()
        .join("fixtures/models/hf-tiny-quickgelu")
        .display()
        .to_string()
}

/// 44×30: the tiny model's 32×32 input is a centre crop of it.
fn wide_image() -> String {
    repo()
        .join("fixtures/models/images/gradient_44x30.png")
        .display()
        .to_string()
}

/// 64×64, the built-in model's own size: no crop.
fn mosaic() -> String {
    repo()
        .join("examples/mosaics/00000.png")
        .display()
        .to_string()
}

fn pairlens(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pairlens"))
        .args(args)
        .output()
        .expect("run pairlens")
}

fn ok(args: &[&str]) -> (String, String) {
    let out = pairlens(args);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    );
    assert!(out.status.success(), "pairlens {args:?} failed: {stderr}");
    (stdout, stderr)
}

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("pairlens-first-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn unknown_words_are_named_with_the_way_to_the_vocabulary() {
    let caption = "a shiny boot beside a shiny bag";
    let (stdout, stderr) = ok(&[
        "explain",
        "--image",
        &mosaic(),
        "--caption",
        caption,
        "--caption",
        "a boot",
        "--json",
    ]);
    let j: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(
        j["captions"][0]["unknown_words"],
        serde_json::json!(["shiny"])
    );
    assert_eq!(j["captions"][1]["unknown_words"], serde_json::json!([]));
    assert!(
        stderr.contains(&format!("warning: caption {caption:?}"))
            && stderr.contains("\"shiny\"")
            && stderr.contains("<unk>")
            && stderr.contains("`pairlens vocab`"),
        "{stderr}"
    );
    assert_eq!(stderr.matches("warning:").count(), 1, "{stderr}");

    let (stdout, stderr) = ok(&[
        "embed",
        "--image",
        &mosaic(),
        "--caption",
        "a red bag",
        "--json",
    ]);
    let j: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(j["unknown_words"], serde_json::json!(["red"]));
    assert!(stderr.contains("\"red\""), "{stderr}");

    // A byte-level BPE (CLIP's kind, whose unknown token is EOT) spells every word.
    let m = tiny_model();
    let args = [
        "embed",
        "--model",
        &m,
        "--image",
        &wide_image(),
        "--caption",
        "a dog zebra",
    ];
    let (_, stderr) = ok(&args);
    assert!(!stderr.contains("warning"), "{stderr}");
}

#[test]
fn vocab_lists_the_words_the_model_knows() {
    let (stdout, stderr) = ok(&["vocab"]);
    let words: Vec<&str> = stdout.lines().collect();
    for w in ["boot", "sneaker", "trousers", "beside"] {
        assert!(words.contains(&w), "{w} missing from {words:?}");
    }
    for special in ["<unk>", "<pad>", "<|startoftext|>", "<sot>"] {
        assert!(!words.contains(&special), "{special} listed");
    }
    assert!(!words.contains(&"shiny"));
    assert!(stderr.contains("built-in"), "{stderr}");
    let (json, _) = ok(&["vocab", "--json"]);
    let list: Vec<String> = serde_json::from_str(&json).unwrap();
    assert_eq!(list, words);
}

#[test]
fn written_files_are_announced_on_stderr_and_named_from_one() {
    let dir = temp_dir("wrote");
    let (out, png, html) = (
        dir.join("e.safetensors"),
        dir.join("png"),
        dir.join("r.html"),
    );
    let (o, p, h) = (
        out.display().to_string(),
        png.display().to_string(),
        html.display().to_string(),
    );
    let (stdout, stderr) = ok(&[
        "explain",
        "--model",
        &tiny_model(),
        "--image",
        &wide_image(),
        "--caption",
        "a dog",
        "--caption",
        "a cat",
        "--span",
        "1:2",
        "--box",
        "5,5,30,25",
        "--steps",
        "2",
        "--out",
        &o,
        "--png",
        &p,
        "--html",
        &h,
        "--json",
    ]);
    // stdout stays one JSON object.
    let _: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let mut files = vec![out.clone(), html.clone()];
    for c in 1..=2 {
        for f in [format!("caption{c}.png"), format!("caption{c}_span1-2.png")] {
            files.push(png.join(f));
        }
        files.push(png.join(format!("caption{c}_box1.png")));
    }
    for f in &files {
        assert!(f.is_file(), "{} missing", f.display());
        assert!(
            stderr
                .lines()
                .any(|l| l == format!("wrote {}", f.display())),
            "no `wrote {}` in {stderr}",
            f.display()
        );
    }
    assert!(!png.join("caption0.png").exists());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn pictures_fit_their_titles_and_show_the_box() {
    let dir = temp_dir("png");
    let p = dir.display().to_string();
    let caption = "a running shoe next to a boot and a pair of trousers beside a blouse";
    ok(&[
        "explain",
        "--image",
        &mosaic(),
        "--caption",
        caption,
        "--span",
        "2:13",
        "--box",
        "0,8,31,25",
        "--png",
        &p,
    ]);
    // 64 px shown ×4 plus the colour bar: the title wraps instead of widening the picture.
    for f in ["caption1.png", "caption1_span2-13.png"] {
        let img = image::open(dir.join(f)).unwrap().to_rgb8();
        assert_eq!(img.width(), 4 * 64 + 96, "{f}");
    }
    // The box strip shows the image with the box drawn in yellow.
    let strip = image::open(dir.join("caption1_box1.png"))
        .unwrap()
        .to_rgb8();
    let yellow = strip.pixels().filter(|p| p.0 == [255, 214, 0]).count();
    assert!(yellow > 100, "{yellow} outline pixels");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_builtin_model_is_named_and_a_crop_is_stated() {
    let (text, _) = ok(&["explain", "--image", &mosaic(), "--caption", "a boot"]);
    let first = text.lines().next().unwrap();
    assert_eq!(first, "model: the built-in Fashion-MNIST model (hf)");
    assert!(
        !text.contains(".cache") && !text.contains("pairlens-builtin-"),
        "{text}"
    );
    assert!(
        !text.contains("centre-cropped"),
        "a 64×64 image is not cropped: {text}"
    );
    let (json, _) = ok(&[
        "explain",
        "--image",
        &mosaic(),
        "--caption",
        "a boot",
        "--json",
    ]);
    let j: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(j["model"], "built-in");
    assert_eq!(j["preprocessing"]["cropped"], false);
    let (json, _) = ok(&[
        "embed",
        "--image",
        &mosaic(),
        "--caption",
        "a boot",
        "--json",
    ]);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&json).unwrap()["model"],
        "built-in"
    );

    let m = tiny_model();
    let args = [
        "explain",
        "--model",
        &m,
        "--image",
        &wide_image(),
        "--caption",
        "a dog",
    ];
    let (text, _) = ok(&args);
    assert!(
        text.contains(
            "centre-cropped: resized to 46×32, then 32×32 cut at (7, 0); the model sees x \
             6.7–37.3, y 0.0–30.0 px of the original"
        ),
        "{text}"
    );
    let mut with_json = args.to_vec();
    with_json.push("--json");
    let (json, _) = ok(&with_json);
    let pre = &serde_json::from_str::<serde_json::Value>(&json).unwrap()["preprocessing"];
    assert_eq!(pre["cropped"], true);
    assert_eq!(pre["resized"], serde_json::json!([46, 32]));
    assert_eq!(pre["crop_offset"], serde_json::json!([7, 0]));
}

#[test]
fn help_gives_the_layer_range_and_steps_are_capped() {
    let (help, _) = ok(&["explain", "--help"]);
    let (text, image) = pairlens::builtin::layers();
    assert!(
        help.contains(&format!(
            "0 ≤ L < the number of text blocks (the built-in model has {text}"
        )) && help.contains(&format!(
            "0 ≤ L < the number of image blocks (the built-in model has {image}"
        )),
        "{help}"
    );
    assert!(help.contains("1 ≤ N ≤ 1000"), "{help}");

    let out = pairlens(&[
        "explain",
        "--image",
        &mosaic(),
        "--caption",
        "a boot",
        "--steps",
        "1000000",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("steps 1000000 is too many: at most 1000"),
        "{err}"
    );

    // Large but allowed below the last block: a warning saying what it costs.
    let m = tiny_model();
    let (_, stderr) = ok(&[
        "explain",
        "--model",
        &m,
        "--image",
        &wide_image(),
        "--caption",
        "a dog",
        "--image-layer",
        "0",
        "--steps",
        "51",
    ]);
    assert!(
        stderr.contains("warning: N = 51 path points at image layer 0") && stderr.contains("6×"),
        "{stderr}"
    );
    let (_, stderr) = ok(&[
        "explain",
        "--image",
        &mosaic(),
        "--caption",
        "a boot",
        "--steps",
        "200",
    ]);
    assert!(
        !stderr.contains("warning"),
        "the last block is cheap at any N: {stderr}"
    );
}

#[test]
fn serve_listens_on_localhost() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_pairlens"))
        .args(["serve", "--addr", "localhost:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start pairlens serve");
    let mut line = String::new();
    let read = BufReader::new(child.stdout.take().unwrap()).read_line(&mut line);
    let _ = child.kill();
    let _ = child.wait();
    read.unwrap();
    assert!(
        line.starts_with("listening on http://127.0.0.1:"),
        "{line:?}"
    );

    let out = pairlens(&["serve", "--addr", "localhost"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("expected HOST:PORT"), "{err}");
}

#[test]
fn out_labels_every_reference_term() {
    let dir = temp_dir("out");
    let out = dir.join("e.safetensors");
    let o = out.display().to_string();
    let (json, _) = ok(&[
        "explain",
        "--model",
        &tiny_model(),
        "--image",
        &wide_image(),
        "--caption",
        "a dog",
        "--caption",
        "a cat",
        "--steps",
        "2",
        "--out",
        &o,
        "--json",
    ]);
    let j: serde_json::Value = serde_json::from_str(&json).unwrap();
    let tensors = candle_core::safetensors::load(&out, &candle_core::Device::Cpu).unwrap();
    for (k, c) in j["captions"].as_array().unwrap().iter().enumerate() {
        for group in ["reference_terms", "exclip_terms"] {
            let terms = c[group].as_object().unwrap();
            assert!(terms.len() >= 3);
            for (name, value) in terms {
                let key = format!("caption{}/{group}/{name}", k + 1);
                let t = tensors
                    .get(&key)
                    .unwrap_or_else(|| panic!("no tensor {key}"));
                let v: Vec<f32> = t.to_vec1().unwrap();
                assert_eq!(v.len(), 1, "{key}");
                assert!(
                    (v[0] as f64 - value.as_f64().unwrap()).abs() < 1e-6,
                    "{key}"
                );
            }
        }
    }
    assert!(
        !tensors.contains_key("caption1/reference_terms"),
        "the unlabelled vector is gone"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

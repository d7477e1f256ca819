//! `pairlens eval-grounding` end to end with the built-in model: examples/mosaics with each
//! method (rows, summary keys, chart, resume, the run.json guard), the COCO and Flickr30k
//! Entities fixtures, and errors.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("pairlens-grounding-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn pairlens(cache: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pairlens"))
        .args(args)
        .env("XDG_CACHE_HOME", cache)
        .output()
        .expect("run pairlens")
}

fn error_of(cache: &Path, args: &[&str]) -> String {
    let out = pairlens(cache, args);
    assert_eq!(
        out.status.code(),
        Some(1),
        "expected failure: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        err.starts_with("error: ") && !err.contains("panicked"),
        "{err}"
    );
    err
}

fn data_phrases(lines: usize) -> usize {
    let text = std::fs::read_to_string(repo().join("examples/mosaics/data.jsonl")).unwrap();
    text.lines()
        .take(lines)
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["phrases"]
                .as_array()
                .unwrap()
                .len()
        })
        .sum()
}

#[test]
fn two_mosaics_then_resume() {
    let dir = temp_dir("e2e");
    let cache = dir.join("cache");
    let out = dir.join("out");
    let data = repo().join("examples/mosaics/data.jsonl");
    let (d, o) = (data.to_str().unwrap(), out.to_str().unwrap());
    let run = |extra: &[&str]| {
        let mut args = vec!["eval-grounding", "--data", d, "--out", o, "--steps", "3"];
        args.extend_from_slice(extra);
        let r = pairlens(&cache, &args);
        assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
        String::from_utf8(r.stdout).unwrap()
    };
    let table = run(&["--limit", "2"]);
    assert!(
        table.contains("ALL") && table.contains("2 image-caption pairs explained"),
        "{table}"
    );
    let csv = std::fs::read_to_string(out.join("results.csv")).unwrap();
    let rows: Vec<&str> = csv.lines().collect();
    assert!(rows[0].starts_with("item,image,phrase,class,text,"));
    assert_eq!(rows.len() - 1, data_phrases(2));
    assert!(
        rows[1].starts_with("00000.png,00000.png,0,sneaker,a running shoe,1,4,")
            && rows[1].ends_with(",pairlens"),
        "{}",
        rows[1]
    );
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("summary.json")).unwrap()).unwrap();
    for k in [
        "method",
        "data",
        "model",
        "settings",
        "definitions",
        "this_run",
        "summary",
    ] {
        assert!(summary.get(k).is_some(), "summary.json lacks {k}");
    }
    let s = &summary["summary"];
    assert_eq!(s["images"], 2);
    assert_eq!(
        s["overall"]["phrases"].as_u64().unwrap() as usize,
        data_phrases(2)
    );
    for k in ["pointing_game", "box_mass", "reverse_hit", "span_share"] {
        assert!(s["overall"][k]["ci95"].is_array(), "{k}");
    }
    assert!(
        s["per_class"]["sneaker"]["pointing_game"]["n"]
            .as_u64()
            .unwrap()
            >= 1
    );
    let png = image::open(out.join("per_class.png")).unwrap();
    assert!(png.width() >= 420);

    assert_eq!(summary["method"], "pairlens");
    assert_eq!(summary["settings"]["steps"], 3);
    let run_json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("run.json")).unwrap()).unwrap();
    assert_eq!(run_json["method"], "pairlens");

    // Resume: the two done images are skipped, the other two added.
    let table = run(&[]);
    assert!(
        table.contains("2 image-caption pairs explained") && table.contains("2 already in"),
        "{table}"
    );
    let csv2 = std::fs::read_to_string(out.join("results.csv")).unwrap();
    assert!(csv2.starts_with(&csv), "rows appended, old ones kept");
    assert_eq!(csv2.lines().count() - 1, data_phrases(4));
    let table = run(&[]);
    assert!(
        table.contains("0 image-caption pairs explained") && table.contains("4 already in"),
        "{table}"
    );
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("summary.json")).unwrap()).unwrap();
    assert_eq!(
        summary["summary"]["images"], 4,
        "summary recomputed from the whole CSV"
    );

    // --force starts over.
    // Another method or other settings never mix into the same results.
    for other in [
        &["--method", "ig"][..],
        &["--steps", "4"][..],
        &["--image-layer", "0"][..],
    ] {
        let mut args = vec!["eval-grounding", "--data", d, "--out", o, "--steps", "3"];
        if other[0] == "--steps" {
            args.truncate(args.len() - 2);
        }
        args.extend_from_slice(other);
        let err = error_of(&cache, &args);
        assert!(
            err.contains("run.json") && err.contains("--force") && err.contains("another --out"),
            "{err}"
        );
    }
    let table = run(&["--limit", "1", "--force"]);
    assert!(
        table.contains("1 image-caption pairs explained") && table.contains("0 already in"),
        "{table}"
    );
    assert_eq!(
        std::fs::read_to_string(out.join("results.csv"))
            .unwrap()
            .lines()
            .count()
            - 1,
        data_phrases(1)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn clear_errors() {
    let dir = temp_dir("errors");
    let cache = dir.join("cache");
    let o = dir.join("out");
    let o = o.to_str().unwrap();
    let write = |name: &str, text: &str| {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p.to_str().unwrap().to_string()
    };
    let err = error_of(
        &cache,
        &[
            "eval-grounding",
            "--data",
            "/nonexistent/data.jsonl",
            "--out",
            o,
        ],
    );
    assert!(err.contains("/nonexistent/data.jsonl"), "{err}");
    let bad = write(
        "bad.jsonl",
        "{\"image\": \"a.png\", \"caption\": \"a bag\", \"phrases\": []}\nnot json\n",
    );
    let err = error_of(&cache, &["eval-grounding", "--data", &bad, "--out", o]);
    assert!(err.contains("bad.jsonl") && err.contains("line 2"), "{err}");
    let missing = write("missing.jsonl", "{\"image\": \"nope.png\", \"caption\": \"a bag\", \"phrases\": [{\"span\": [1, 3], \"class\": \"bag\", \"boxes\": [[0, 0, 5, 5]]}]}\n");
    let err = error_of(
        &cache,
        &["eval-grounding", "--data", &missing, "--out", o, "--force"],
    );
    assert!(err.contains("nope.png") && err.contains("line 1"), "{err}");
    std::fs::copy(
        repo().join("examples/mosaics/00000.png"),
        dir.join("00000.png"),
    )
    .unwrap();
    let span = write("span.jsonl", "{\"image\": \"00000.png\", \"caption\": \"a bag\", \"phrases\": [{\"span\": [1, 9], \"class\": \"bag\", \"boxes\": [[0, 0, 5, 5]]}]}\n");
    let err = error_of(
        &cache,
        &["eval-grounding", "--data", &span, "--out", o, "--force"],
    );
    assert!(
        err.contains("span [1, 9]") && err.contains("out of range") && err.contains("line 1"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn baselines_on_two_mosaics() {
    let dir = temp_dir("baselines");
    let cache = dir.join("cache");
    let data = repo().join("examples/mosaics/data.jsonl");
    for method in ["ig", "similarity"] {
        let out = dir.join(method);
        let args = [
            "eval-grounding",
            "--data",
            data.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--method",
            method,
            "--steps",
            "3",
            "--limit",
            "2",
        ];
        let r = pairlens(&cache, &args);
        assert!(
            r.status.success(),
            "{method}: {}",
            String::from_utf8_lossy(&r.stderr)
        );
        let table = String::from_utf8(r.stdout).unwrap();
        assert!(
            table.contains(&format!("method: {method}")) && table.contains("ALL"),
            "{table}"
        );
        let csv = std::fs::read_to_string(out.join("results.csv")).unwrap();
        let rows: Vec<&str> = csv.lines().skip(1).collect();
        assert_eq!(rows.len(), data_phrases(2), "{method}");
        for row in &rows {
            let f: Vec<&str> = row.split(',').collect();
            assert_eq!(f[12], method);
            let share = f[9].parse::<f32>().unwrap();
            assert!((0.0..=1.0).contains(&share), "{row}");
            if method == "ig" {
                assert!(
                    f[10].is_empty() && f[11].is_empty(),
                    "ig has no reverse direction: {row}"
                );
            } else {
                assert!(f[10] == "0" || f[10] == "1", "{row}");
            }
        }
        let summary: serde_json::Value =
            serde_json::from_slice(&std::fs::read(out.join("summary.json")).unwrap()).unwrap();
        assert_eq!(summary["method"], method);
        let rev = &summary["summary"]["overall"]["reverse_hit"];
        if method == "ig" {
            assert_eq!(rev["n"], 0);
            assert!(
                rev["rate"].is_null() && table.contains("not defined"),
                "{rev}"
            );
            assert!(summary["settings"].get("text_layer").is_none());
        } else {
            assert_eq!(rev["n"].as_u64().unwrap() as usize, data_phrases(2));
        }
        assert!(image::open(out.join("per_class.png")).unwrap().width() >= 420);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn coco_and_flickr30k_fixtures() {
    let dir = temp_dir("formats");
    let cache = dir.join("cache");
    let fx = repo().join("fixtures/grounding");
    let s = |p: PathBuf| p.to_str().unwrap().to_string();
    let coco = fx.join("coco");
    let out = s(dir.join("coco"));
    let args = [
        "eval-grounding",
        "--format",
        "coco",
        "--annotations",
        &s(coco.join("instances_tiny2017.json")),
        "--captions",
        &s(coco.join("captions_tiny2017.json")),
        "--images",
        &s(coco.join("images")),
        "--out",
        &out,
        "--steps",
        "2",
    ];
    let r = pairlens(&cache, &args);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let table = String::from_utf8(r.stdout).unwrap();
    assert!(
        table.contains("4 image-caption pairs explained")
            && table.contains("skipped: 2 captions with no linked category"),
        "{table}"
    );
    let csv = std::fs::read_to_string(dir.join("coco/results.csv")).unwrap();
    let rows: Vec<&str> = csv.lines().skip(1).collect();
    assert_eq!(rows.len(), 7, "{csv}");
    assert!(
        rows[0].starts_with("11,000000000139.jpg,0,person,men,2,3,"),
        "{}",
        rows[0]
    );
    assert!(
        rows.iter()
            .any(|r| r.starts_with("21,000000000285.jpg,0,teddy bear,teddy bear,")),
        "{csv}"
    );
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("coco/summary.json")).unwrap()).unwrap();
    assert_eq!(
        summary["skipped_by_reader"]["captions with no linked category"],
        2
    );
    assert_eq!(summary["summary"]["per_class"]["person"]["phrases"], 1);

    let fl = fx.join("flickr30k");
    let out = s(dir.join("flickr"));
    let args = [
        "eval-grounding",
        "--format",
        "flickr30k",
        "--sentences",
        &s(fl.join("Sentences")),
        "--annotations",
        &s(fl.join("Annotations")),
        "--images",
        &s(fl.join("images")),
        "--out",
        &out,
        "--method",
        "similarity",
    ];
    let r = pairlens(&cache, &args);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let csv = std::fs::read_to_string(dir.join("flickr/results.csv")).unwrap();
    let rows: Vec<&str> = csv.lines().skip(1).collect();
    assert_eq!(rows.len(), 7, "{csv}");
    assert!(
        rows[0].starts_with("1000092795#0,1000092795.jpg,0,people,A man,1,3,"),
        "{}",
        rows[0]
    );
    assert!(
        rows.iter()
            .any(|r| r.starts_with("2000000001#0,2000000001.jpg,0,animals,A brown dog,1,4,")),
        "{csv}"
    );
    // --ids: one image.
    let mut with_ids = args.to_vec();
    let ids = s(fl.join("ids.txt"));
    with_ids.extend_from_slice(&["--ids", &ids, "--force"]);
    let r = pairlens(&cache, &with_ids);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    assert_eq!(
        std::fs::read_to_string(dir.join("flickr/results.csv"))
            .unwrap()
            .lines()
            .count(),
        2
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn format_flags_and_old_outputs() {
    let dir = temp_dir("flags");
    let cache = dir.join("cache");
    let o = dir.join("out");
    let o = o.to_str().unwrap();
    let err = error_of(
        &cache,
        &[
            "eval-grounding",
            "--format",
            "coco",
            "--captions",
            "c.json",
            "--out",
            o,
        ],
    );
    assert!(
        err.contains("--format coco needs --annotations, --captions, --images"),
        "{err}"
    );
    let err = error_of(
        &cache,
        &[
            "eval-grounding",
            "--format",
            "coco",
            "--data",
            "d.jsonl",
            "--out",
            o,
        ],
    );
    assert!(
        err.contains("--data does not apply to --format coco"),
        "{err}"
    );
    let err = error_of(&cache, &["eval-grounding", "--out", o]);
    assert!(err.contains("--format jsonl needs --data"), "{err}");
    let r = pairlens(
        &cache,
        &[
            "eval-grounding",
            "--data",
            "x.jsonl",
            "--method",
            "gradcam",
            "--out",
            o,
        ],
    );
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(
        !r.status.success() && err.contains("gradcam") && err.contains("similarity"),
        "{err}"
    );
    // results.csv with no run.json (an older pairlens): refused, not mixed.
    std::fs::create_dir_all(o).unwrap();
    std::fs::write(dir.join("out/results.csv"), "image,phrase,class\n").unwrap();
    let data = repo().join("examples/mosaics/data.jsonl");
    let err = error_of(
        &cache,
        &[
            "eval-grounding",
            "--data",
            data.to_str().unwrap(),
            "--out",
            o,
            "--limit",
            "1",
        ],
    );
    assert!(
        err.contains("results.csv") && err.contains("--force"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A SigLIP model on the COCO fixture, with pairlens and the IG baseline: phrases are tokenized
/// by the model's SentencePiece tokenizer (spans start at the first word: no start token), the
/// heatmaps cover the patches alone. The mosaic JSONL (the built-in tokenizer's spans) and the
/// similarity baseline (it needs a class token and a projection) are refused by name.
#[test]
fn siglip_on_coco() {
    let dir = temp_dir("siglip");
    let cache = dir.join("cache");
    let s = |p: PathBuf| p.to_str().unwrap().to_string();
    let coco = repo().join("fixtures/grounding/coco");
    let model = s(repo().join("fixtures/models/siglip-a"));
    for method in ["pairlens", "ig"] {
        let out = s(dir.join(method));
        let args = [
            "eval-grounding",
            "--model",
            &model,
            "--format",
            "coco",
            "--annotations",
            &s(coco.join("instances_tiny2017.json")),
            "--captions",
            &s(coco.join("captions_tiny2017.json")),
            "--images",
            &s(coco.join("images")),
            "--out",
            &out,
            "--steps",
            "2",
            "--method",
            method,
        ];
        let r = pairlens(&cache, &args);
        assert!(
            r.status.success(),
            "{method}: {}",
            String::from_utf8_lossy(&r.stderr)
        );
        let csv = std::fs::read_to_string(dir.join(method).join("results.csv")).unwrap();
        let rows: Vec<&str> = csv.lines().skip(1).collect();
        // The tiny vocabulary splits some words into pieces that do not line up when a phrase is
        // tokenized apart: those phrases are skipped (and counted), 4 of 7 remain.
        assert_eq!(rows.len(), 4, "{method}: {csv}");
        // "a dining table …": the phrase starts at row 1, after "a" (no start token).
        assert!(
            rows[0].starts_with("12,000000000139.jpg,0,dining table,Dining Table,1,5,"),
            "{}",
            rows[0]
        );
    }
    let jsonl = s(repo().join("examples/mosaics/data.jsonl"));
    let err = error_of(
        &cache,
        &["eval-grounding", "--model", &model, "--data", &jsonl],
    );
    assert!(
        err.contains("built-in CLIP tokenizer") && err.contains("--format coco"),
        "{err}"
    );
    let err = error_of(
        &cache,
        &[
            "eval-grounding",
            "--model",
            &model,
            "--format",
            "coco",
            "--annotations",
            &s(coco.join("instances_tiny2017.json")),
            "--captions",
            &s(coco.join("captions_tiny2017.json")),
            "--images",
            &s(coco.join("images")),
            "--out",
            &s(dir.join("sim")),
            "--method",
            "similarity",
        ],
    );
    assert!(
        err.contains("similarity baseline") && err.contains("SigLIP"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

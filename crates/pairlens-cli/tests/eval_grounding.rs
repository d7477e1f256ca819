//! `pairlens eval-grounding` end to end with the built-in model on examples/mosaics: rows,
//! summary keys, chart, resume and errors.

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
        table.contains("ALL") && table.contains("2 images explained"),
        "{table}"
    );
    let csv = std::fs::read_to_string(out.join("results.csv")).unwrap();
    let rows: Vec<&str> = csv.lines().collect();
    assert!(rows[0].starts_with("image,phrase,class,"));
    assert_eq!(rows.len() - 1, data_phrases(2));
    assert!(
        rows[1].starts_with("00000.png,0,sneaker,1,4,"),
        "{}",
        rows[1]
    );
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("summary.json")).unwrap()).unwrap();
    for k in [
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

    // Resume: the two done images are skipped, the other two added.
    let table = run(&[]);
    assert!(
        table.contains("2 images explained") && table.contains("2 already in"),
        "{table}"
    );
    let csv2 = std::fs::read_to_string(out.join("results.csv")).unwrap();
    assert!(csv2.starts_with(&csv), "rows appended, old ones kept");
    assert_eq!(csv2.lines().count() - 1, data_phrases(4));
    let table = run(&[]);
    assert!(
        table.contains("0 images explained") && table.contains("4 already in"),
        "{table}"
    );
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("summary.json")).unwrap()).unwrap();
    assert_eq!(
        summary["summary"]["images"], 4,
        "summary recomputed from the whole CSV"
    );

    // --force starts over.
    let table = run(&["--limit", "1", "--force"]);
    assert!(
        table.contains("1 images explained") && table.contains("0 already in"),
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

//! `pairlens compare-grounding` on two small hand-written eval-grounding summaries.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::{json, Value};

fn dir(name: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("compare-grounding-{name}"));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn pairlens(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pairlens"))
        .args(args)
        .output()
        .expect("run pairlens")
}

fn group(n: u64, pg: (f64, f64, f64), bm: (f64, f64, f64)) -> Value {
    json!({
        "phrases": n,
        "pointing_game": {"hits": (pg.0 * n as f64).round() as u64, "n": n, "rate": pg.0,
                          "ci95": [pg.1, pg.2]},
        "box_mass": {"n": n, "mean": bm.0, "ci95": [bm.1, bm.2]},
        "reverse_hit": {"hits": 0, "n": 0, "rate": null, "ci95": [null, null]},
        "span_share": {"n": 0, "mean": null, "ci95": [null, null]},
    })
}

/// summary.json as eval-grounding writes it (the summary under `summary`).
fn write_summary(d: &Path, per_class: Value, overall: Value) {
    let doc = json!({
        "method": "pairlens",
        "settings": {"text_layer": 3, "image_layer": 3, "steps": 10},
        "summary": {"images": 10, "overall": overall, "per_class": per_class},
    });
    std::fs::write(d.join("summary.json"), doc.to_string()).unwrap();
}

#[test]
fn compares_per_class_and_marks_disjoint_intervals() {
    let (b, a, out) = (dir("before"), dir("after"), dir("out"));
    write_summary(
        &b,
        json!({
            "bag": group(40, (0.20, 0.10, 0.35), (0.30, 0.25, 0.35)),
            "coat": group(50, (0.60, 0.46, 0.72), (0.50, 0.45, 0.55)),
        }),
        group(90, (0.42, 0.32, 0.52), (0.41, 0.37, 0.45)),
    );
    // A class only the second run saw (sandal) gets n 0 before.
    write_summary(
        &a,
        json!({
            "bag": group(40, (0.70, 0.55, 0.82), (0.32, 0.27, 0.37)),
            "coat": group(50, (0.58, 0.44, 0.71), (0.20, 0.15, 0.25)),
            "sandal": group(5, (1.0, 0.57, 1.0), (0.9, 0.8, 1.0)),
        }),
        group(95, (0.64, 0.54, 0.73), (0.30, 0.26, 0.34)),
    );
    let o = pairlens(&[
        "compare-grounding",
        "--before",
        b.to_str().unwrap(),
        "--after",
        a.to_str().unwrap(),
        "--label-before",
        "base",
        "--label-after",
        "fine-tuned",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let md = std::fs::read_to_string(out.join("comparison.md")).unwrap();
    assert_eq!(String::from_utf8_lossy(&o.stdout), md);
    let line = |c: &str| {
        md.lines()
            .find(|l| l.starts_with(&format!("| {c} |")))
            .unwrap_or_else(|| panic!("no row for {c}:\n{md}"))
            .to_string()
    };
    // bag: pointing 0.20 → 0.70, disjoint: marked up; box mass +0.02, overlapping: plain.
    let bag = line("bag");
    assert!(
        bag.contains("0.200 [0.100, 0.350] → 0.700 [0.550, 0.820]"),
        "{bag}"
    );
    assert!(bag.contains("**+0.500** ▲"), "{bag}");
    assert!(bag.contains("| +0.020 |"), "{bag}");
    // coat: pointing −0.02 plain; box mass 0.50 → 0.20 disjoint: marked down.
    let coat = line("coat");
    assert!(coat.contains("| -0.020 |"), "{coat}");
    assert!(coat.contains("**-0.300** ▼"), "{coat}");
    // Undefined reverse direction: dashes, no numbers.
    assert!(coat.contains("– → –"), "{coat}");
    let sandal = line("sandal");
    assert!(sandal.contains("| 0 / 5 |"), "{sandal}");
    let all = line("**ALL**");
    assert!(
        all.contains("| 90 / 95 |") && all.contains("**+0.220** ▲"),
        "{all}"
    );
    assert!(md.contains("base") && md.contains("fine-tuned"));
    assert!(!md.contains("differ in method"), "{md}");

    let js: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("comparison.json")).unwrap())
            .unwrap();
    let rows = js["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 4);
    assert_eq!(rows[0]["class"], "bag");
    assert!((rows[0]["pointing_game"]["delta"].as_f64().unwrap() - 0.5).abs() < 1e-9);
    assert_eq!(rows[0]["pointing_game"]["intervals_disjoint"], true);
    assert_eq!(rows[0]["box_mass"]["intervals_disjoint"], false);
    assert!(rows[2]["before"].is_null());

    let png = image::open(out.join("comparison.png")).unwrap().to_rgb8();
    assert!(png.width() >= 200 && png.height() >= 200);
    // Both bar colours are drawn.
    let has = |c: [u8; 3]| png.pixels().any(|p| p.0 == c);
    assert!(has([160, 190, 225]) && has([32, 74, 135]));

    // Nothing overwritten without --force.
    let again = pairlens(&[
        "compare-grounding",
        "--before",
        b.to_str().unwrap(),
        "--after",
        a.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("--force"));
}

#[test]
fn bad_summaries_are_named() {
    let (good, bad, out) = (dir("good"), dir("bad"), dir("bad-out"));
    write_summary(
        &good,
        json!({"bag": group(4, (0.5, 0.2, 0.8), (0.5, 0.4, 0.6))}),
        group(4, (0.5, 0.2, 0.8), (0.5, 0.4, 0.6)),
    );
    std::fs::write(bad.join("summary.json"), r#"{"summary": {"overall": {}}}"#).unwrap();
    let run = |before: &Path| {
        pairlens(&[
            "compare-grounding",
            "--before",
            before.to_str().unwrap(),
            "--after",
            good.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ])
    };
    let o = run(&bad);
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && e.contains("summary.json") && e.contains("overall"),
        "{e}"
    );
    let o = run(&out.join("missing"));
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && e.contains("missing"), "{e}");
}

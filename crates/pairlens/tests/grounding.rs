//! Grounding metrics on hand-computed cases, the JSONL reader on fixtures/grounding, and the
//! CSV/summary round trip.

use std::path::{Path, PathBuf};

use pairlens::grounding::report::read_csv;
use pairlens::grounding::*;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures/grounding")
        .join(name)
}

fn close(a: f64, b: f64, tol: f64) {
    assert!((a - b).abs() <= tol, "{a} vs {b}");
}

#[test]
fn pointing_game_centre_of_the_top_patch() {
    // 2×3 grid of 10-px patches; maximum at (row 1, col 2): centre (25, 15).
    let h = [0.1, -3.0, 0.2, 0.0, 0.5, 0.9];
    assert!(pointing_game(&h, (2, 3), 10, &[(20.0, 10.0, 30.0, 20.0)]).unwrap());
    // Box covering most of the patch but not its centre: a miss.
    assert!(!pointing_game(&h, (2, 3), 10, &[(16.0, 10.0, 24.9, 20.0)]).unwrap());
    // Second box hits.
    assert!(pointing_game(
        &h,
        (2, 3),
        10,
        &[(0.0, 0.0, 5.0, 5.0), (24.0, 14.0, 26.0, 16.0)]
    )
    .unwrap());
    // Exclusive end: a box ending exactly at the centre misses.
    assert!(!pointing_game(&h, (2, 3), 10, &[(20.0, 10.0, 25.0, 20.0)]).unwrap());
    // Large negative values are not the maximum.
    assert!(!pointing_game(&h, (2, 3), 10, &[(10.0, 0.0, 20.0, 10.0)]).unwrap());
    assert!(pointing_game(&h, (3, 3), 10, &[]).is_err());
}

#[test]
fn box_mass_partial_overlap_and_union() {
    // 2×2 grid of 10-px patches; box covers patch 0 fully and half of patch 1.
    let w = union_weights((2, 2), 10, &[(0.0, 0.0, 15.0, 10.0)]).unwrap();
    assert_eq!(w, vec![1.0, 0.5, 0.0, 0.0]);
    // Positive mass 1 + 2 + 1 = 4 (the −5 ignored); inside: 1·1 + 0.5·2 = 2.
    let h = [1.0, 2.0, -5.0, 1.0];
    close(box_mass(&h, &w).unwrap().unwrap() as f64, 0.5, 1e-6);
    // Overlapping boxes count once: two copies of the same box give the same weights.
    let w2 = union_weights(
        (2, 2),
        10,
        &[(0.0, 0.0, 15.0, 10.0), (5.0, 0.0, 15.0, 10.0)],
    )
    .unwrap();
    assert_eq!(w2, w);
    // Two boxes in one patch overlapping in a 5×5 square: 50 + 50 − 25 = 75 px² of 100.
    let w3 = union_weights((1, 1), 10, &[(0.0, 0.0, 10.0, 5.0), (5.0, 0.0, 10.0, 10.0)]).unwrap();
    close(w3[0] as f64, 0.75, 1e-6);
    // Clipped to the input, outside → error; no positive mass → None.
    assert!(union_weights((2, 2), 10, &[(30.0, 30.0, 40.0, 40.0)]).is_err());
    assert_eq!(box_mass(&[-1.0, 0.0, -2.0, -3.0], &w).unwrap(), None);
    assert!(box_mass(&[1.0], &w).is_err());
}

#[test]
fn reverse_direction_hit_miss_and_share() {
    // Tokens: SOT a bag and a boot EOT
    let s = [0.5, 0.1, 0.4, -0.2, 0.3, 0.2, -1.0];
    let spans = [(1, 3), (4, 6)];
    // Span sums: 0.5 vs 0.5 → a tie is a miss for both.
    let r = reverse_direction(&s, &spans, 0).unwrap();
    assert!(!r.hit);
    // Positive mass: 0.5+0.1+0.4+0.3+0.2 = 1.5; on span 0: 0.5.
    close(r.span_share.unwrap() as f64, 0.5 / 1.5, 1e-6);
    let s2 = [0.0, 0.1, 0.4, 0.0, 0.3, 0.3, 0.0];
    assert!(!reverse_direction(&s2, &spans, 0).unwrap().hit);
    let r = reverse_direction(&s2, &spans, 1).unwrap();
    assert!(r.hit);
    close(r.span_share.unwrap() as f64, 0.6 / 1.1, 1e-6);
    assert_eq!(
        reverse_direction(&[-1.0; 7], &spans, 0).unwrap().span_share,
        None
    );
    assert!(reverse_direction(&s, &[(1, 9)], 0).is_err());
    // A single phrase is trivially the top span.
    assert!(reverse_direction(&s, &[(3, 4)], 0).unwrap().hit);
}

#[test]
fn wilson_and_t_intervals_known_values() {
    // Reference values: statsmodels proportion_confint(method="wilson").
    let (lo, hi) = wilson(8, 10);
    close(lo, 0.490_162, 1e-5);
    close(hi, 0.943_318, 1e-5);
    let (lo, hi) = wilson(0, 10);
    close(lo, 0.0, 1e-12);
    close(hi, 0.277_533, 1e-5);
    let (lo, hi) = wilson(5, 10);
    close(lo, 0.236_593, 1e-5);
    close(hi, 0.763_407, 1e-5);
    assert_eq!(wilson(0, 0), (0.0, 1.0));
    // Mean 2.5, sd 1.290994, n 4, t(3) = 3.182 → half width 2.054.
    let (m, lo, hi) = mean_ci(&[1.0, 2.0, 3.0, 4.0]);
    close(m, 2.5, 1e-12);
    close(hi - m, 3.182 * 1.290_994 / 2.0, 1e-4);
    close(m - lo, hi - m, 1e-12);
    close(metrics::t975(60), 2.000_298, 2e-4);
    close(metrics::t975(1000), 1.962_339, 1e-4);
    assert!(mean_ci(&[1.0]).1.is_nan());
}

#[test]
fn jsonl_reader_fixture_and_errors() {
    let items = read_jsonl(&fixture("small.jsonl")).unwrap();
    assert_eq!(items.len(), 2);
    assert_eq!(items[0].caption, "a bag and a boot");
    assert_eq!(items[0].phrases[1].span, (4, 6));
    assert_eq!(items[0].phrases[1].class, "ankle_boot");
    assert_eq!(
        items[0].phrases[1].boxes,
        vec![[10.0, 0.0, 20.0, 10.0], [0.0, 10.0, 5.0, 20.0]]
    );
    assert_eq!(items[0].phrases[1].text.as_deref(), Some("a boot"));
    assert!(
        items[1].origin.ends_with("small.jsonl line 3"),
        "blank line skipped, numbering kept: {}",
        items[1].origin
    );
    assert_eq!(items[1].phrases[0].boxes[0], [2.5, 3.0, 7.0, 9.0]);
    assert_eq!(
        items[1].id, "b.png",
        "one caption per mosaic: the image is the key"
    );
    assert!(items[1].image_path.ends_with("fixtures/grounding/b.png"));

    let err = read_jsonl(&fixture("bad_line.jsonl"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("bad_line.jsonl") && err.contains("line 2"),
        "{err}"
    );
    let err = read_jsonl(&fixture("empty_span.jsonl"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("line 1") && err.contains("span [3, 3]"),
        "{err}"
    );
    let err = read_jsonl(&fixture("missing.jsonl"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("missing.jsonl"), "{err}");
}

#[test]
fn csv_round_trip_and_summary() {
    let row = |image: &str, phrase, class: &str, p, m, r: Option<bool>| PhraseResult {
        item: format!("{image}#0"),
        image: image.into(),
        phrase,
        class: class.into(),
        text: "a \"bag\", here".into(),
        span: (1, 3),
        score: 0.5,
        pointing_hit: p,
        box_mass: m,
        reverse_hit: r,
        span_share: r.map(|_| 0.25),
        method: "pairlens".into(),
    };
    let rows = vec![
        row("x,\"y\".png", 0, "bag", true, Some(0.5), Some(true)),
        row("a.png", 1, "bag", false, None, Some(false)),
        row("a.png", 0, "shirt", true, Some(0.75), None),
    ];
    let dir = std::env::temp_dir().join(format!("pairlens-grounding-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("results.csv");
    let text: String = std::iter::once(report::CSV_HEADER.to_string())
        .chain(rows.iter().map(|r| r.csv_row()))
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(&path, text + "\n").unwrap();
    assert_eq!(read_csv(&path).unwrap(), rows);
    let s = Summary::of(&rows);
    assert_eq!(s.images, 2);
    assert_eq!(s.overall.pointing_game.hits, 2);
    assert_eq!(s.overall.box_mass.n, 2);
    close(s.overall.box_mass.mean, 0.625, 1e-6);
    assert_eq!(s.per_class["bag"].phrases, 2);
    assert_eq!(s.per_class["bag"].reverse_hit.hits, 1);
    // An undefined reverse direction (image-side methods) is left out of the rate.
    assert_eq!(s.overall.reverse_hit.n, 2);
    assert_eq!(s.per_class["shirt"].reverse_hit.n, 0);
    assert!(s.per_class["shirt"].reverse_hit.rate.is_nan());
    assert!(s.table().contains("ALL"));
    let img = s.bar_chart("pairlens");
    assert!(img.width() >= 420);
    std::fs::write(&path, "image,wrong\n").unwrap();
    assert!(read_csv(&path).unwrap_err().to_string().contains("header"));
    let _ = std::fs::remove_dir_all(&dir);
}

//! The distribution-shift knobs of the mosaic generator (`class_weights`, `lone_classes`):
//! off, every mosaic is bit-identical to the generator before they existed (a fingerprint
//! taken with that binary); on, classes appear at the requested rates.

mod support;

use pairlens::data::export::jsonl_line;
use pairlens::data::{FashionMnist, MosaicConfig, MosaicGenerator, Split};

fn sample(split: Split) -> FashionMnist {
    FashionMnist::load(&support::fixtures().join("fashion_mnist_sample"), split).unwrap()
}

/// FNV-1a over each mosaic's data.jsonl line (with its newline) and its pixels.
fn fingerprint(gen: &MosaicGenerator, n: u64) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |bytes: &[u8]| {
        for &b in bytes {
            h = (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3);
        }
    };
    for i in 0..n {
        let m = gen.mosaic(i);
        eat((jsonl_line(&m) + "\n").as_bytes());
        eat(&m.pixels);
    }
    h
}

#[test]
fn default_config_draws_exactly_as_before() {
    // `pairlens mosaics --data fixtures/fashion_mnist_sample --split train --count 100
    // --seed 7` of the binary before the knobs (commit 2b9ee69), hashed from its data.jsonl
    // and PNGs in the same way.
    let gen = MosaicGenerator::new(sample(Split::Train), MosaicConfig::default(), 7);
    assert_eq!(fingerprint(&gen, 100), 0x20ee_b603_3613_d0ab);
    // The knobs spelled out as off.
    let explicit = MosaicConfig {
        class_weights: None,
        lone_classes: vec![],
        ..MosaicConfig::default()
    };
    let gen = MosaicGenerator::new(sample(Split::Train), explicit, 7);
    assert_eq!(fingerprint(&gen, 100), 0x20ee_b603_3613_d0ab);
}

fn class_counts(gen: &MosaicGenerator, n: u64) -> ([usize; 10], usize) {
    let mut counts = [0usize; 10];
    let mut total = 0;
    for i in 0..n {
        for it in gen.mosaic(i).items {
            counts[it.class as usize] += 1;
            total += 1;
        }
    }
    (counts, total)
}

#[test]
fn rare_classes_appear_at_their_weight() {
    // Coat (4) and bag (8) at weight 0.1, the rest at 1: each rare class is 0.1 / 8.2 of the
    // items (repeats copy an earlier item's class, which keeps every class's share).
    let mut w = [1.0f32; 10];
    w[4] = 0.1;
    w[8] = 0.1;
    let cfg = MosaicConfig {
        class_weights: Some(w),
        ..MosaicConfig::default()
    };
    let gen = MosaicGenerator::new(sample(Split::Train), cfg, 3);
    let (counts, total) = class_counts(&gen, 8000);
    let want = 0.1 / 8.2;
    for c in [4, 8] {
        let got = counts[c] as f64 / total as f64;
        // ~20 000 items: the standard error of a 1.2 % share is ~0.08 %.
        assert!(
            (got - want).abs() < 0.004,
            "class {c}: {got:.4} vs {want:.4}"
        );
    }
    let common = counts[0] as f64 / total as f64;
    assert!((common - 1.0 / 8.2).abs() < 0.012, "class 0: {common:.4}");
    // Deterministic like every mosaic.
    assert_eq!(gen.mosaic(17), gen.mosaic(17));
    // Zero weight: never drawn.
    let mut z = [1.0f32; 10];
    z[2] = 0.0;
    let gen = MosaicGenerator::new(
        sample(Split::Train),
        MosaicConfig {
            class_weights: Some(z),
            ..MosaicConfig::default()
        },
        3,
    );
    assert_eq!(class_counts(&gen, 500).0[2], 0);
}

#[test]
fn lone_classes_only_appear_alone() {
    let cfg = MosaicConfig {
        lone_classes: vec![1, 9],
        single_item_prob: 0.2,
        ..MosaicConfig::default()
    };
    let gen = MosaicGenerator::new(sample(Split::Train), cfg, 5);
    let mut alone = [0usize; 10];
    for i in 0..3000 {
        let m = gen.mosaic(i);
        for it in &m.items {
            if it.class == 1 || it.class == 9 {
                assert_eq!(m.items.len(), 1, "mosaic {i}: {:?}", m.caption);
                alone[it.class as usize] += 1;
            }
        }
    }
    assert!(alone[1] > 50 && alone[9] > 50, "{alone:?}");
}

#[test]
fn bad_shift_configs_are_errors() {
    let data = sample(Split::Train);
    let mut nan = [1.0f32; 10];
    nan[3] = f32::NAN;
    for cfg in [
        MosaicConfig {
            class_weights: Some(nan),
            ..MosaicConfig::default()
        },
        MosaicConfig {
            class_weights: Some([-1.0; 10]),
            ..MosaicConfig::default()
        },
        MosaicConfig {
            class_weights: Some([0.0; 10]),
            ..MosaicConfig::default()
        },
        MosaicConfig {
            lone_classes: vec![10],
            ..MosaicConfig::default()
        },
        MosaicConfig {
            lone_classes: (0..10).collect(),
            ..MosaicConfig::default()
        },
    ] {
        let err = MosaicGenerator::try_new(data.clone(), cfg.clone(), 0).unwrap_err();
        assert!(
            err.to_string().starts_with("mosaic config"),
            "{cfg:?}: {err}"
        );
    }
}

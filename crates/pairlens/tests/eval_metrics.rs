//! Retrieval and zero-shot metrics on hand-made similarity matrices: a perfect diagonal, known
//! permutations and ranks, and ties (which count against the model).

use pairlens::data::caption::CLASS_NOUNS;
use pairlens::data::idx::PIXELS;
use pairlens::data::mosaic::{resize_box, tight_box, MosaicConfig};
use pairlens::data::vocabulary;
use pairlens::eval::{
    class_prompts, place_like_generator, place_single, positive_ranks, predict, recall_at,
    retrieval_metrics, synonym_prompts, zero_shot_metrics, Placement,
};

fn transpose(sim: &[f32], n: usize) -> Vec<f32> {
    (0..n * n).map(|k| sim[(k % n) * n + k / n]).collect()
}

#[test]
fn perfect_diagonal_retrieves_everything() {
    let n = 7;
    let sim: Vec<f32> = (0..n * n)
        .map(|k| if k / n == k % n { 1.0 } else { 0.2 })
        .collect();
    let m = retrieval_metrics(&sim, n).unwrap();
    for r in [&m.image_to_text, &m.text_to_image] {
        assert_eq!((r.r1, r.r5, r.median_rank), (1.0, 1.0, 1.0));
    }
    assert_eq!(m.count, 7);
    assert!((m.chance.r1 - 1.0 / 7.0).abs() < 1e-12);
    assert!((m.chance.r5 - 5.0 / 7.0).abs() < 1e-12);
    assert_eq!(m.chance.median_rank, 4.0);
    // Chance R@5 never exceeds 1.
    let m = retrieval_metrics(&[1.0, 0.0, 0.0, 1.0], 2).unwrap();
    assert_eq!(m.chance.r5, 1.0);
}

#[test]
fn hand_computed_ranks_both_directions() {
    #[rustfmt::skip]
    let sim = [
        0.9, 0.1, 0.3,
        0.8, 0.5, 0.2,
        0.1, 0.7, 0.4,
    ];
    assert_eq!(positive_ranks(&sim, 3, true).unwrap(), vec![0, 1, 1]);
    assert_eq!(positive_ranks(&sim, 3, false).unwrap(), vec![0, 1, 0]);
    assert_eq!(
        positive_ranks(&sim, 3, false).unwrap(),
        positive_ranks(&transpose(&sim, 3), 3, true).unwrap()
    );
    let m = retrieval_metrics(&sim, 3).unwrap();
    assert!((m.image_to_text.r1 - 1.0 / 3.0).abs() < 1e-12);
    assert!((m.text_to_image.r1 - 2.0 / 3.0).abs() < 1e-12);
    assert_eq!(m.image_to_text.r5, 1.0);
    assert_eq!(m.image_to_text.median_rank, 2.0);
    assert_eq!(m.text_to_image.median_rank, 1.0);
}

#[test]
fn positives_at_known_ranks() {
    // Row i: exactly i other captions score above its own, the rest below.
    let n = 10;
    let mut sim = vec![-1.0f32; n * n];
    for i in 0..n {
        sim[i * n + i] = 0.0;
        for c in (0..n).filter(|&c| c != i).take(i) {
            sim[i * n + c] = 1.0;
        }
    }
    let ranks = positive_ranks(&sim, n, true).unwrap();
    assert_eq!(ranks, (0..n).collect::<Vec<_>>());
    assert_eq!(recall_at(&ranks, 1), 0.1);
    assert_eq!(recall_at(&ranks, 5), 0.5);
    assert_eq!(recall_at(&ranks, 10), 1.0);
    let m = retrieval_metrics(&sim, n).unwrap();
    assert_eq!(m.image_to_text.median_rank, 5.5);
}

#[test]
fn shuffled_captions_hit_only_fixed_points() {
    // A perfect model scored against captions shuffled by `perm`: caption perm[i] matches image i.
    let perm = [0usize, 2, 1, 3, 5, 6, 4, 7];
    let n = perm.len();
    let mut sim = vec![0.0f32; n * n];
    for (i, &p) in perm.iter().enumerate() {
        sim[i * n + p] = 1.0;
    }
    let fixed = perm.iter().enumerate().filter(|(i, &p)| *i == p).count();
    assert_eq!(fixed, 3);
    let m = retrieval_metrics(&sim, n).unwrap();
    for r in [&m.image_to_text, &m.text_to_image] {
        assert_eq!(r.r1, fixed as f64 / n as f64);
        // Misses tie with every other (zero) candidate, so they rank last: no R@5 hit either.
        assert_eq!(r.r5, fixed as f64 / n as f64);
    }
}

#[test]
fn ties_and_nans_count_against_the_model() {
    let n = 4;
    let constant = vec![0.5f32; n * n];
    assert_eq!(positive_ranks(&constant, n, true).unwrap(), vec![3; 4]);
    let m = retrieval_metrics(&constant, n).unwrap();
    assert_eq!((m.image_to_text.r1, m.text_to_image.r1), (0.0, 0.0));
    assert_eq!(m.image_to_text.r5, 1.0); // 4 candidates: everything is in the top 5.

    // One tie with the positive costs a place.
    let sim = [0.7, 0.7, 0.1, 0.2, 0.9, 0.0, 0.3, 0.3, 0.3];
    assert_eq!(positive_ranks(&sim, 3, true).unwrap(), vec![1, 0, 2]);
    // A NaN positive ranks last; a NaN candidate beats the positive.
    let sim = [f32::NAN, 0.1, 0.2, 0.9];
    assert_eq!(positive_ranks(&sim, 2, true).unwrap(), vec![1, 0]);
    assert_eq!(positive_ranks(&sim, 2, false).unwrap(), vec![1, 0]);
    let sim = [0.5, 0.1, f32::NAN, 0.9];
    assert_eq!(positive_ranks(&sim, 2, true).unwrap(), vec![0, 1]);
    assert_eq!(positive_ranks(&sim, 2, false).unwrap(), vec![1, 0]);

    assert!(positive_ranks(&[1.0, 2.0, 3.0], 2, true).is_err());
    assert_eq!(recall_at(&[], 1), 0.0);
}

#[test]
fn zero_shot_predictions_and_per_class_accuracy() {
    assert_eq!(predict(&[0.1, 0.9, 0.3], 1), 1);
    assert_eq!(predict(&[0.1, 0.9, 0.3], 2), 1);
    // A tie with the label goes to the other class; among other classes the lowest index wins.
    assert_eq!(predict(&[0.5, 0.5, 0.1], 0), 1);
    assert_eq!(predict(&[0.9, 0.5, 0.9, 0.9], 1), 0);
    assert_eq!(predict(&[0.9, 0.5, 0.9, 0.9], 2), 0);
    assert_eq!(predict(&[f32::NAN, 0.1, 0.2], 0), 2);
    // A NaN class beats the label; the prediction named is the best finite other class.
    assert_eq!(predict(&[0.3, f32::NAN, 0.2], 0), 2);

    // Items of classes 0, 0, 3, 3, 9: scores pick 0, 5, 3, 3 (tied with 4: wrong → 4), 9.
    let labels = [0u8, 0, 3, 3, 9];
    let mut scores = vec![0.0f32; labels.len() * 10];
    for (i, picks) in [vec![0], vec![5], vec![3], vec![3, 4], vec![9]]
        .iter()
        .enumerate()
    {
        for &c in picks {
            scores[i * 10 + c] = 1.0;
        }
    }
    let m = zero_shot_metrics(&scores, &labels).unwrap();
    assert_eq!(m.count, 5);
    assert!((m.accuracy - 3.0 / 5.0).abs() < 1e-12);
    assert_eq!(m.per_class[0].total, 2);
    assert_eq!(m.per_class[0].correct, 1);
    assert_eq!(m.per_class[0].accuracy, 0.5);
    assert_eq!(m.per_class[3].accuracy, 0.5);
    assert_eq!(m.per_class[9].accuracy, 1.0);
    assert_eq!(m.per_class[1].total, 0);
    assert_eq!(m.per_class[9].key, "ankle_boot");
    assert!((m.balanced_accuracy - 2.0 / 3.0).abs() < 1e-12);
    assert_eq!(m.confusion[0][0], 1);
    assert_eq!(m.confusion[0][5], 1);
    assert_eq!(m.confusion[3][4], 1);
    let total: usize = m.confusion.iter().flatten().sum();
    assert_eq!(total, 5);

    assert!(zero_shot_metrics(&scores[..49], &labels).is_err());
    assert!(zero_shot_metrics(&[0.0; 10], &[10]).is_err());
}

#[test]
fn prompts_use_the_grammar_nouns_and_vocabulary() {
    let p = class_prompts();
    assert_eq!(p.len(), 10);
    assert_eq!(p[0], "a photo of a t shirt");
    assert_eq!(p[1], "a photo of a pair of trousers");
    assert_eq!(p[9], "a photo of an ankle boot");
    let vocab = vocabulary();
    let syn = synonym_prompts();
    for (c, prompts) in syn.iter().enumerate() {
        assert_eq!(prompts.len(), CLASS_NOUNS[c].len());
        assert_eq!(prompts[0], p[c]);
        for w in prompts.iter().flat_map(|p| p.split(' ')) {
            assert!(
                vocab.contains(&w.to_string()),
                "{w:?} not in the vocabulary"
            );
        }
    }
}

fn test_image() -> [u8; PIXELS] {
    let mut img = [0u8; PIXELS];
    for (i, v) in img.iter_mut().enumerate() {
        *v = (i % 251) as u8 | 1; // no zero pixel: the pasted square is exactly visible
    }
    img
}

#[test]
fn single_items_are_centred_at_twice_the_size() {
    let img = test_image();
    let cfg = MosaicConfig::default();
    assert_eq!(
        Placement::centred_max(&cfg),
        Placement::Centred { side: 56 }
    );
    let canvas = place_single(&img, 56, 64);
    assert_eq!(canvas.len(), 64 * 64);
    let glyph = resize_box(&img, 56);
    for y in 0..64 {
        for x in 0..64 {
            let v = canvas[y * 64 + x];
            if (4..60).contains(&x) && (4..60).contains(&y) {
                assert_eq!(v, glyph[(y - 4) * 56 + x - 4]);
            } else {
                assert_eq!(v, 0, "({x}, {y})");
            }
        }
    }
    // An item larger than the canvas is capped at the canvas.
    assert_eq!(place_single(&img, 56, 40), resize_box(&img, 40));
}

#[test]
fn generator_placement_follows_the_mosaic_generator() {
    let img = test_image();
    let clean = MosaicConfig {
        noisy_fraction: 0.0,
        ..MosaicConfig::default()
    };
    let mut sides = Vec::new();
    for i in 0..60 {
        let c = place_like_generator(&img, 3, &clean, 9, i).unwrap();
        assert_eq!(c, place_like_generator(&img, 3, &clean, 9, i).unwrap());
        let [x0, y0, x1, y1] = tight_box(&c, 64).unwrap();
        let side = x1 - x0;
        assert_eq!(side, y1 - y0, "item {i} is not square");
        assert!((28..=56).contains(&side), "item {i}: side {side}");
        let glyph = resize_box(&img, side);
        for y in 0..64 {
            for x in 0..64 {
                let inside = (x0..x1).contains(&x) && (y0..y1).contains(&y);
                let want = if inside {
                    glyph[(y - y0) * side + x - x0]
                } else {
                    0
                };
                assert_eq!(c[y * 64 + x], want, "item {i} at ({x}, {y})");
            }
        }
        sides.push(side);
    }
    // Most one-item mosaics sit in a cell of 32 pixels or less (3 of the 4 grids).
    let small = sides.iter().filter(|&&s| s <= 32).count();
    assert!(small > 30 && small < 60, "{small} of 60 small: {sides:?}");
    // With the default config about half the backgrounds are noisy.
    let noisy = (0..60)
        .filter(|&i| {
            let c = place_like_generator(&img, 3, &MosaicConfig::default(), 9, i).unwrap();
            c[0] > 0 || c[64 * 64 - 1] > 0 || c.iter().filter(|&&v| v > 0).count() > 56 * 56
        })
        .count();
    assert!((10..50).contains(&noisy), "{noisy} of 60 noisy");
    let bad = MosaicConfig {
        min_size: 0,
        ..MosaicConfig::default()
    };
    assert!(place_like_generator(&img, 3, &bad, 9, 0).is_err());
}

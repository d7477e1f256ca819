//! The built-in model on the committed Fashion-MNIST sample: batch layout, pooling at EOT,
//! normalised pixels, and a short run that lowers the loss and saves a loadable checkpoint.

use std::path::PathBuf;

use candle_core::Device;
use pairlens::data::{FashionMnist, MosaicConfig, MosaicGenerator, Split};
use pairlens::io::checkpoint;
use pairlens::io::preprocess::PreprocessConfig;

use pairlens::model::TextPooling;
use pairlens::train::{
    builtin_config, builtin_preprocess_json, builtin_tokenizer, init_weights, Batches,
    MosaicBatches, TrainConfig, Trainer,
};

fn sample_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/fashion_mnist_sample")
}

fn setup(batch: usize) -> (MosaicBatches, String, pairlens::model::ClipConfig) {
    let mosaic = MosaicConfig::default();
    let ctx = pairlens::data::max_caption_words(mosaic.max_items) + 2;
    let (tok, json) = builtin_tokenizer(ctx).unwrap();
    let cfg = builtin_config(&tok, mosaic.canvas, mosaic.max_items);
    let pp = PreprocessConfig::from_hf_json(
        &builtin_preprocess_json(mosaic.canvas),
        std::path::Path::new("preprocessor_config.json"),
    )
    .unwrap();
    let data = FashionMnist::load(&sample_dir(), Split::Train).unwrap();
    let batches = MosaicBatches {
        generator: MosaicGenerator::try_new(data, mosaic, 5).unwrap(),
        tokenizer: tok,
        batch_size: batch,
        preprocess: pp,
        negatives: Default::default(),
    };
    (batches, json, cfg)
}

#[test]
fn mosaic_batches_are_laid_out_for_the_towers() {
    let (mut b, _, cfg) = setup(6);
    assert_eq!(cfg.text.pooling, TextPooling::FirstId(b.tokenizer.eot_id()));
    let batch = b.batch(3).unwrap();
    assert_eq!(batch.pixels.dims(), &[6, 3, 64, 64]);
    let (n, s) = batch.ids.dims2().unwrap();
    assert_eq!(n, 6);
    assert!(s <= cfg.text.context_length);
    let ids: Vec<Vec<u32>> = batch.ids.to_vec2().unwrap();
    for (row, &p) in ids.iter().zip(&batch.pool) {
        assert_eq!(row[0], b.tokenizer.sot_id());
        assert_eq!(row[p], b.tokenizer.eot_id());
        assert_eq!(cfg.text.pooling.index(row), Some(p));
    }
    let px: Vec<f32> = batch.pixels.flatten_all().unwrap().to_vec1().unwrap();
    assert!(px.iter().all(|&x| (-1.0..=1.0).contains(&x)));
    // Batch `step` is a pure function of the step.
    let again = b.batch(3).unwrap();
    assert_eq!(again.ids.to_vec2::<u32>().unwrap(), ids);
    assert_ne!(b.batch(4).unwrap().ids.to_vec2::<u32>().unwrap(), ids);
    // The model is small enough to ship (≤ 10 MB of f32).
    let w = init_weights(&cfg, 0).unwrap();
    let n: usize = checkpoint::save::hf_tensors(&w)
        .unwrap()
        .iter()
        .map(|(_, t)| t.elem_count())
        .sum();
    assert!(n * 4 <= 10 << 20, "{n} parameters");
}

#[test]
fn short_run_on_mosaics_learns_and_saves() {
    let (mut b, json, cfg) = setup(8);
    let w = init_weights(&cfg, 3).unwrap();
    let tc = TrainConfig {
        steps: 4,
        lr: 1e-3,
        warmup_steps: 0,
        ..TrainConfig::default()
    };
    let mut t = Trainer::new(cfg.clone(), &w, tc).unwrap();
    let fixed = b.batch(0).unwrap();
    let before = t.evaluate(&fixed).unwrap().loss;
    for _ in 0..4 {
        t.step(&fixed).unwrap();
    }
    let after = t.evaluate(&fixed).unwrap().loss;
    assert!(after < before, "{before} -> {after}");
    let dir = std::env::temp_dir().join(format!(
        "pairlens-train-mosaics-ckpt-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    t.save(&dir, &json, Some(&builtin_preprocess_json(64)), false)
        .unwrap();
    let loaded = checkpoint::load(&dir, &Device::Cpu).unwrap();
    assert_eq!(loaded.model.config(), cfg);
    let enc = loaded.tokenizer.encode("a photo of a bag", false).unwrap();
    assert_eq!(enc.len, 7);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn false_caption_negatives_leave_out_true_captions_of_other_images() {
    let (mut words, _, _) = setup(48);
    let (mut truth, _, _) = setup(48);
    truth.negatives = pairlens::train::NegativePairs::FalseCaption;
    let (a, b) = (words.batch(2).unwrap(), truth.batch(2).unwrap());
    assert_eq!(
        a.ids.to_vec2::<u32>().unwrap(),
        b.ids.to_vec2::<u32>().unwrap()
    );
    let ones = |m: &Option<candle_core::Tensor>| -> Vec<Vec<f32>> {
        m.as_ref()
            .map_or(vec![vec![0.0; 48]; 48], |m| m.to_vec2().unwrap())
    };
    let (same_words, true_of) = (ones(&a.excluded), ones(&b.excluded));
    let mosaics: Vec<_> = (0..48)
        .map(|i| truth.generator.mosaic(2 * 48 + i))
        .collect();
    let mut extra = 0;
    for i in 0..48 {
        assert_eq!(true_of[i][i], 0.0, "the positive stays in");
        for j in 0..48 {
            // Identical captions are true of both images, so every such pair stays left out.
            assert!(same_words[i][j] <= true_of[i][j]);
            let lone_same_class = mosaics[i].items.len() == 1
                && mosaics[j].items.len() == 1
                && mosaics[i].items[0].class == mosaics[j].items[0].class;
            if i != j && lone_same_class {
                assert_eq!(
                    true_of[i][j], 1.0,
                    "{:?} / {:?}",
                    mosaics[i].caption, mosaics[j].caption
                );
            }
            let classes = |m: &pairlens::data::Mosaic| {
                let mut c: Vec<u8> = m.items.iter().map(|it| it.class).collect();
                c.sort();
                c
            };
            if classes(&mosaics[i]) != classes(&mosaics[j]) {
                assert_eq!(true_of[i][j], 0.0);
            }
            extra += (true_of[i][j] > same_words[i][j]) as usize;
        }
    }
    assert!(
        extra > 0,
        "differently worded true captions exist in a batch of 48"
    );
}

//! The evaluation API end to end on a tiny random built-in-style model and the committed
//! Fashion-MNIST sample: shapes, ranges and batching (the numbers themselves are chance-level).

use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use pairlens::data::export::encode_png_gray;
use pairlens::data::{FashionMnist, MosaicConfig, MosaicGenerator, Split};
use pairlens::eval::{
    embed_captions, embed_gray_images, evaluate_retrieval, evaluate_zero_shot, place_single,
    Placement,
};
use pairlens::io::checkpoint::{self, save_hf, LoadedModel};
use pairlens::io::image::decode_bytes;
use pairlens::io::preprocess::preprocess;
use pairlens::model::TransformerConfig;
use pairlens::train::{
    builtin_config, builtin_preprocess_json, builtin_tokenizer, init_weights, Batches,
    MosaicBatches,
};
use pairlens::{NoProgress, Progress};

fn sample_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/fashion_mnist_sample")
}

/// The built-in geometry shrunk (width 32, one layer) so debug builds stay fast, saved and
/// loaded back like a trained checkpoint.
fn tiny_model(name: &str) -> (LoadedModel, PathBuf) {
    let mosaic = MosaicConfig::default();
    let ctx = pairlens::data::max_caption_words(mosaic.max_items) + 2;
    let (tok, json) = builtin_tokenizer(ctx).unwrap();
    let mut cfg = builtin_config(&tok, mosaic.canvas, mosaic.max_items);
    let small = TransformerConfig {
        width: 32,
        layers: 1,
        heads: 2,
        mlp_dim: 64,
        ..cfg.text.transformer.clone()
    };
    cfg.text.transformer = small.clone();
    cfg.vision.transformer = small;
    cfg.projection_dim = 16;
    let w = init_weights(&cfg, 7).unwrap();
    let dir = std::env::temp_dir().join(format!("pairlens-eval-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    save_hf(
        &dir,
        &cfg,
        &w,
        &json,
        Some(&builtin_preprocess_json(64)),
        false,
    )
    .unwrap();
    (checkpoint::load(&dir, &Device::Cpu).unwrap(), dir)
}

#[derive(Default)]
struct Counting {
    phases: Vec<(String, u64)>,
    done: u64,
}

impl Progress for Counting {
    fn start(&mut self, label: &str, total: u64) {
        self.phases.push((label.to_string(), total));
        self.done = 0;
    }
    fn advance(&mut self, done: u64) {
        self.done += done;
        assert!(self.done <= self.phases.last().unwrap().1);
    }
}

fn in_unit(x: f64) -> bool {
    (0.0..=1.0).contains(&x)
}

#[test]
fn retrieval_and_zero_shot_on_the_sample() {
    let (loaded, dir) = tiny_model("e2e");
    let test = FashionMnist::load(&sample_dir(), Split::Test).unwrap();
    let gen = MosaicGenerator::try_new(test.clone(), MosaicConfig::default(), 1).unwrap();

    let mut p = Counting::default();
    let r = evaluate_retrieval(&loaded, &gen, 12, 5, &mut p).unwrap();
    assert_eq!(r.metrics.count, 12);
    assert_eq!(r.seed, 1);
    let caps: Vec<String> = (0..12).map(|i| gen.mosaic(i).caption).collect();
    let shared = caps
        .iter()
        .filter(|c| caps.iter().filter(|d| d == c).count() > 1)
        .count();
    assert_eq!(r.shared_captions, shared);
    for rec in [&r.metrics.image_to_text, &r.metrics.text_to_image] {
        assert!(in_unit(rec.r1) && in_unit(rec.r5) && rec.r1 <= rec.r5);
        assert!((1.0..=12.0).contains(&rec.median_rank));
    }
    assert!((r.metrics.chance.r1 - 1.0 / 12.0).abs() < 1e-12);
    assert!(r.seconds > 0.0 && r.items_per_s > 0.0);
    assert_eq!(
        p.phases,
        vec![("captions".to_string(), 12), ("mosaics".to_string(), 12)]
    );
    assert_eq!(p.done, 12);

    let mut p = Counting::default();
    let cfg = MosaicConfig::default();
    let z = evaluate_zero_shot(
        &loaded,
        &test,
        &cfg,
        Placement::Generator { seed: 1 },
        64,
        &mut p,
    )
    .unwrap();
    assert_eq!(p.phases, vec![("single items".to_string(), 200)]);
    assert_eq!(z.metrics.count, 200);
    assert_eq!(z.prompts.len(), 10);
    assert_eq!(z.canvas, 64);
    let json = serde_json::to_value(&z).unwrap();
    assert_eq!(
        json["placement"],
        serde_json::json!({"kind": "generator", "seed": 1})
    );
    let centred = Placement::centred_max(&cfg);
    let zc = evaluate_zero_shot(&loaded, &test, &cfg, centred, 64, &mut NoProgress).unwrap();
    assert_eq!(zc.placement, Placement::Centred { side: 56 });
    assert_ne!(zc.metrics.confusion, vec![vec![0; 10]; 10]);
    assert!(in_unit(z.metrics.accuracy) && in_unit(z.ensemble_accuracy));
    assert!(in_unit(z.metrics.balanced_accuracy));
    assert_eq!(z.metrics.per_class.len(), 10);
    for c in &z.metrics.per_class {
        assert_eq!(c.total, 20, "{}", c.name); // the sample holds 20 items per class
        assert!(c.correct <= c.total && in_unit(c.accuracy));
    }
    let correct: usize = (0..10).map(|c| z.metrics.confusion[c][c]).sum();
    assert!((z.metrics.accuracy - correct as f64 / 200.0).abs() < 1e-12);
    let json = serde_json::to_value(&z).unwrap();
    assert!(json["per_class"][9]["accuracy"].is_number());
    assert!(json["accuracy"].is_number(), "metrics are flattened");

    assert!(evaluate_retrieval(&loaded, &gen, 0, 5, &mut NoProgress).is_err());
    assert!(evaluate_retrieval(&loaded, &gen, 3, 0, &mut NoProgress).is_err());
    let _ = std::fs::remove_dir_all(dir);
}

/// Rows of one embedding do not depend on the batch they were computed in, and an image
/// embeds exactly as a grayscale PNG of it does through `explain`'s path.
#[test]
fn embeddings_match_the_png_path_and_ignore_batching() {
    let (loaded, dir) = tiny_model("png");
    let test = FashionMnist::load(&sample_dir(), Split::Test).unwrap();
    let cfg = MosaicConfig::default();
    let gen = MosaicGenerator::try_new(test.clone(), cfg.clone(), 3).unwrap();
    let make = |i: usize| Ok(gen.mosaic(i as u64).pixels);

    let a = embed_gray_images(&loaded, 7, 64, 3, make, &mut NoProgress).unwrap();
    let b = embed_gray_images(&loaded, 7, 64, 7, make, &mut NoProgress).unwrap();
    assert_eq!(a.dims(), &[7, 16]);
    assert_close(&a, &b, 1e-5);
    let norms: Vec<f32> = a.sqr().unwrap().sum(1).unwrap().to_vec1().unwrap();
    assert!(norms.iter().all(|n| (n - 1.0).abs() < 1e-5), "{norms:?}");

    // Mosaic 4 and test item 5 through PNG bytes → decode → preprocess → vision tower.
    let single = place_single(&test.images[5], 56, 64);
    let s = embed_gray_images(&loaded, 1, 64, 4, |_| Ok(single.clone()), &mut NoProgress).unwrap();
    for (pixels, row) in [
        (make(4).unwrap(), a.get(4).unwrap()),
        (single.clone(), s.get(0).unwrap()),
    ] {
        let png = encode_png_gray(&pixels, 64).unwrap();
        let img = decode_bytes(&png, Path::new("mosaic.png")).unwrap();
        let pre = preprocess(&img, &loaded.preprocess).unwrap();
        let e = loaded
            .model
            .vision
            .forward(&pre.pixels.unsqueeze(0).unwrap())
            .unwrap();
        let e = pairlens::train::loss::l2_normalize(&e)
            .unwrap()
            .get(0)
            .unwrap();
        assert_close(&e, &row, 1e-5);
    }

    // For the built-in preprocessing this is also what training feeds the towers.
    let mut batches = MosaicBatches {
        generator: gen.clone(),
        tokenizer: loaded.tokenizer.as_clip().unwrap().clone(),
        batch_size: 7,
        preprocess: loaded.preprocess.clone(),
        negatives: Default::default(),
    };
    let train = batches.batch(0).unwrap();
    let e = loaded.model.vision.forward(&train.pixels).unwrap();
    assert_close(&pairlens::train::loss::l2_normalize(&e).unwrap(), &a, 1e-5);

    let caps: Vec<String> = (0..9).map(|i| gen.mosaic(i).caption).collect();
    let t1 = embed_captions(&loaded, &caps, 2, &mut NoProgress).unwrap();
    let t2 = embed_captions(&loaded, &caps, 9, &mut NoProgress).unwrap();
    assert_eq!(t1.dims(), &[9, 16]);
    assert_close(&t1, &t2, 1e-5);
    // An over-long caption is an error, not silently truncated.
    let long = vec![vec!["a bag"; 20].join(" and ")];
    assert!(embed_captions(&loaded, &long, 4, &mut NoProgress).is_err());
    let _ = std::fs::remove_dir_all(dir);
}

fn assert_close(a: &Tensor, b: &Tensor, tol: f32) {
    let a: Vec<f32> = a.flatten_all().unwrap().to_vec1().unwrap();
    let b: Vec<f32> = b.flatten_all().unwrap().to_vec1().unwrap();
    assert_eq!(a.len(), b.len());
    let d = a
        .iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max);
    assert!(d <= tol, "max difference {d}");
}

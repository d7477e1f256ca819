//! Training on the tiny geometry: gradients against central finite differences (f64), the
//! hand-written reverse pass against candle's autograd, every parameter reached by the
//! backward pass, one step lowers the loss, bit-for-bit determinism,
//! the schedule and the optimizer's decay mask.

use candle_core::{DType, Tensor};
use pairlens::io::checkpoint::save::map_hf_tensors;
use pairlens::model::{ClipConfig, ClipWeights};
use pairlens::train::{
    clip_loss, init_weights, AdamWConfig, Batches, Param, Schedule, SyntheticBatches, TrainConfig,
    Trainer,
};

fn cfg() -> ClipConfig {
    ClipConfig::tiny()
}

fn train_cfg(steps: u64) -> TrainConfig {
    TrainConfig {
        steps,
        lr: 1e-3,
        min_lr: 0.0,
        warmup_steps: 0,
        adamw: AdamWConfig::default(),
        grad_clip: Some(1.0),
    }
}

/// `weights` with entry `flat` of tensor `name` moved by `delta` (or `logit_scale`).
fn perturbed(w: &ClipWeights, name: &str, flat: usize, delta: f64) -> ClipWeights {
    if name == "logit_scale" {
        let mut w = w.clone();
        w.logit_scale += delta as f32;
        return w;
    }
    map_hf_tensors(w, |n, t| {
        if n != name {
            return Ok(t.clone());
        }
        let mut v: Vec<f64> = t.flatten_all()?.to_vec1()?;
        v[flat] += delta;
        Ok(Tensor::from_vec(v, t.dims(), t.device())?)
    })
    .unwrap()
}

#[test]
fn gradients_match_central_differences_in_f64() {
    let cfg = cfg();
    let w64 = ClipWeights::random(&cfg, 7)
        .unwrap()
        .to_dtype(DType::F64)
        .unwrap();
    let mut data = SyntheticBatches::new(&cfg, 4, 3);
    data.dtype = DType::F64;
    let batch = data.batch(0).unwrap();
    let trainer = Trainer::new(cfg.clone(), &w64, train_cfg(1)).unwrap();
    let (_, grads) = trainer.gradients(&batch).unwrap();
    // A token id that occurs in the batch, so its embedding row has a gradient.
    let id = batch
        .ids
        .get(0)
        .unwrap()
        .get(1)
        .unwrap()
        .to_scalar::<u32>()
        .unwrap() as usize;
    let tw = cfg.text.transformer.width;
    let checks: Vec<(&str, usize)> = vec![
        ("text_model.encoder.layers.1.layer_norm1.weight", 3),
        ("text_model.encoder.layers.2.self_attn.v_proj.weight", 17),
        ("vision_model.encoder.layers.0.self_attn.q_proj.weight", 5),
        ("vision_model.encoder.layers.2.mlp.fc1.bias", 9),
        ("vision_model.embeddings.patch_embedding.weight", 11),
        ("vision_model.embeddings.class_embedding", 2),
        ("text_model.embeddings.token_embedding.weight", id * tw + 4),
        ("text_projection.weight", 30),
        ("logit_scale", 0),
    ];
    let loss_at = |w: &ClipWeights| -> f64 {
        let ls = Tensor::new(w.logit_scale as f64, &candle_core::Device::Cpu).unwrap();
        clip_loss(&cfg, w, &ls, &batch)
            .unwrap()
            .to_scalar::<f64>()
            .unwrap()
    };
    let h = 1e-5;
    for (name, flat) in checks {
        let i = trainer
            .params()
            .iter()
            .position(|p| p.name == name)
            .unwrap();
        let g: Vec<f64> = grads[i].flatten_all().unwrap().to_vec1().unwrap();
        let analytic = g[flat];
        // logit_scale is an f32 field: step by an exactly representable amount.
        let h = if name == "logit_scale" {
            1.0 / 1024.0
        } else {
            h
        };
        let base = &w64;
        let fd = (loss_at(&perturbed(base, name, flat, h))
            - loss_at(&perturbed(base, name, flat, -h)))
            / (2.0 * h);
        let tol = if name == "logit_scale" { 1e-4 } else { 1e-7 } * (1.0 + fd.abs());
        assert!(
            (analytic - fd).abs() <= tol,
            "{name}[{flat}]: backward {analytic:e}, central difference {fd:e}"
        );
        assert!(
            analytic.abs() > 1e-9,
            "{name}[{flat}] gradient is ~0: check is vacuous"
        );
    }
}

#[test]
fn hand_written_backward_equals_autograd_in_f64() {
    let cfg = cfg();
    let w64 = ClipWeights::random(&cfg, 11)
        .unwrap()
        .to_dtype(DType::F64)
        .unwrap();
    let mut data = SyntheticBatches::new(&cfg, 5, 4);
    data.dtype = DType::F64;
    let batch = data.batch(0).unwrap();
    let trainer = Trainer::new(cfg.clone(), &w64, train_cfg(1)).unwrap();
    let (loss, grads) = trainer.gradients(&batch).unwrap();
    let (loss_ref, reference) = trainer.autograd_gradients(&batch).unwrap();
    assert_eq!(loss, loss_ref);
    assert_eq!(grads.len(), reference.len());
    for ((p, g), r) in trainer.params().iter().zip(&grads).zip(&reference) {
        assert_eq!(g.dims(), r.dims(), "{}", p.name);
        let g: Vec<f64> = g.flatten_all().unwrap().to_vec1().unwrap();
        let r: Vec<f64> = r.flatten_all().unwrap().to_vec1().unwrap();
        let scale = r.iter().fold(0f64, |m, v| m.max(v.abs()));
        let worst = g
            .iter()
            .zip(&r)
            .fold(0f64, |m, (a, b)| m.max((a - b).abs()));
        assert!(
            worst <= 1e-12 * (1.0 + scale),
            "{}: hand-written vs autograd differ by {worst:e} (max |grad| {scale:e})",
            p.name
        );
    }
}

#[test]
fn every_parameter_gets_a_gradient() {
    let cfg = cfg();
    let w = init_weights(&cfg, 1).unwrap();
    let trainer = Trainer::new(cfg.clone(), &w, train_cfg(1)).unwrap();
    let batch = SyntheticBatches::new(&cfg, 6, 2).batch(0).unwrap();
    let (_, grads) = trainer.gradients(&batch).unwrap();
    let n_tensors = pairlens::io::checkpoint::save::hf_tensors(&w)
        .unwrap()
        .len();
    assert_eq!(
        trainer.params().len(),
        n_tensors + 1,
        "every tensor + logit_scale"
    );
    for (p, g) in trainer.params().iter().zip(&grads) {
        assert_eq!(g.dims(), p.var.as_tensor().dims(), "{}", p.name);
        let max = g
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        if p.name.ends_with("k_proj.bias") {
            // Softmax ignores a shift shared by a whole row of scores, and q·b_k is such a
            // shift: this gradient is zero in exact arithmetic (rounding noise only).
            assert!(max < 1e-5, "{}: {max}", p.name);
        } else {
            assert!(
                max > 0.0 && max.is_finite(),
                "{}: max |grad| = {max}",
                p.name
            );
        }
    }
}

#[test]
fn one_step_lowers_the_loss_on_a_fixed_batch() {
    let cfg = cfg();
    let w = init_weights(&cfg, 5).unwrap();
    let mut trainer = Trainer::new(cfg.clone(), &w, train_cfg(10)).unwrap();
    let batch = SyntheticBatches::new(&cfg, 8, 9).batch(0).unwrap();
    let before = trainer.evaluate(&batch).unwrap().loss;
    let stats = trainer.step(&batch).unwrap();
    assert!(
        (stats.loss - before).abs() < 1e-5,
        "{} vs {before}",
        stats.loss
    );
    let after = trainer.evaluate(&batch).unwrap().loss;
    assert!(after < before, "loss went {before} -> {after}");
    // A few more steps on the same batch keep going down (memorisation works).
    for _ in 0..5 {
        trainer.step(&batch).unwrap();
    }
    let end = trainer.evaluate(&batch).unwrap();
    assert!(end.loss < after, "{after} -> {}", end.loss);
}

#[test]
fn same_seed_same_curve_bit_for_bit() {
    let cfg = cfg();
    let run = |seed: u64| -> (Vec<u32>, Vec<Vec<u32>>) {
        let w = init_weights(&cfg, seed).unwrap();
        let mut t = Trainer::new(cfg.clone(), &w, train_cfg(4)).unwrap();
        let mut data = SyntheticBatches::new(&cfg, 4, seed);
        let mut losses = Vec::new();
        for s in 0..4 {
            let b = data.batch(s).unwrap();
            losses.push(t.step(&b).unwrap().loss.to_bits());
        }
        let w = t.weights().unwrap();
        let bits = pairlens::io::checkpoint::save::hf_tensors(&w)
            .unwrap()
            .into_iter()
            .map(|(_, t)| {
                t.flatten_all()
                    .unwrap()
                    .to_vec1::<f32>()
                    .unwrap()
                    .into_iter()
                    .map(f32::to_bits)
                    .collect()
            })
            .collect();
        (losses, bits)
    };
    let a = run(11);
    let b = run(11);
    assert_eq!(a.0, b.0, "loss curves differ");
    assert!(a.1 == b.1, "final weights differ");
    let c = run(12);
    assert_ne!(a.0, c.0, "another seed gives another curve");
}

#[test]
fn logit_scale_is_clamped_at_ln_100() {
    let cfg = cfg();
    let mut w = init_weights(&cfg, 2).unwrap();
    w.logit_scale = 4.6;
    let mut tc = train_cfg(3);
    tc.lr = 0.5; // big steps push logit_scale past the cap
    let mut t = Trainer::new(cfg.clone(), &w, tc).unwrap();
    let batch = SyntheticBatches::new(&cfg, 4, 1).batch(0).unwrap();
    for _ in 0..3 {
        let s = t.step(&batch).unwrap();
        assert!(
            s.logit_scale <= 100f32.ln() + 1e-6 && s.logit_scale >= 0.0,
            "{}",
            s.logit_scale
        );
    }
}

#[test]
fn schedule_warms_up_then_decays_by_cosine() {
    let s = Schedule {
        base_lr: 1.0,
        min_lr: 0.1,
        warmup: 4,
        total: 14,
    };
    assert_eq!(s.lr(0), 0.25);
    assert_eq!(s.lr(3), 1.0);
    assert_eq!(s.lr(4), 1.0);
    assert!((s.lr(9) - 0.55).abs() < 1e-12); // half way: (1 + 0.1) / 2
    assert!((s.lr(14) - 0.1).abs() < 1e-12);
    assert!((s.lr(100) - 0.1).abs() < 1e-12);
    for k in 4..14 {
        assert!(s.lr(k + 1) <= s.lr(k));
    }
}

#[test]
fn weight_decay_mask() {
    for (name, rank, decays) in [
        (
            "text_model.encoder.layers.0.self_attn.q_proj.weight",
            2,
            true,
        ),
        (
            "text_model.encoder.layers.0.self_attn.q_proj.bias",
            1,
            false,
        ),
        ("text_model.encoder.layers.0.layer_norm1.weight", 1, false),
        ("vision_model.pre_layrnorm.weight", 1, false),
        ("text_model.embeddings.token_embedding.weight", 2, false),
        ("text_model.embeddings.position_embedding.weight", 2, false),
        (
            "vision_model.embeddings.position_embedding.weight",
            2,
            false,
        ),
        ("vision_model.embeddings.class_embedding", 1, false),
        ("vision_model.embeddings.patch_embedding.weight", 4, true),
        ("visual_projection.weight", 2, true),
        ("logit_scale", 0, false),
    ] {
        assert_eq!(Param::decays(name, rank), decays, "{name}");
    }
}

/// Identical captions are dropped from each other's softmax (both directions), and only
/// there: the masked loss equals InfoNCE written out by hand in f64 without those pairs.
#[test]
fn duplicate_captions_are_not_negatives() {
    use pairlens::train::{contrastive_loss, contrastive_loss_masked, duplicate_caption_mask};
    let dev = candle_core::Device::Cpu;
    let ids = Tensor::new(&[[0u32, 5, 1], [0, 7, 1], [0, 5, 1]], &dev).unwrap();
    let mask = duplicate_caption_mask(&ids).unwrap().unwrap();
    let m: Vec<Vec<f32>> = mask.to_vec2().unwrap();
    assert_eq!(
        m,
        vec![vec![0., 0., 1.], vec![0., 0., 0.], vec![1., 0., 0.]]
    );
    assert!(duplicate_caption_mask(&ids.narrow(0, 0, 2).unwrap())
        .unwrap()
        .is_none());

    let img = Tensor::new(&[[1.0f64, 0.2], [0.3, -1.0], [0.5, 0.5]], &dev).unwrap();
    let txt = Tensor::new(&[[0.9f64, 0.1], [-0.2, -0.8], [0.7, 0.4]], &dev).unwrap();
    let scale = Tensor::new(2.0f64, &dev).unwrap();
    let got: f64 = contrastive_loss_masked(&img, &txt, &scale, Some(&mask))
        .unwrap()
        .to_scalar()
        .unwrap();
    let unit = |v: [f64; 2]| {
        let n = (v[0] * v[0] + v[1] * v[1]).sqrt();
        [v[0] / n, v[1] / n]
    };
    let i: Vec<_> = img
        .to_vec2::<f64>()
        .unwrap()
        .into_iter()
        .map(|r| unit([r[0], r[1]]))
        .collect();
    let t: Vec<_> = txt
        .to_vec2::<f64>()
        .unwrap()
        .into_iter()
        .map(|r| unit([r[0], r[1]]))
        .collect();
    let logit = |a: usize, b: usize| 2f64.exp() * (i[a][0] * t[b][0] + i[a][1] * t[b][1]);
    let keep = |a: usize, b: usize| a == b || m[a][b] == 0.0;
    let mut want = 0.0;
    for a in 0..3 {
        let i2t: f64 = (0..3)
            .filter(|&b| keep(a, b))
            .map(|b| logit(a, b).exp())
            .sum();
        let t2i: f64 = (0..3)
            .filter(|&b| keep(b, a))
            .map(|b| logit(b, a).exp())
            .sum();
        want += (i2t.ln() - logit(a, a)) + (t2i.ln() - logit(a, a));
    }
    want /= 6.0;
    assert!((got - want).abs() < 1e-12, "{got} vs {want}");
    let plain: f64 = contrastive_loss(&img, &txt, &scale)
        .unwrap()
        .to_scalar()
        .unwrap();
    assert!(
        plain > got,
        "dropping negatives lowers the loss: {plain} vs {got}"
    );
}

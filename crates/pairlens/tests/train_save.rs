//! HF checkpoint writer: save → load round trip (bit-identical tensors and embeddings),
//! overwrite refusal, tokenizer/config consistency, and checkpoints written by `Trainer::fit`.

use std::path::PathBuf;

use candle_core::{DType, Device};
use pairlens::io::checkpoint::{self, save::hf_tensors, save_hf};
use pairlens::model::{ClipConfig, ClipModel, ClipWeights, TextPooling};
use pairlens::train::{
    AdamWConfig, Batches, CheckpointPlan, Observer, StepStats, SyntheticBatches, TrainConfig,
    Trainer,
};

/// A word-level tokenizer.json for `ClipConfig::tiny()`: words `w0..w37`, SOT 38, EOT 39, pad 0.
fn tiny_tokenizer_json() -> String {
    let mut vocab = serde_json::Map::new();
    for i in 0..38 {
        vocab.insert(format!("w{i}"), i.into());
    }
    vocab.insert("<|startoftext|>".into(), 38.into());
    vocab.insert("<|endoftext|>".into(), 39.into());
    let special = |id: u32, content: &str| {
        serde_json::json!({"id": id, "content": content, "single_word": false, "lstrip": false,
            "rstrip": false, "normalized": false, "special": true})
    };
    serde_json::json!({
        "version": "1.0",
        "truncation": null,
        "padding": {"strategy": "BatchLongest", "direction": "Right", "pad_to_multiple_of": null,
                    "pad_id": 0, "pad_type_id": 0, "pad_token": "w0"},
        "added_tokens": [special(38, "<|startoftext|>"), special(39, "<|endoftext|>")],
        "normalizer": {"type": "Lowercase"},
        "pre_tokenizer": {"type": "Whitespace"},
        "post_processor": null,
        "decoder": null,
        "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "w0"}
    })
    .to_string()
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("pairlens-train-save-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn bits(w: &ClipWeights) -> Vec<(String, Vec<usize>, Vec<u32>)> {
    hf_tensors(w)
        .unwrap()
        .into_iter()
        .map(|(n, t)| {
            let v: Vec<f32> = t.flatten_all().unwrap().to_vec1().unwrap();
            (
                n,
                t.dims().to_vec(),
                v.into_iter().map(f32::to_bits).collect(),
            )
        })
        .collect()
}

#[test]
fn save_then_load_round_trips_exactly() {
    let cfg = ClipConfig::tiny();
    let w = ClipWeights::random(&cfg, 21).unwrap();
    let dir = tmp("roundtrip");
    save_hf(&dir, &cfg, &w, &tiny_tokenizer_json(), None, false).unwrap();
    for f in checkpoint::save::HF_FILES {
        assert!(dir.join(f).is_file(), "{f} missing");
    }
    let loaded = checkpoint::load(&dir, &Device::Cpu).unwrap();
    assert_eq!(loaded.format, checkpoint::CheckpointFormat::Hf);
    assert_eq!(
        loaded.model.config(),
        cfg,
        "config differs after the round trip"
    );
    assert_eq!(loaded.model.logit_scale.to_bits(), w.logit_scale.to_bits());
    let back = loaded.model.weights();
    let (a, b) = (bits(&w), bits(&back));
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(&b) {
        assert!(x == y, "tensor {} differs after the round trip", x.0);
    }
    // Same embeddings, bit for bit.
    let orig = ClipModel::new(cfg.clone(), w).unwrap();
    let batch = SyntheticBatches::new(&cfg, 3, 4).batch(0).unwrap();
    let e = |m: &ClipModel| -> (Vec<f32>, Vec<f32>) {
        (
            m.vision
                .forward(&batch.pixels)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap(),
            m.text
                .forward(&batch.ids, &batch.pool)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap(),
        )
    };
    assert_eq!(e(&orig), e(&loaded.model));
    // The tokenizer came through: SOT/EOT/pad as configured.
    let enc = loaded.tokenizer.encode("w3 w5 w7", false).unwrap();
    assert_eq!(&enc.ids[..5], &[38, 3, 5, 7, 39]);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn config_json_has_the_hf_keys() {
    let cfg = ClipConfig::tiny();
    let w = ClipWeights::random(&cfg, 1).unwrap();
    let dir = tmp("keys");
    save_hf(&dir, &cfg, &w, &tiny_tokenizer_json(), None, false).unwrap();
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("config.json")).unwrap()).unwrap();
    assert_eq!(v["model_type"], "clip");
    assert_eq!(v["projection_dim"], 12);
    let t = &v["text_config"];
    assert_eq!(t["hidden_act"], "quick_gelu");
    assert_eq!(
        t["eos_token_id"], 2,
        "argmax pooling is transformers' legacy eos id 2"
    );
    assert_eq!(t["bos_token_id"], 38);
    assert_eq!(t["max_position_embeddings"], 8);
    assert_eq!(v["vision_config"]["hidden_act"], "gelu");
    assert_eq!(v["vision_config"]["image_size"], serde_json::json!([8, 12]));
    // safetensors: names, 0-d logit_scale, format metadata.
    let bytes = std::fs::read(dir.join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    assert_eq!(st.tensor("logit_scale").unwrap().shape(), &[] as &[usize]);
    assert_eq!(
        st.tensor("vision_model.encoder.layers.2.self_attn.out_proj.bias")
            .unwrap()
            .shape(),
        &[24]
    );
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    assert_eq!(meta.metadata().as_ref().unwrap()["format"], "pt");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn refuses_to_overwrite_without_force() {
    let cfg = ClipConfig::tiny();
    let w = ClipWeights::random(&cfg, 2).unwrap();
    let dir = tmp("overwrite");
    let tok = tiny_tokenizer_json();
    save_hf(&dir, &cfg, &w, &tok, None, false).unwrap();
    let err = save_hf(&dir, &cfg, &w, &tok, None, false)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("config.json") && err.contains("refusing to overwrite"),
        "{err}"
    );
    let w2 = ClipWeights::random(&cfg, 3).unwrap();
    save_hf(&dir, &cfg, &w2, &tok, None, true).unwrap();
    let (_, _, back) = checkpoint::load_weights(&dir, &Device::Cpu).unwrap();
    assert!(bits(&back) == bits(&w2), "force did not overwrite");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn mismatched_tokenizer_is_refused_and_leaves_nothing() {
    let mut cfg = ClipConfig::tiny();
    cfg.text.pooling = TextPooling::FirstId(37);
    let w = ClipWeights::random(&cfg, 2).unwrap();
    let dir = tmp("mismatch");
    let err = save_hf(&dir, &cfg, &w, &tiny_tokenizer_json(), None, false)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("tokenizer.json") && err.contains("end id is 39"),
        "{err}"
    );
    let left: Vec<_> = std::fs::read_dir(&dir)
        .map(|d| d.flatten().count())
        .into_iter()
        .collect();
    assert!(left.iter().all(|&n| n == 0), "files left behind: {left:?}");
    // Wrong shapes are refused before anything is written, naming the tensor.
    let bad = ClipWeights::random(
        &ClipConfig {
            projection_dim: 5,
            ..ClipConfig::tiny()
        },
        1,
    )
    .unwrap();
    let err = save_hf(
        &tmp("shape"),
        &ClipConfig::tiny(),
        &bad,
        &tiny_tokenizer_json(),
        None,
        false,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("projection"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn f64_weights_are_saved_as_f32() {
    let cfg = ClipConfig::tiny();
    let w = ClipWeights::random(&cfg, 8).unwrap();
    let dir = tmp("f64");
    save_hf(
        &dir,
        &cfg,
        &w.to_dtype(DType::F64).unwrap(),
        &tiny_tokenizer_json(),
        None,
        false,
    )
    .unwrap();
    let (_, _, back) = checkpoint::load_weights(&dir, &Device::Cpu).unwrap();
    assert!(bits(&back) == bits(&w));
    let _ = std::fs::remove_dir_all(&dir);
}

#[derive(Default)]
struct Record {
    steps: Vec<StepStats>,
    checkpoints: Vec<(u64, PathBuf)>,
}

impl Observer for Record {
    fn on_step(&mut self, _t: &Trainer, s: &StepStats) -> pairlens::Result<()> {
        self.steps.push(*s);
        Ok(())
    }
    fn on_checkpoint(&mut self, step: u64, dir: &std::path::Path) -> pairlens::Result<()> {
        self.checkpoints.push((step, dir.to_path_buf()));
        Ok(())
    }
}

#[test]
fn fit_writes_periodic_and_final_checkpoints() {
    let cfg = ClipConfig::tiny();
    let w = pairlens::train::init_weights(&cfg, 4).unwrap();
    let tc = TrainConfig {
        steps: 5,
        lr: 1e-3,
        min_lr: 1e-4,
        warmup_steps: 2,
        adamw: AdamWConfig::default(),
        grad_clip: None,
    };
    let mut trainer = Trainer::new(cfg.clone(), &w, tc).unwrap();
    let out = tmp("fit");
    let plan = CheckpointPlan {
        out: out.clone(),
        every: 2,
        tokenizer_json: tiny_tokenizer_json(),
        preprocess: None,
        force: false,
    };
    let mut rec = Record::default();
    trainer
        .fit(
            &mut SyntheticBatches::new(&cfg, 4, 1),
            Some(&plan),
            &mut rec,
        )
        .unwrap();
    assert_eq!(rec.steps.len(), 5);
    assert_eq!(
        rec.steps.iter().map(|s| s.step).collect::<Vec<_>>(),
        [1, 2, 3, 4, 5]
    );
    assert_eq!(rec.steps[0].lr, 5e-4);
    let ck: Vec<u64> = rec.checkpoints.iter().map(|c| c.0).collect();
    assert_eq!(ck, [2, 4, 5]);
    assert_eq!(rec.checkpoints[0].1, out.join("checkpoint-2"));
    assert_eq!(rec.checkpoints[2].1, out);
    // The final checkpoint holds the trainer's current weights.
    let loaded = checkpoint::load(&out, &Device::Cpu).unwrap();
    let now = trainer.weights().unwrap();
    assert_eq!(loaded.model.logit_scale, now.logit_scale);
    let back = loaded.model.weights();
    assert!(bits(&back) == bits(&now));
    let _ = std::fs::remove_dir_all(&out);
}

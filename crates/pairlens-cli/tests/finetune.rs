//! `pairlens finetune` from the committed built-in checkpoint on the committed Fashion-MNIST
//! sample: loadable checkpoints, checkpoint-0 equal to the input bit for bit, the loss of the
//! first training batch lower after the step that trained on it, and refusals.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use candle_core::{Device, Tensor};
use pairlens::data::{FashionMnist, MosaicConfig, MosaicGenerator, Split};
use pairlens::io::checkpoint::save::hf_tensors;
use pairlens::io::checkpoint::{load, LoadedModel};
use pairlens::model::ClipWeights;
use pairlens::train::{clip_loss, Batches, MosaicBatches};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn builtin_dir() -> PathBuf {
    repo().join("crates/pairlens/assets/builtin")
}

fn sample_dir() -> PathBuf {
    repo().join("fixtures/fashion_mnist_sample")
}

fn out_dir(name: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("finetune-{name}"));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn pairlens(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pairlens"))
        .args(args)
        .output()
        .expect("run pairlens")
}

fn weights(m: &LoadedModel) -> ClipWeights {
    m.model.weights()
}

fn bits(t: &Tensor) -> Vec<u32> {
    t.flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
        .iter()
        .map(|x| x.to_bits())
        .collect()
}

/// Loss of `m` on training batch 0 of the fine-tuning run (train split, default mosaics).
fn batch0_loss(m: &LoadedModel, seed: u64, batch: usize) -> f32 {
    let mut data = MosaicBatches {
        generator: MosaicGenerator::new(
            FashionMnist::load(&sample_dir(), Split::Train).unwrap(),
            MosaicConfig::default(),
            seed,
        ),
        tokenizer: m.tokenizer.as_clip().expect("a CLIP model").clone(),
        batch_size: batch,
        preprocess: m.preprocess.clone(),
        negatives: Default::default(),
    };
    let b = data.batch(0).unwrap();
    let ls = Tensor::new(m.model.logit_scale, &Device::Cpu).unwrap();
    clip_loss(&m.model.config(), &weights(m), &ls, &b)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

#[test]
fn finetune_writes_checkpoints_and_descends() {
    let out = out_dir("run");
    let (data, model) = (sample_dir(), builtin_dir());
    let o = pairlens(&[
        "finetune",
        "--model",
        model.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--steps",
        "2",
        "--batch",
        "8",
        "--lr",
        "1e-5",
        "--warmup",
        "0",
        "--seed",
        "4",
        "--save-at",
        "0,1",
        "--grounding",
        repo().join("examples/mosaics/data.jsonl").to_str().unwrap(),
        "--grounding-limit",
        "1",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // Grounding per class at every saved step and at the end, then the first against the last.
    for step in ["step-0", "step-1", "step-2"] {
        let summary = out.join("grounding").join(step).join("summary.json");
        assert!(summary.is_file(), "{} missing", summary.display());
    }
    let cmp = std::fs::read_to_string(out.join("grounding/compare/comparison.md")).unwrap();
    assert!(cmp.contains("step 0") && cmp.contains("step 2"), "{cmp}");

    let input = load(&model, &Device::Cpu).unwrap();
    let c0 = load(&out.join("checkpoint-0"), &Device::Cpu).unwrap();
    let c1 = load(&out.join("checkpoint-1"), &Device::Cpu).unwrap();
    let last = load(&out, &Device::Cpu).unwrap();

    // checkpoint-0 is the input, bit for bit, temperature included; the config is kept.
    let (a, b) = (
        hf_tensors(&weights(&input)).unwrap(),
        hf_tensors(&weights(&c0)).unwrap(),
    );
    assert_eq!(a.len(), b.len());
    for ((na, ta), (nb, tb)) in a.iter().zip(&b) {
        assert_eq!(na, nb);
        assert!(bits(ta) == bits(tb), "{na} differs");
    }
    assert_eq!(
        input.model.logit_scale.to_bits(),
        c0.model.logit_scale.to_bits()
    );
    assert_eq!(c0.model.config(), input.model.config());
    assert_eq!(last.model.config(), input.model.config());
    for f in ["tokenizer.json", "preprocessor_config.json"] {
        assert_eq!(
            std::fs::read(model.join(f)).unwrap(),
            std::fs::read(out.join(f)).unwrap(),
            "{f} is not the input's"
        );
    }
    // The weights moved.
    let moved = hf_tensors(&weights(&last)).unwrap();
    assert!(a
        .iter()
        .zip(&moved)
        .any(|((_, x), (_, y))| bits(x) != bits(y)));

    // The input pipeline matches the checkpoint (an in-domain batch is easy for it), and the
    // step trained on batch 0 lowered its loss.
    let before = batch0_loss(&c0, 4, 8);
    let after = batch0_loss(&c1, 4, 8);
    assert!(
        before < 0.5,
        "in-domain loss of the built-in model: {before}"
    );
    assert!(after < before, "batch-0 loss {before} → {after}");

    let log = std::fs::read_to_string(out.join("train_log.jsonl")).unwrap();
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3, "{log}");
    assert_eq!(lines[0]["step"], 0);
    assert!(lines[0]["test_loss"].as_f64().unwrap().is_finite());
    assert!(lines[2]["test_loss"].as_f64().is_some());
    let run: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("finetune.json")).unwrap()).unwrap();
    assert_eq!(run["steps"], 2);

    // Not again without --force; with it, yes.
    let again = |force: bool| {
        let mut args = vec![
            "finetune",
            "--model",
            model.to_str().unwrap(),
            "--data",
            data.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--steps",
            "1",
            "--batch",
            "4",
        ];
        if force {
            args.push("--force");
        }
        pairlens(&args)
    };
    let o = again(false);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("--force"), "{err}");
    assert!(again(true).status.success());
}

#[test]
fn finetune_refuses_bad_arguments() {
    let out = out_dir("bad");
    let data = sample_dir();
    let model = builtin_dir();
    let run = |extra: &[&str]| {
        let mut args = vec![
            "finetune",
            "--model",
            model.to_str().unwrap(),
            "--data",
            data.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        let o = pairlens(&args);
        assert!(!o.status.success(), "{extra:?} succeeded");
        String::from_utf8_lossy(&o.stderr).to_string()
    };
    let e = run(&["--steps", "5", "--save-at", "0,9"]);
    assert!(e.contains("--save-at 9"), "{e}");
    let e = run(&["--batch", "1"]);
    assert!(e.contains("--batch"), "{e}");
    // The tiny fixture takes 32×32 images, not the 64×64 mosaics.
    let tiny = repo().join("fixtures/models/hf-tiny-quickgelu");
    let o = pairlens(&[
        "finetune",
        "--model",
        tiny.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && e.contains("32×32"), "{e}");
    assert!(!out.join("config.json").exists());
}

#[test]
fn train_rejects_unknown_rare_class() {
    let out = out_dir("rare");
    let o = pairlens(&[
        "train",
        "--data",
        sample_dir().to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--rare",
        "coat,boots",
    ]);
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{e}");
    assert!(
        e.contains("\"boots\"") && e.contains("ankle_boot") && e.contains("tshirt"),
        "{e}"
    );
}

#[test]
fn train_with_rare_classes_runs() {
    let out = out_dir("rare-run");
    let o = pairlens(&[
        "train",
        "--data",
        sample_dir().to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--steps",
        "1",
        "--batch",
        "4",
        "--eval-every",
        "0",
        "--rare",
        "coat,Ankle-Boot",
        "--rare-weight",
        "0.05",
        "--lone",
        "bag",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(load(&out, &Device::Cpu).is_ok());
}

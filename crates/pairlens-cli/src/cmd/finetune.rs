//! `pairlens finetune`: continue contrastive training of a checkpoint on in-domain
//! Fashion-MNIST mosaics, with its own config, tokenizer and temperature, a fresh AdamW and a
//! short warm-up + cosine schedule. Writes `{out}/checkpoint-K` at the `--save-at` steps
//! (K = 0 is the starting weights, so before/after evaluations read files written the same way)
//! and the final weights in `{out}`.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use pairlens::data::{FashionMnist, MosaicConfig, MosaicGenerator, Split};
use pairlens::train::{
    AdamWConfig, CheckpointPlan, MosaicBatches, Observer, StepStats, TrainConfig, Trainer,
};
use serde_json::{json, Value};

use super::method::MethodArgs;
use super::train::{check_out, fixed_test_batch, Negatives, Progress};
use super::{compare_grounding, eval_grounding};

#[derive(clap::Args)]
pub struct Args {
    /// Checkpoint directory to start from (Hugging Face CLIP) [default: the built-in model].
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Directory with the Fashion-MNIST IDX files (Debian: /usr/share/datasets/fashion-mnist).
    #[arg(long)]
    pub data: PathBuf,
    /// Output checkpoint directory (refused if it already holds one, unless --force).
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, default_value_t = 300)]
    pub steps: u64,
    /// Image–caption pairs per step.
    #[arg(long, default_value_t = 64)]
    pub batch: usize,
    /// Peak learning rate (after warm-up; cosine decay to 0 afterwards).
    #[arg(long, default_value_t = 3e-4)]
    pub lr: f64,
    /// Warm-up steps (default: 5% of --steps, at least 1).
    #[arg(long)]
    pub warmup: Option<u64>,
    #[arg(long, default_value_t = 0.1)]
    pub weight_decay: f64,
    /// Clip the global gradient norm (0 = off).
    #[arg(long, default_value_t = 1.0)]
    pub grad_clip: f64,
    /// Seed of the fine-tuning mosaics (train split, default generator) and of the fixed
    /// evaluation batch (test split).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Extra chance that a fine-tuning mosaic holds a single item.
    #[arg(long, default_value_t = 0.0)]
    pub single_items: f32,
    /// Which pairs of a batch are negatives of each other.
    #[arg(long, value_enum, default_value_t = Negatives::DifferentCaption)]
    pub negatives: Negatives,
    /// Also write `{out}/checkpoint-K` after these steps (comma-separated; 0 = the starting
    /// weights).
    #[arg(long, value_delimiter = ',', default_value = "0")]
    pub save_at: Vec<u64>,
    /// Evaluate on the fixed test batch every this many steps (0 = only at the start and end).
    #[arg(long, default_value_t = 50)]
    pub eval_every: u64,
    /// A grounding dataset (`pairlens mosaics` JSONL): after training, `eval-grounding` of every
    /// `--save-at` checkpoint and of the final model into `{out}/grounding/step-K`, and a
    /// per-class comparison of the first against the last in `{out}/grounding/compare`.
    #[arg(long)]
    pub grounding: Option<PathBuf>,
    /// Evaluate grounding on the first K items only.
    #[arg(long)]
    pub grounding_limit: Option<usize>,
    /// Text block whose input is attributed in the grounding evaluation [default: the last].
    #[arg(long)]
    pub grounding_text_layer: Option<usize>,
    /// Image block whose input is attributed in the grounding evaluation [default: the last].
    #[arg(long)]
    pub grounding_image_layer: Option<usize>,
    /// Path points N of the grounding evaluation's explanations.
    #[arg(long, default_value_t = 10)]
    pub grounding_n: usize,
    /// Overwrite an existing checkpoint in --out.
    #[arg(long)]
    pub force: bool,
}

/// [`Progress`] plus the `--save-at` checkpoints.
struct SaveAt {
    progress: Progress,
    at: BTreeSet<u64>,
    out: PathBuf,
    tokenizer_json: String,
    preprocess: Option<Value>,
    force: bool,
}

impl SaveAt {
    fn save(&mut self, trainer: &Trainer, step: u64) -> pairlens::Result<()> {
        let dir = self.out.join(format!("checkpoint-{step}"));
        trainer.save(
            &dir,
            &self.tokenizer_json,
            self.preprocess.as_ref(),
            self.force,
        )?;
        self.progress.on_checkpoint(step, &dir)
    }
}

impl Observer for SaveAt {
    fn on_step(&mut self, trainer: &Trainer, s: &StepStats) -> pairlens::Result<()> {
        self.progress.on_step(trainer, s)?;
        if self.at.contains(&s.step) {
            self.save(trainer, s.step)?;
        }
        Ok(())
    }

    fn on_checkpoint(&mut self, step: u64, dir: &Path) -> pairlens::Result<()> {
        self.progress.on_checkpoint(step, dir)
    }
}

pub fn run(args: Args) -> Result<()> {
    if args.batch < 2 {
        bail!("--batch must be at least 2 (the loss contrasts pairs within a batch)");
    }
    if args.steps == 0 {
        bail!("--steps must be at least 1");
    }
    if let Some(k) = args.save_at.iter().find(|&&k| k > args.steps) {
        bail!("--save-at {k} is after the last step ({})", args.steps);
    }
    check_out(&args.out, args.force)?;

    let loaded = super::load_model(args.model.as_deref(), &pairlens::Device::Cpu)?;
    let src = loaded.dir.clone();
    let tok_path = src.join("tokenizer.json");
    let tokenizer_json = std::fs::read_to_string(&tok_path).with_context(|| {
        format!(
            "reading {} (fine-tuning keeps the checkpoint's tokenizer and writes it along)",
            tok_path.display()
        )
    })?;
    let pp_path = src.join("preprocessor_config.json");
    let preprocess: Option<Value> = if pp_path.is_file() {
        let text = std::fs::read_to_string(&pp_path)
            .with_context(|| format!("reading {}", pp_path.display()))?;
        Some(
            serde_json::from_str(&text)
                .with_context(|| format!("{}: not valid JSON", pp_path.display()))?,
        )
    } else {
        None
    };

    let mosaic = MosaicConfig {
        single_item_prob: args.single_items,
        ..MosaicConfig::default()
    };
    let model_cfg = loaded.model.config();
    let side = (mosaic.canvas, mosaic.canvas);
    if model_cfg.vision.image_size != side {
        bail!(
            "{}: the model takes {}×{} images, but fine-tuning draws {}×{} mosaics",
            super::model_name(args.model.as_deref()),
            model_cfg.vision.image_size.0,
            model_cfg.vision.image_size.1,
            side.0,
            side.1
        );
    }
    let Some(tokenizer) = loaded.tokenizer.as_clip() else {
        bail!(
            "{}: fine-tuning is implemented for CLIP models (this is a SigLIP one)",
            super::model_name(args.model.as_deref())
        );
    };
    let mut train = MosaicBatches {
        generator: MosaicGenerator::try_new(
            FashionMnist::load(&args.data, Split::Train)?,
            mosaic,
            args.seed,
        )?,
        tokenizer: tokenizer.clone(),
        batch_size: args.batch,
        preprocess: loaded.preprocess.clone(),
        negatives: args.negatives.into(),
    };
    let fixed = fixed_test_batch(
        &args.data,
        args.seed,
        args.batch,
        tokenizer.clone(),
        loaded.preprocess.clone(),
        args.negatives.into(),
    )?;

    let config = TrainConfig {
        steps: args.steps,
        lr: args.lr,
        min_lr: 0.0,
        warmup_steps: args.warmup.unwrap_or((args.steps / 20).max(1)),
        adamw: AdamWConfig {
            weight_decay: args.weight_decay,
            ..AdamWConfig::default()
        },
        grad_clip: (args.grad_clip > 0.0).then_some(args.grad_clip),
    };
    let weights = loaded.model.weights();
    let mut trainer = Trainer::new(model_cfg, &weights, config)?;
    drop(loaded);

    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let run_path = args.out.join("finetune.json");
    let run_info = json!({
        "model": src, "data": args.data, "steps": args.steps, "batch": args.batch,
        "lr": args.lr, "warmup": trainer.config.warmup_steps, "weight_decay": args.weight_decay,
        "grad_clip": args.grad_clip, "seed": args.seed, "single_items": args.single_items,
        "negatives": format!("{:?}", args.negatives),
        "save_at": args.save_at, "start_logit_scale": weights.logit_scale,
    });
    std::fs::write(&run_path, serde_json::to_string_pretty(&run_info)? + "\n")
        .with_context(|| format!("writing {}", run_path.display()))?;

    let every = if args.eval_every > 0 {
        args.eval_every
    } else {
        args.steps
    };
    let mut obs = SaveAt {
        progress: Progress::new("finetune", args.steps, &args.out, Some((every, fixed)))?,
        at: args.save_at.iter().copied().collect(),
        out: args.out.clone(),
        tokenizer_json: tokenizer_json.clone(),
        preprocess: preprocess.clone(),
        force: args.force,
    };
    // Step 0: the starting point's test numbers and (if asked) its weights.
    let (_, batch) = obs.progress.eval.as_ref().expect("set above");
    let e = trainer.evaluate(batch)?;
    obs.progress.bar.println(format!(
        "step {:>6}: test loss {:.4}, top-1 image→text {:.1}%, text→image {:.1}%",
        0,
        e.loss,
        100.0 * e.image_to_text,
        100.0 * e.text_to_image
    ));
    let line = json!({"step": 0, "test_loss": e.loss, "test_i2t": e.image_to_text,
                      "test_t2i": e.text_to_image, "logit_scale": weights.logit_scale});
    writeln!(obs.progress.log, "{line}").context("writing train_log.jsonl")?;
    if obs.at.contains(&0) {
        obs.save(&trainer, 0)?;
    }

    let plan = CheckpointPlan {
        out: args.out.clone(),
        every: 0,
        tokenizer_json,
        preprocess,
        force: args.force,
    };
    let result = trainer.fit(&mut train, Some(&plan), &mut obs);
    obs.progress.bar.finish_and_clear();
    result?;
    let secs = obs.progress.started.elapsed().as_secs_f64();
    super::print(&format!(
        "fine-tuned {} for {} steps of {} pairs in {:.1} s ({:.2} steps/s); checkpoint in {}\n",
        super::model_name(args.model.as_deref()),
        args.steps,
        args.batch,
        secs,
        args.steps as f64 / secs,
        args.out.display()
    ))?;
    if let Some(data) = &args.grounding {
        evaluate_grounding(&args, data)?;
    }
    Ok(())
}

/// Per-class grounding of each saved step (and the final model), then the first step against
/// the last: which classes the fine-tuning moved.
fn evaluate_grounding(args: &Args, data: &Path) -> Result<()> {
    let mut steps: Vec<u64> = args
        .save_at
        .iter()
        .copied()
        .filter(|&k| k < args.steps)
        .collect();
    steps.sort_unstable();
    steps.dedup();
    let root = args.out.join("grounding");
    let mut dirs = Vec::new();
    for step in steps.iter().copied().chain([args.steps]) {
        let model = if step == args.steps {
            args.out.clone()
        } else {
            args.out.join(format!("checkpoint-{step}"))
        };
        let out = root.join(format!("step-{step}"));
        super::print(&format!("grounding of step {step} ({})\n", model.display()))?;
        eval_grounding::run(eval_grounding::Args {
            model: super::ModelArgs {
                model: Some(model),
                device: pairlens::Device::Cpu,
            },
            format: eval_grounding::Format::Jsonl,
            data: Some(data.to_path_buf()),
            annotations: None,
            captions: None,
            sentences: None,
            images: None,
            ids: None,
            method: pairlens::grounding::baselines::Method::Pairlens,
            settings: MethodArgs {
                text_layer: args.grounding_text_layer,
                image_layer: args.grounding_image_layer,
                steps: args.grounding_n,
                mode: pairlens::attribution::Mode::Exclip,
                text_reference_len: 1,
            },
            out: out.clone(),
            limit: args.grounding_limit,
            force: args.force,
            image_limit: super::ImageLimit {
                max_pixels: pairlens::io::image::DEFAULT_MAX_PIXELS,
            },
        })?;
        dirs.push((step, out));
    }
    if let (Some((first, before)), Some((last, after))) = (dirs.first(), dirs.last()) {
        if first != last {
            compare_grounding::run(compare_grounding::Args {
                before: before.clone(),
                after: after.clone(),
                label_before: format!("step {first}"),
                label_after: format!("step {last}"),
                out: root.join("compare"),
                force: args.force,
            })?;
        }
    }
    Ok(())
}

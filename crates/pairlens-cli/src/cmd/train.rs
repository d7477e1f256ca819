//! `pairlens train`: contrastive training of the built-in model on seeded Fashion-MNIST
//! mosaics, written as a Hugging Face CLIP checkpoint (`{out}`, plus `{out}/checkpoint-{step}`).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use pairlens::data::{FashionMnist, MosaicConfig, MosaicGenerator, Split};
use pairlens::io::checkpoint::save::HF_FILES;
use pairlens::io::preprocess::PreprocessConfig;
use pairlens::train::{
    builtin_config, builtin_preprocess_json, builtin_tokenizer, init_weights, AdamWConfig, Batch,
    Batches, CheckpointPlan, MosaicBatches, Observer, StepStats, TrainConfig, Trainer,
};

#[derive(clap::Args)]
pub struct Args {
    /// Directory with the Fashion-MNIST IDX files (Debian: /usr/share/datasets/fashion-mnist).
    #[arg(long)]
    pub data: PathBuf,
    /// Output checkpoint directory (refused if it already holds one, unless --force).
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, default_value_t = 3000)]
    pub steps: u64,
    /// Image–caption pairs per step.
    #[arg(long, default_value_t = 64)]
    pub batch: usize,
    /// Peak learning rate (after warm-up; cosine decay to 0 afterwards).
    #[arg(long, default_value_t = 1e-3)]
    pub lr: f64,
    /// Warm-up steps (default: 5% of --steps).
    #[arg(long)]
    pub warmup: Option<u64>,
    #[arg(long, default_value_t = 0.1)]
    pub weight_decay: f64,
    /// Clip the global gradient norm (0 = off).
    #[arg(long, default_value_t = 1.0)]
    pub grad_clip: f64,
    /// Extra chance that a training mosaic holds a single item (test mosaics are unchanged).
    #[arg(long, default_value_t = 0.0)]
    pub single_items: f32,
    /// Seed of the weights and of the mosaics.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Write `{out}/checkpoint-{step}` every this many steps (0 = final only).
    #[arg(long, default_value_t = 1000)]
    pub checkpoint_every: u64,
    /// Evaluate on a fixed batch of test-split mosaics every this many steps (0 = never).
    #[arg(long, default_value_t = 250)]
    pub eval_every: u64,
    /// Overwrite an existing checkpoint in --out.
    #[arg(long)]
    pub force: bool,
}

/// Fail before training, not after it, when the output is taken.
fn check_out(out: &Path, force: bool) -> Result<()> {
    if force || !out.exists() {
        return Ok(());
    }
    if !out.is_dir() {
        bail!("{}: exists and is not a directory", out.display());
    }
    let taken = HF_FILES.iter().any(|f| out.join(f).exists())
        || std::fs::read_dir(out)
            .with_context(|| format!("reading {}", out.display()))?
            .flatten()
            .any(|e| e.file_name().to_string_lossy().starts_with("checkpoint-"));
    if taken {
        bail!(
            "{}: already holds a checkpoint; pass --force to overwrite it",
            out.display()
        );
    }
    Ok(())
}

struct Progress {
    bar: ProgressBar,
    eval: Option<(u64, Batch)>,
    log: std::fs::File,
    started: Instant,
}

impl Observer for Progress {
    fn on_step(&mut self, trainer: &Trainer, s: &StepStats) -> pairlens::Result<()> {
        self.bar.set_position(s.step);
        self.bar.set_message(format!(
            "loss {:.4}  lr {:.2e}  scale {:.1}  {:.0} items/s",
            s.loss,
            s.lr,
            s.logit_scale.exp(),
            s.items_per_s
        ));
        let mut line = serde_json::json!({
            "step": s.step, "loss": s.loss, "lr": s.lr, "grad_norm": s.grad_norm,
            "logit_scale": s.logit_scale, "items_per_s": s.items_per_s,
            "elapsed_s": self.started.elapsed().as_secs_f64(),
        });
        if let Some((every, batch)) = &self.eval {
            if s.step.is_multiple_of(*every) || s.step == trainer.config.steps {
                let e = trainer.evaluate(batch)?;
                self.bar.println(format!(
                    "step {:>6}: test loss {:.4}, top-1 image→text {:.1}%, text→image {:.1}%",
                    s.step,
                    e.loss,
                    100.0 * e.image_to_text,
                    100.0 * e.text_to_image
                ));
                line["test_loss"] = e.loss.into();
                line["test_i2t"] = e.image_to_text.into();
                line["test_t2i"] = e.text_to_image.into();
            }
        }
        writeln!(self.log, "{line}").map_err(|e| pairlens::Error::io("train_log.jsonl", e))
    }

    fn on_checkpoint(&mut self, step: u64, dir: &Path) -> pairlens::Result<()> {
        self.bar
            .println(format!("step {step:>6}: checkpoint {}", dir.display()));
        Ok(())
    }
}

pub fn run(args: Args) -> Result<()> {
    if args.batch < 2 {
        bail!("--batch must be at least 2 (the loss contrasts pairs within a batch)");
    }
    if args.steps == 0 {
        bail!("--steps must be at least 1");
    }
    check_out(&args.out, args.force)?;
    let mosaic = MosaicConfig::default();
    let train_data = FashionMnist::load(&args.data, Split::Train)?;
    let test_data = FashionMnist::load(&args.data, Split::Test)?;

    let ctx = pairlens::data::max_caption_words(mosaic.max_items) + 2;
    let (tokenizer, tok_json) = builtin_tokenizer(ctx)?;
    let model_cfg = builtin_config(&tokenizer, mosaic.canvas, mosaic.max_items);
    let pp_json = builtin_preprocess_json(mosaic.canvas);
    let pp = PreprocessConfig::from_hf_json(&pp_json, Path::new("preprocessor_config.json"))?;
    let train_mosaic = MosaicConfig {
        single_item_prob: args.single_items,
        ..mosaic.clone()
    };
    let mut train = MosaicBatches {
        generator: MosaicGenerator::try_new(train_data, train_mosaic, args.seed)?,
        tokenizer: tokenizer.clone(),
        batch_size: args.batch,
        preprocess: pp.clone(),
    };
    let eval = if args.eval_every > 0 {
        let mut test = MosaicBatches {
            generator: MosaicGenerator::try_new(test_data, mosaic.clone(), args.seed)?,
            tokenizer,
            batch_size: args.batch,
            preprocess: pp,
        };
        Some((args.eval_every, test.batch(0)?))
    } else {
        None
    };

    let config = TrainConfig {
        steps: args.steps,
        lr: args.lr,
        min_lr: 0.0,
        warmup_steps: args.warmup.unwrap_or(args.steps / 20),
        adamw: AdamWConfig {
            weight_decay: args.weight_decay,
            ..AdamWConfig::default()
        },
        grad_clip: (args.grad_clip > 0.0).then_some(args.grad_clip),
    };
    let weights = init_weights(&model_cfg, args.seed)?;
    let mut trainer = Trainer::new(model_cfg, &weights, config)?;
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let log_path = args.out.join("train_log.jsonl");
    let log = std::fs::File::create(&log_path)
        .with_context(|| format!("creating {}", log_path.display()))?;

    let bar = ProgressBar::with_draw_target(Some(args.steps), ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template(
            "{prefix} [{bar:30}] {pos}/{len} {elapsed_precise} ETA {eta} {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar.set_prefix("train");
    bar.enable_steady_tick(Duration::from_millis(500));
    let mut progress = Progress {
        bar,
        eval,
        log,
        started: Instant::now(),
    };
    let plan = CheckpointPlan {
        out: args.out.clone(),
        every: args.checkpoint_every,
        tokenizer_json: tok_json,
        preprocess: Some(builtin_preprocess_json(mosaic.canvas)),
        force: args.force,
    };
    let result = trainer.fit(&mut train, Some(&plan), &mut progress);
    progress.bar.finish_and_clear();
    result?;
    let secs = progress.started.elapsed().as_secs_f64();
    super::print(&format!(
        "trained {} steps of {} pairs in {:.1} s ({:.2} steps/s); checkpoint in {}\n",
        args.steps,
        args.batch,
        secs,
        args.steps as f64 / secs,
        args.out.display()
    ))
}

//! `pairlens train`: contrastive training of the built-in model on seeded Fashion-MNIST
//! mosaics, written as a Hugging Face CLIP checkpoint (`{out}`, plus `{out}/checkpoint-{step}`).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use pairlens::data::{FashionMnist, MosaicConfig, MosaicGenerator, Split, CLASS_KEYS};
use pairlens::io::checkpoint::save::HF_FILES;
use pairlens::io::preprocess::PreprocessConfig;
use pairlens::io::tokenizer::ClipTokenizer;
use pairlens::train::{
    builtin_config, builtin_preprocess_json, builtin_tokenizer, init_weights, AdamWConfig, Batch,
    Batches, CheckpointPlan, MosaicBatches, NegativePairs, Observer, StepStats, TrainConfig,
    Trainer,
};

/// `--negatives`: which pairs of a batch the loss pushes apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Negatives {
    /// Every pair whose captions differ in wording ("a coat" vs "a jacket" under two coats).
    DifferentCaption,
    /// Only pairs whose caption is false of the image (synonyms, prefixes and true relations
    /// of the same items are not negatives).
    FalseCaption,
}

impl From<Negatives> for NegativePairs {
    fn from(n: Negatives) -> Self {
        match n {
            Negatives::DifferentCaption => NegativePairs::DifferentCaption,
            Negatives::FalseCaption => NegativePairs::FalseCaption,
        }
    }
}

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
    /// Shift the training distribution: these classes (names as in the mosaics' `class`
    /// field, comma-separated) are drawn with --rare-weight instead of 1. Test mosaics are
    /// unchanged.
    #[arg(long, value_delimiter = ',')]
    pub rare: Vec<String>,
    /// Relative draw weight of the --rare classes (the others have 1).
    #[arg(long, default_value_t = 0.03)]
    pub rare_weight: f32,
    /// Shift the training distribution: `CLASS=WEIGHT` pairs (comma-separated) giving the
    /// relative draw weight of a class for fresh items; unnamed classes keep 1. E.g.
    /// `shirt=2,coat=2` draws more of the classes the model confuses. Test mosaics are unchanged.
    #[arg(long, value_delimiter = ',', conflicts_with = "rare")]
    pub class_weight: Vec<String>,
    /// Shift the training distribution: these classes only ever appear as a lone item, never
    /// in a scene with other items.
    #[arg(long, value_delimiter = ',')]
    pub lone: Vec<String>,
    /// Which pairs of a batch are negatives of each other.
    #[arg(long, value_enum, default_value_t = Negatives::DifferentCaption)]
    pub negatives: Negatives,
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

/// Class names (`pairlens::data::CLASS_KEYS`) to class ids; `flag` names the option in errors.
pub(super) fn parse_classes(flag: &str, names: &[String]) -> Result<Vec<u8>> {
    names
        .iter()
        .map(|n| {
            let key = n.trim().to_lowercase().replace('-', "_");
            CLASS_KEYS
                .iter()
                .position(|&k| k == key)
                .map(|c| c as u8)
                .with_context(|| {
                    format!(
                        "{flag}: unknown class {n:?}; the classes are {}",
                        CLASS_KEYS.join(", ")
                    )
                })
        })
        .collect()
}

/// The training mosaics: the default generator with the --single-items, --rare (or
/// --class-weight) and --lone shifts.
fn train_mosaic_config(args: &Args) -> Result<MosaicConfig> {
    let rare = parse_classes("--rare", &args.rare)?;
    let lone = parse_classes("--lone", &args.lone)?;
    let weight_ok = args.rare_weight.is_finite() && args.rare_weight > 0.0;
    if !rare.is_empty() && !weight_ok {
        bail!(
            "--rare-weight must be a number > 0, not {}",
            args.rare_weight
        );
    }
    let mut class_weights = (!rare.is_empty()).then(|| {
        let mut w = [1.0f32; 10];
        for &c in &rare {
            w[c as usize] = args.rare_weight;
        }
        w
    });
    for pair in &args.class_weight {
        let parsed = pair.split_once('=').and_then(|(name, w)| {
            let w: f32 = w.trim().parse().ok()?;
            Some((name, w))
        });
        let Some((name, w)) = parsed.filter(|(_, w)| w.is_finite() && *w > 0.0) else {
            bail!("--class-weight: expected CLASS=WEIGHT with a weight > 0, not {pair:?}");
        };
        let c = parse_classes("--class-weight", &[name.to_string()])?[0];
        class_weights.get_or_insert([1.0; 10])[c as usize] = w;
    }
    Ok(MosaicConfig {
        single_item_prob: args.single_items,
        class_weights,
        lone_classes: lone,
        ..MosaicConfig::default()
    })
}

/// Fail before training, not after it, when the output is taken.
pub(super) fn check_out(out: &Path, force: bool) -> Result<()> {
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

/// The progress bar, the periodic evaluation on a fixed test batch and `train_log.jsonl`
/// (one JSON line per step), shared by `train` and `finetune`.
pub(super) struct Progress {
    pub bar: ProgressBar,
    pub eval: Option<(u64, Batch)>,
    pub log: std::fs::File,
    pub started: Instant,
}

impl Progress {
    /// A bar labelled `prefix` over `steps`, logging to `{out}/train_log.jsonl`.
    pub fn new(prefix: &str, steps: u64, out: &Path, eval: Option<(u64, Batch)>) -> Result<Self> {
        let log_path = out.join("train_log.jsonl");
        let log = std::fs::File::create(&log_path)
            .with_context(|| format!("creating {}", log_path.display()))?;
        let bar = ProgressBar::with_draw_target(Some(steps), ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template(
                "{prefix} [{bar:30}] {pos}/{len} {elapsed_precise} ETA {eta} {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        bar.set_prefix(prefix.to_string());
        bar.enable_steady_tick(Duration::from_millis(500));
        Ok(Progress {
            bar,
            eval,
            log,
            started: Instant::now(),
        })
    }
}

/// Batch 0 of the test-split mosaics of `seed` (default config): the fixed evaluation batch.
pub(super) fn fixed_test_batch(
    data: &Path,
    seed: u64,
    batch: usize,
    tokenizer: ClipTokenizer,
    preprocess: PreprocessConfig,
    negatives: NegativePairs,
) -> Result<Batch> {
    let mut test = MosaicBatches {
        generator: MosaicGenerator::try_new(
            FashionMnist::load(data, Split::Test)?,
            MosaicConfig::default(),
            seed,
        )?,
        tokenizer,
        batch_size: batch,
        preprocess,
        negatives,
    };
    Ok(test.batch(0)?)
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
    let train_mosaic = train_mosaic_config(&args)?;
    let train_data = FashionMnist::load(&args.data, Split::Train)?;

    let ctx = pairlens::data::max_caption_words(mosaic.max_items) + 2;
    let (tokenizer, tok_json) = builtin_tokenizer(ctx)?;
    let model_cfg = builtin_config(&tokenizer, mosaic.canvas, mosaic.max_items);
    let pp_json = builtin_preprocess_json(mosaic.canvas);
    let pp = PreprocessConfig::from_hf_json(&pp_json, Path::new("preprocessor_config.json"))?;
    let mut train = MosaicBatches {
        generator: MosaicGenerator::try_new(train_data, train_mosaic.clone(), args.seed)?,
        tokenizer: tokenizer.clone(),
        batch_size: args.batch,
        preprocess: pp.clone(),
        negatives: args.negatives.into(),
    };
    let eval = if args.eval_every > 0 {
        let batch = fixed_test_batch(
            &args.data,
            args.seed,
            args.batch,
            tokenizer,
            pp,
            args.negatives.into(),
        )?;
        Some((args.eval_every, batch))
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
    let mut progress = Progress::new("train", args.steps, &args.out, eval)?;
    if let Some(w) = train_mosaic.class_weights {
        let named: Vec<String> = CLASS_KEYS
            .iter()
            .zip(w)
            .filter(|(_, w)| *w != 1.0)
            .map(|(k, w)| format!("{k}={w}"))
            .collect();
        progress.bar.println(format!(
            "shifted training mosaics: class weights {}",
            named.join(", ")
        ));
    }
    if !args.lone.is_empty() {
        progress.bar.println(format!(
            "shifted training mosaics: lone [{}]",
            args.lone.join(", ")
        ));
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: Args,
    }

    fn config(extra: &[&str]) -> Result<MosaicConfig> {
        let mut argv = vec!["train", "--data", "d", "--out", "o"];
        argv.extend_from_slice(extra);
        train_mosaic_config(&Cli::try_parse_from(argv)?.args)
    }

    #[test]
    fn class_weight_spells_the_same_shift_as_rare() {
        let rare = config(&["--rare", "shirt,coat", "--rare-weight", "2.25"]).unwrap();
        let named = config(&["--class-weight", "shirt=2.25,coat=2.25"]).unwrap();
        assert_eq!(rare, named);
        let w = named.class_weights.unwrap();
        assert_eq!((w[6], w[4], w[0]), (2.25, 2.25, 1.0));
        assert_eq!(config(&[]).unwrap().class_weights, None);
    }

    #[test]
    fn class_weight_refuses_bad_pairs() {
        for bad in ["shirt", "shirt=0", "shirt=-1", "shirt=x", "sock=2"] {
            let err = config(&["--class-weight", bad]).unwrap_err().to_string();
            assert!(err.contains("--class-weight"), "{bad}: {err}");
        }
        assert!(config(&["--rare", "shirt", "--class-weight", "coat=2"]).is_err());
    }
}

//! `pairlens eval-retrieval`: held-out numbers for a checkpoint on Fashion-MNIST's test split:
//! image↔caption R@1/R@5 over seeded test mosaics and zero-shot accuracy on single test items.

use std::fmt::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use pairlens::data::{FashionMnist, MosaicConfig, MosaicGenerator, Split};
use pairlens::eval::{evaluate_retrieval, evaluate_zero_shot, Placement, Recall};
use pairlens::Progress;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub model: super::ModelArgs,
    /// Directory with the Fashion-MNIST IDX files (Debian: /usr/share/datasets/fashion-mnist).
    #[arg(long)]
    pub data: PathBuf,
    /// Test mosaics to retrieve among (each caption competes with count − 1 others).
    #[arg(long, default_value_t = 1000)]
    pub count: usize,
    /// Seed of the test mosaics.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Images or captions per forward pass.
    #[arg(long, default_value_t = 256)]
    pub batch: usize,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

/// A bar on stderr that appears once a phase has run for a second.
struct Bar {
    started: Instant,
    bar: Option<ProgressBar>,
    label: String,
    total: u64,
    done: u64,
}

impl Bar {
    fn new() -> Self {
        Bar {
            started: Instant::now(),
            bar: None,
            label: String::new(),
            total: 0,
            done: 0,
        }
    }
}

impl Progress for Bar {
    fn start(&mut self, label: &str, total: u64) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
        self.started = Instant::now();
        self.label = label.to_string();
        self.total = total;
        self.done = 0;
    }

    fn advance(&mut self, done: u64) {
        self.done += done;
        if self.bar.is_none() && self.started.elapsed() > Duration::from_secs(1) {
            let bar = ProgressBar::with_draw_target(Some(self.total), ProgressDrawTarget::stderr());
            bar.set_style(
                ProgressStyle::with_template(
                    "{prefix:>12} [{bar:32}] {pos}/{len} {elapsed_precise} ETA {eta}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
            bar.set_prefix(self.label.clone());
            self.bar = Some(bar);
        }
        if let Some(bar) = &self.bar {
            bar.set_position(self.done);
        }
    }
}

impl Drop for Bar {
    fn drop(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}

pub fn run(args: Args) -> Result<()> {
    if args.count == 0 {
        bail!("--count must be at least 1");
    }
    if args.batch == 0 {
        bail!("--batch must be at least 1");
    }
    let started = Instant::now();
    let loaded = args.model.load()?;
    let test = FashionMnist::load(&args.data, Split::Test)?;
    // The built-in model's mosaics, on the model's own canvas when it is square.
    let (h, w) = loaded.model.vision.config.image_size;
    let mut mosaic = MosaicConfig::default();
    if h == w && h >= mosaic.min_size {
        mosaic.canvas = h;
    }
    let gen = MosaicGenerator::try_new(test.clone(), mosaic.clone(), args.seed)?;

    let mut bar = Bar::new();
    let r = evaluate_retrieval(&loaded, &gen, args.count, args.batch, &mut bar)?;
    // The generator's own one-item draw is the reference; centred ×2 is a fixed second view.
    let gen_place = Placement::Generator { seed: args.seed };
    let z = evaluate_zero_shot(&loaded, &test, &mosaic, gen_place, args.batch, &mut bar)?;
    let centred = Placement::centred_max(&mosaic);
    let zc = evaluate_zero_shot(&loaded, &test, &mosaic, centred, args.batch, &mut bar)?;
    drop(bar);
    let seconds = started.elapsed().as_secs_f64();
    let items = args.count + 2 * test.len();

    let mut out = String::new();
    if args.json {
        let v = serde_json::json!({
            "model": args.model.json_name(),
            "data": args.data,
            "split": "test",
            "retrieval": r,
            "zero_shot": z,
            "zero_shot_centred": zc,
            "seconds": seconds,
            "items_per_s": items as f64 / seconds,
        });
        out = serde_json::to_string(&v)? + "\n";
    } else {
        let m = &r.metrics;
        let pct = |x: f64| format!("{:5.1}%", 100.0 * x);
        let line = |name: &str, x: &Recall| {
            format!(
                "  {name:<14} R@1 {}  R@5 {}  median rank {}\n",
                pct(x.r1),
                pct(x.r5),
                x.median_rank
            )
        };
        writeln!(out, "model: {} ({})", args.model.name(), loaded.format)?;
        writeln!(
            out,
            "retrieval over {} test mosaics (seed {}, {}×{} canvas):",
            m.count, r.seed, mosaic.canvas, mosaic.canvas
        )?;
        out += &line("image → text", &m.image_to_text);
        out += &line("text → image", &m.text_to_image);
        out += &line("chance", &m.chance);
        writeln!(
            out,
            "  {} of the {} captions are shared word for word by several mosaics (ties count against the model)",
            r.shared_captions, m.count
        )?;
        writeln!(out, "  {:.2} s, {:.0} mosaics/s", r.seconds, r.items_per_s)?;
        let (zm, cm) = (&z.metrics, &zc.metrics);
        let side = mosaic.max_size.min(mosaic.canvas);
        writeln!(
            out,
            "zero-shot on {} single test items on the {}×{} canvas, \
             placed as one-item mosaics (seed {}) / centred at {side}×{side}:",
            zm.count, z.canvas, z.canvas, args.seed
        )?;
        writeln!(
            out,
            "  accuracy {} / {}  balanced {} / {}  synonym ensemble {} / {}  chance {}",
            pct(zm.accuracy),
            pct(cm.accuracy),
            pct(zm.balanced_accuracy),
            pct(cm.balanced_accuracy),
            pct(z.ensemble_accuracy),
            pct(zc.ensemble_accuracy),
            pct(z.chance)
        )?;
        for ((c, cc), p) in zm.per_class.iter().zip(&cm.per_class).zip(&z.prompts) {
            writeln!(
                out,
                "  {:<12} {} / {}  \"{p}\"",
                c.name,
                pct(c.accuracy),
                pct(cc.accuracy),
            )?;
        }
        writeln!(
            out,
            "  {:.2} + {:.2} s, {:.0} items/s",
            z.seconds, zc.seconds, z.items_per_s
        )?;
        writeln!(
            out,
            "total {seconds:.2} s for {items} images ({:.0} items/s, model load included)",
            items as f64 / seconds
        )?;
    }
    super::print(&out)
}

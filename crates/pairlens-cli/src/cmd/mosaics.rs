//! `pairlens mosaics`: write seeded Fashion-MNIST captioned mosaics (PNG + data.jsonl), the
//! data the built-in model is trained and evaluated on.

use std::path::PathBuf;

use anyhow::{Context, Result};
use pairlens::data::{export, FashionMnist, MosaicConfig, MosaicGenerator, Split};

#[derive(clap::Args)]
pub struct Args {
    /// Directory with the Fashion-MNIST IDX files (Debian: /usr/share/datasets/fashion-mnist).
    #[arg(long)]
    pub data: PathBuf,
    /// Which split the items come from: train or test.
    #[arg(long, default_value = "test")]
    pub split: String,
    /// Number of mosaics.
    #[arg(long, default_value_t = 1000)]
    pub count: u64,
    /// Index of the first mosaic (mosaic i depends only on the seed and i).
    #[arg(long, default_value_t = 0)]
    pub start: u64,
    /// Seed of the mosaic sequence.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Canvas side in pixels.
    #[arg(long, default_value_t = 64)]
    pub canvas: usize,
    /// Most items per mosaic (the canvas must fit that many 28-pixel cells).
    #[arg(long, default_value_t = 4)]
    pub max_items: usize,
    /// Output directory (created; must be empty unless --force).
    #[arg(long)]
    pub out: PathBuf,
    /// Write into a non-empty output directory, overwriting files of the same names.
    #[arg(long)]
    pub force: bool,
}

pub fn run(args: Args) -> Result<()> {
    let split: Split = args.split.parse()?;
    let data = FashionMnist::load(&args.data, split)?;
    let config = MosaicConfig {
        canvas: args.canvas,
        max_items: args.max_items,
        ..MosaicConfig::default()
    };
    let gen = MosaicGenerator::try_new(data, config, args.seed)?;
    let end = args
        .start
        .checked_add(args.count)
        .context("--start + --count overflows")?;
    export(&gen, args.start..end, &args.out, args.force)?;
    super::print(&format!(
        "wrote {} {} mosaics (seed {}) to {}\n",
        args.count,
        split.name(),
        args.seed,
        args.out.display()
    ))
}

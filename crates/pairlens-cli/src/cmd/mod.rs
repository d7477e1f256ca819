//! Subcommands, one module each, plus what they share.

pub mod compare_grounding;
pub mod embed;
pub mod eval_grounding;
pub mod eval_retrieval;
pub mod explain;
pub mod finetune;
mod method;
pub mod mosaics;
mod progress;
pub mod serve;
pub mod train;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use pairlens::io::checkpoint::{self, LoadedModel};
use pairlens::io::image::{decode_file_within, DecodedImage};
use pairlens::{Device, Explainer, ModelSource};

/// The flags that choose a model and where it computes.
#[derive(clap::Args, Debug, Clone)]
pub struct ModelArgs {
    /// Checkpoint directory (Hugging Face CLIP or open_clip hub layout)
    /// [default: the built-in Fashion-MNIST model].
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Where the towers compute: cpu, cuda (the first GPU) or cuda:N (a build with
    /// `--features cuda`).
    #[arg(long, default_value = "cpu", value_parser = parse_device)]
    pub device: Device,
}

impl ModelArgs {
    /// The model opened for explaining (the built-in model without `--model`).
    pub fn open(&self) -> Result<Explainer> {
        let source = ModelSource::from_option(self.model.as_deref());
        Explainer::open(source.clone(), &self.device).with_context(|| format!("loading {source}"))
    }

    /// The model loaded whole, every weight checked, for commands that evaluate or train it.
    pub fn load(&self) -> Result<LoadedModel> {
        load_model(self.model.as_deref(), &self.device)
    }
}

/// The limit every command that reads images applies.
#[derive(clap::Args, Debug, Clone)]
pub struct ImageLimit {
    /// Largest image accepted, in pixels (width × height), checked from the file's header
    /// before anything is decoded.
    #[arg(long, default_value_t = pairlens::io::image::DEFAULT_MAX_PIXELS)]
    pub max_pixels: u64,
}

impl ImageLimit {
    /// Decode `path`, refusing images over the limit.
    pub fn decode(&self, path: &Path) -> Result<DecodedImage> {
        decode_file_within(path, self.max_pixels).map_err(|e| match e {
            pairlens::Error::ImageTooLarge { .. } => {
                anyhow::anyhow!("{e}; --max-pixels sets another limit")
            }
            e => e.into(),
        })
    }
}

/// A checkpoint loaded whole, every weight checked (the built-in model without a directory).
pub fn load_model(dir: Option<&Path>, device: &Device) -> Result<LoadedModel> {
    match dir {
        Some(dir) => checkpoint::load(dir, device)
            .with_context(|| format!("loading model {}", dir.display())),
        None => pairlens::builtin::load(device)
            .with_context(|| format!("loading {}", pairlens::builtin::NAME)),
    }
}

/// A caption too long for the context, reported with the flag that truncates it.
pub fn truncate_hint<T>(result: pairlens::Result<T>) -> Result<T> {
    result.map_err(|e| match &e {
        pairlens::Error::Caption { msg, .. } if msg.contains("exceed the context length") => {
            anyhow::anyhow!("{e} (--truncate does that)")
        }
        _ => e.into(),
    })
}

/// `--device`'s parser: `cpu`, `cuda` or `cuda:N`.
fn parse_device(name: &str) -> Result<Device, String> {
    pairlens::parse_device(name).map_err(|e| e.to_string())
}

/// Write to stdout; a closed pipe (`pairlens … | head`) is not an error.
pub fn print(text: &str) -> Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|_| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e).context("writing to stdout"),
        _ => Ok(()),
    }
}

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

use std::path::Path;

use anyhow::{Context, Result};
use pairlens::io::checkpoint::{self, LoadedModel};
use pairlens::{Device, Explainer, ModelSource};

/// The model to explain with, on `device`: a checkpoint directory, or without one the built-in
/// model (written once into the user's cache directory, see [`pairlens::builtin`]).
pub fn open_explainer(dir: Option<&Path>, device: &Device) -> Result<Explainer> {
    let source = ModelSource::from_option(dir);
    Explainer::open(source.clone(), device).with_context(|| format!("loading {source}"))
}

/// A checkpoint loaded whole, every weight checked, for the commands that train or evaluate it
/// (the built-in model without a directory).
pub fn load_model(dir: Option<&Path>, device: &Device) -> Result<LoadedModel> {
    match dir {
        Some(dir) => checkpoint::load(dir, device)
            .with_context(|| format!("loading model {}", dir.display())),
        None => pairlens::builtin::load(device)
            .with_context(|| format!("loading {}", pairlens::builtin::NAME)),
    }
}

/// `--device`'s parser: `cpu`, `cuda` or `cuda:N`.
pub fn parse_device(name: &str) -> Result<Device, String> {
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

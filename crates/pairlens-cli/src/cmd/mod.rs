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
use candle_core::Device;
use pairlens::io::checkpoint::{self, LoadedModel};

/// Load a checkpoint directory on the CPU; without one, the built-in model (written once into
/// the user's cache directory, see [`pairlens::builtin`]).
pub fn load_model(dir: Option<&Path>) -> Result<LoadedModel> {
    match dir {
        Some(dir) => checkpoint::load(dir, &Device::Cpu)
            .with_context(|| format!("loading model {}", dir.display())),
        None => pairlens::builtin::load(&Device::Cpu)
            .with_context(|| format!("loading {}", pairlens::builtin::NAME)),
    }
}

/// A checkpoint directory opened for loading in parts (the built-in model without one), and
/// what to call it in errors.
pub fn open_checkpoint(dir: Option<&Path>) -> Result<(checkpoint::Checkpoint, String)> {
    match dir {
        Some(dir) => {
            let what = format!("model {}", dir.display());
            let c = checkpoint::Checkpoint::open(dir).with_context(|| format!("loading {what}"))?;
            Ok((c, what))
        }
        None => {
            let what = pairlens::builtin::NAME.to_string();
            let c = pairlens::builtin::checkpoint().with_context(|| format!("loading {what}"))?;
            Ok((c, what))
        }
    }
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

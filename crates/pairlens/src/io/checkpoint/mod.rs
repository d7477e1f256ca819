//! Checkpoint directories → a ready [`ClipModel`], its tokenizer and its image preprocessing.
//! Two layouts, told apart by their config file: Hugging Face `CLIPModel` (`config.json`) and
//! open_clip hub directories (`open_clip_config.json`). Nothing is fetched from the network.

mod hf;
mod json;
mod open_clip;
pub mod save;
mod tensors;

use std::fmt;
use std::path::{Path, PathBuf};

use candle_core::Device;

use crate::io::preprocess::{PreprocessConfig, ResizeMode};
use crate::io::tokenizer::{ClipTokenizer, TextCleaning};
use crate::model::{ClipConfig, ClipModel, ClipWeights, LayerNorm, Linear, TextPooling};
use crate::{Error, Result};
use tensors::TensorStore;
pub use save::save_hf;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CheckpointFormat {
    /// transformers `CLIPModel` directory.
    Hf,
    /// open_clip hub directory.
    OpenClip,
}

impl fmt::Display for CheckpointFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CheckpointFormat::Hf => "hf",
            CheckpointFormat::OpenClip => "open_clip",
        })
    }
}

/// Everything needed to embed a caption and an image the way the checkpoint's own library does.
pub struct LoadedModel {
    pub dir: PathBuf,
    pub format: CheckpointFormat,
    pub model: ClipModel,
    pub tokenizer: ClipTokenizer,
    pub preprocess: PreprocessConfig,
}

/// Which layout `dir` holds (by its config file; open_clip wins if both are present, since
/// open_clip hub repos sometimes also carry a HF config for other tools).
pub fn detect(dir: &Path) -> Result<CheckpointFormat> {
    if !dir.exists() {
        return Err(Error::UnknownCheckpoint {
            dir: dir.to_path_buf(),
            msg: "no such directory".into(),
        });
    }
    if !dir.is_dir() {
        return Err(Error::UnknownCheckpoint {
            dir: dir.to_path_buf(),
            msg: "is a file; pass the directory that holds config.json or open_clip_config.json"
                .into(),
        });
    }
    if dir.join(open_clip::CONFIG).is_file() {
        Ok(CheckpointFormat::OpenClip)
    } else if dir.join(hf::CONFIG).is_file() {
        Ok(CheckpointFormat::Hf)
    } else {
        Err(Error::UnknownCheckpoint {
            dir: dir.to_path_buf(),
            msg: "neither config.json (Hugging Face CLIP) nor open_clip_config.json (open_clip) found".into(),
        })
    }
}

/// The model geometry only (no weights, no tokenizer), for quick checks.
/// For HF the token ids are the config's (a legacy `eos_token_id == 2` gives EOT = vocab - 1);
/// [`load`] replaces them with the tokenizer's.
pub fn read_config(dir: &Path) -> Result<(CheckpointFormat, ClipConfig)> {
    let format = detect(dir)?;
    let cfg = match format {
        CheckpointFormat::Hf => hf::read_config(dir)?,
        CheckpointFormat::OpenClip => open_clip::read_config(dir)?.0,
    };
    Ok((format, cfg))
}

/// Load a checkpoint directory onto `device`.
/// `a` on its own thread while `b` runs on this one (the tokenizer builds while the weights are
/// read: with zero-copy weights, building CLIP's 49k-token tokenizer is the longer of the two).
fn beside<A: Send, B>(a: impl FnOnce() -> A + Send, b: impl FnOnce() -> B) -> (A, B) {
    std::thread::scope(|s| {
        let a = s.spawn(a);
        let b = b();
        let a = a.join().unwrap_or_else(|e| std::panic::resume_unwind(e));
        (a, b)
    })
}

pub fn load(dir: &Path, device: &Device) -> Result<LoadedModel> {
    let format = detect(dir)?;
    let tok_path = dir.join("tokenizer.json");
    let (mut config, weights, tokenizer, preprocess) = match format {
        CheckpointFormat::Hf => {
            let config = hf::read_config(dir)?;
            if !tok_path.is_file() {
                return Err(Error::MissingFile {
                    path: tok_path,
                    what: "tokenizer; vocab.json/merges.txt alone are not read".into(),
                });
            }
            let pp_path = dir.join("preprocessor_config.json");
            let (tokenizer, weights) = beside(
                || {
                    let ctx = config.text.context_length;
                    ClipTokenizer::from_file(&tok_path, TextCleaning::None, ctx, None)
                },
                || hf::read_weights(&hf::open_weights(dir)?, &config, device),
            );
            let tokenizer = tokenizer?;
            let preprocess = if pp_path.is_file() {
                PreprocessConfig::from_hf_file(&pp_path)?
            } else {
                PreprocessConfig::hf_default(config.vision.image_size)
            };
            (config, weights?, tokenizer, preprocess)
        }
        CheckpointFormat::OpenClip => {
            let (config, extra) = open_clip::read_config(dir)?;
            let ctx = config.text.context_length;
            let (tokenizer, weights) = beside(
                || {
                    if tok_path.is_file() {
                        let pad = Some(extra.pad_id);
                        ClipTokenizer::from_file(&tok_path, TextCleaning::OpenClip, ctx, pad)
                    } else {
                        ClipTokenizer::bundled_open_clip(ctx)
                    }
                },
                || {
                    let store = open_clip::open_weights(dir)?;
                    open_clip::read_weights(&store, &config, &extra, device)
                },
            );
            let tokenizer = tokenizer?;
            let preprocess = PreprocessConfig::from_open_clip(
                &extra.preprocess_cfg,
                config.vision.image_size,
                &dir.join(open_clip::CONFIG),
            )?;
            (config, weights?, tokenizer, preprocess)
        }
    };

    // The tokenizer is the authority on its special ids; the model must be able to embed them all.
    let tok_file = if tok_path.is_file() {
        tok_path.clone()
    } else {
        PathBuf::from("<bundled CLIP tokenizer>")
    };
    if tokenizer.vocab_size() > config.text.vocab_size {
        return Err(Error::bad_config(
            &tok_file,
            format!(
                "the tokenizer has {} tokens but the model's token embedding has only {} rows",
                tokenizer.vocab_size(),
                config.text.vocab_size
            ),
        ));
    }
    if let TextPooling::FirstId(eos) = config.text.pooling {
        if eos != tokenizer.eot_id() {
            return Err(Error::bad_config(
                dir.join(hf::CONFIG),
                format!(
                    "text_config.eos_token_id is {eos} but the tokenizer's end-of-text id is {}",
                    tokenizer.eot_id()
                ),
            ));
        }
    }
    // Preprocessing must produce what the vision tower takes, or every image fails later.
    let input = match (preprocess.crop, preprocess.resize) {
        (Some(c), _) => Some(c),
        (None, ResizeMode::Exact { height, width }) => Some((height, width)),
        _ => None,
    };
    if let Some(input) = input.filter(|&i| i != config.vision.image_size) {
        let pp_file = match format {
            CheckpointFormat::Hf => dir.join("preprocessor_config.json"),
            CheckpointFormat::OpenClip => dir.join(open_clip::CONFIG),
        };
        return Err(Error::bad_config(
            pp_file,
            format!(
                "image preprocessing produces {}x{} (h x w) inputs but the vision tower takes {}x{}",
                input.0, input.1, config.vision.image_size.0, config.vision.image_size.1
            ),
        ));
    }
    config.text.sot_token_id = tokenizer.sot_id();
    config.text.eot_token_id = tokenizer.eot_id();
    config.text.pad_token_id = tokenizer.pad_id();

    let model = ClipModel::new(config, weights)?;
    Ok(LoadedModel {
        dir: dir.to_path_buf(),
        format,
        model,
        tokenizer,
        preprocess,
    })
}

/// The geometry and the weights (no tokenizer, no preprocessing).
pub fn load_weights(
    dir: &Path,
    device: &Device,
) -> Result<(CheckpointFormat, ClipConfig, ClipWeights)> {
    let format = detect(dir)?;
    let (config, weights) = match format {
        CheckpointFormat::Hf => {
            let config = hf::read_config(dir)?;
            let store = hf::open_weights(dir)?;
            let weights = hf::read_weights(&store, &config, device)?;
            (config, weights)
        }
        CheckpointFormat::OpenClip => {
            let (config, extra) = open_clip::read_config(dir)?;
            let store = open_clip::open_weights(dir)?;
            let weights = open_clip::read_weights(&store, &config, &extra, device)?;
            (config, weights)
        }
    };
    Ok((format, config, weights))
}

fn layer_norm(
    st: &TensorStore,
    p: &str,
    width: usize,
    eps: f64,
    dev: &Device,
) -> Result<LayerNorm> {
    Ok(LayerNorm {
        weight: st.tensor(&format!("{p}.weight"), &[width], dev)?,
        bias: st.tensor(&format!("{p}.bias"), &[width], dev)?,
        eps,
    })
}

fn linear(
    st: &TensorStore,
    p: &str,
    out: usize,
    inp: usize,
    bias: bool,
    dev: &Device,
) -> Result<Linear> {
    Ok(Linear {
        weight: st.tensor(&format!("{p}.weight"), &[out, inp], dev)?,
        bias: if bias {
            Some(st.tensor(&format!("{p}.bias"), &[out], dev)?)
        } else {
            None
        },
    })
}

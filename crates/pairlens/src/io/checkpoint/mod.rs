//! Checkpoint directories → a ready [`ClipModel`], its tokenizer and its image preprocessing.
//! Two layouts, told apart by their config file: Hugging Face `CLIPModel` (`config.json`) and
//! open_clip hub directories (`open_clip_config.json`). Nothing is fetched from the network.

mod hf;
mod json;
mod open_clip;
pub mod save;
mod siglip;
mod tensors;

use std::fmt;
use std::path::{Path, PathBuf};

use candle_core::Device;

use crate::io::caption_tokenizer::CaptionTokenizer;
use crate::io::preprocess::{PreprocessConfig, ResizeMode, MAX_RESIZED_PIXELS};
use crate::io::siglip_tokenizer::SiglipTokenizer;
use crate::io::tokenizer::{ClipTokenizer, TextCleaning};
use crate::model::{ClipConfig, ClipModel, ClipWeights, TextPooling};
use crate::{Error, Result};
pub use save::save_hf;

/// SigLIP's SentencePiece model file.
const SENTENCEPIECE: &str = "spiece.model";

/// The layout of a checkpoint directory; `Display` gives `hf`, `hf-siglip` or `open_clip`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CheckpointFormat {
    /// transformers `CLIPModel` directory.
    Hf,
    /// transformers `SiglipModel` directory (SigLIP, and SigLIP 2 at a fixed resolution).
    HfSiglip,
    /// open_clip hub directory.
    OpenClip,
}

impl fmt::Display for CheckpointFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CheckpointFormat::Hf => "hf",
            CheckpointFormat::HfSiglip => "hf-siglip",
            CheckpointFormat::OpenClip => "open_clip",
        })
    }
}

/// Everything needed to embed a caption and an image the way the checkpoint's own library does.
pub struct LoadedModel {
    /// The checkpoint directory it was loaded from.
    pub dir: PathBuf,
    /// The directory's layout.
    pub format: CheckpointFormat,
    /// Both towers with their weights.
    pub model: ClipModel,
    /// The caption tokenizer, checked against the text tower's vocabulary and pooling id.
    pub tokenizer: CaptionTokenizer,
    /// The image preprocessing, checked to produce the vision tower's input size.
    pub preprocess: PreprocessConfig,
}

/// Refuses a vision tower input (`image_size`, h x w) larger than preprocessing ever makes
/// ([`MAX_RESIZED_PIXELS`]): no image could reach such a tower, and its patch grid would
/// overflow the sequence length.
fn check_input_size(sec: &json::Section, image_size: (usize, usize)) -> Result<()> {
    let (h, w) = image_size;
    if h as u128 * w as u128 > MAX_RESIZED_PIXELS as u128 {
        return Err(sec.err(
            "image_size",
            format!(
                "{h}x{w} is more than the {} megapixels image preprocessing makes at most",
                MAX_RESIZED_PIXELS / 1_000_000
            ),
        ));
    }
    Ok(())
}

/// Which layout `dir` holds (by its config file; open_clip wins if both are present, since
/// open_clip hub repos sometimes also carry a HF config for other tools).
fn detect(dir: &Path) -> Result<CheckpointFormat> {
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
        let path = dir.join(hf::CONFIG);
        let json = json::read_json(&path)?;
        match json.get("model_type").and_then(|v| v.as_str()) {
            Some("siglip") => Ok(CheckpointFormat::HfSiglip),
            _ => Ok(CheckpointFormat::Hf),
        }
    } else {
        Err(Error::UnknownCheckpoint {
            dir: dir.to_path_buf(),
            msg: "neither config.json (Hugging Face CLIP or SigLIP) nor open_clip_config.json \
                  (open_clip) found"
                .into(),
        })
    }
}

/// The model geometry only (no weights, no tokenizer), for quick checks.
pub fn read_config(dir: &Path) -> Result<(CheckpointFormat, ClipConfig)> {
    let format = detect(dir)?;
    let cfg = match format {
        CheckpointFormat::Hf => hf::read_config(dir)?,
        CheckpointFormat::HfSiglip => siglip::read_config(dir)?,
        CheckpointFormat::OpenClip => open_clip::read_config(dir)?.0,
    };
    Ok((format, cfg))
}

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

/// Whether loading checks every weight for NaN and infinities.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ValueCheck {
    /// Every value, as it is read: a bad checkpoint fails at load, naming the tensor.
    Now,
    /// None at load (the weights stay untouched pages of the file until used). For callers that
    /// check their results instead — a non-finite weight that is used makes them non-finite —
    /// and then call [`Checkpoint::find_bad_value`] to name it.
    Deferred,
}

/// Load a checkpoint directory onto `device`, every weight checked.
pub fn load(dir: &Path, device: &Device) -> Result<LoadedModel> {
    let checkpoint = Checkpoint::open(dir)?;
    let (tokenizer, model) = beside(
        || checkpoint.tokenizer(),
        || checkpoint.model(device, ValueCheck::Now),
    );
    let (model, tokenizer) = (model?, tokenizer?);
    checkpoint.check_tokenizer(&tokenizer)?;
    Ok(LoadedModel {
        dir: checkpoint.dir.clone(),
        format: checkpoint.format,
        model,
        tokenizer,
        preprocess: checkpoint.preprocess()?,
    })
}

/// A checkpoint directory whose configuration is read; its model and tokenizer load separately
/// (so a caller can start on the image while the tokenizer builds). [`load`] is the one-call
/// version.
pub(crate) struct Checkpoint {
    dir: PathBuf,
    format: CheckpointFormat,
    config: ClipConfig,
    /// open_clip's settings beyond the geometry (`None` for HF).
    open_clip: Option<open_clip::OpenClipExtra>,
}

impl Checkpoint {
    /// Reads the configuration; for HF directories, also requires the tokenizer's file.
    pub(crate) fn open(dir: &Path) -> Result<Checkpoint> {
        let format = detect(dir)?;
        let (config, open_clip) = match format {
            CheckpointFormat::HfSiglip => {
                // SigLIP's spiece.model, or else SigLIP 2's tokenizer.json (Gemma's tokenizer).
                let spm = dir.join(SENTENCEPIECE);
                if !spm.is_file() && !dir.join("tokenizer.json").is_file() {
                    return Err(Error::MissingFile {
                        path: spm,
                        what: "SigLIP's SentencePiece tokenizer; SigLIP 2 checkpoints have \
                               tokenizer.json instead, which is not there either"
                            .into(),
                    });
                }
                (siglip::read_config(dir)?, None)
            }
            CheckpointFormat::Hf => {
                let tok_path = dir.join("tokenizer.json");
                if !tok_path.is_file() {
                    return Err(Error::MissingFile {
                        path: tok_path,
                        what: "tokenizer; vocab.json/merges.txt alone are not read".into(),
                    });
                }
                (hf::read_config(dir)?, None)
            }
            CheckpointFormat::OpenClip => {
                let (config, extra) = open_clip::read_config(dir)?;
                (config, Some(extra))
            }
        };
        Ok(Checkpoint {
            dir: dir.to_path_buf(),
            format,
            config,
            open_clip,
        })
    }

    /// The directory.
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// Its layout.
    pub(crate) fn format(&self) -> CheckpointFormat {
        self.format
    }

    /// The towers, with every weight read onto `device`.
    pub(crate) fn model(&self, device: &Device, check: ValueCheck) -> Result<ClipModel> {
        let weights = self.weights(device, check)?;
        ClipModel::new(self.config.clone(), weights)
    }

    fn weights(&self, device: &Device, check: ValueCheck) -> Result<ClipWeights> {
        let mut store = match &self.open_clip {
            None => hf::open_weights(&self.dir)?,
            Some(_) => open_clip::open_weights(&self.dir)?,
        };
        store.check_values = check == ValueCheck::Now;
        match &self.open_clip {
            None if self.format == CheckpointFormat::HfSiglip => {
                store.read_weights(&self.config, &siglip::source, device)
            }
            None => store.read_weights(&self.config, &hf::source, device),
            Some(extra) => {
                let has = |name: &str| store.contains(name);
                let source = |p| open_clip::source(p, extra.text_prefix, has);
                store.read_weights(&self.config, &source, device)
            }
        }
    }

    /// After a [`ValueCheck::Deferred`] load gave non-finite results: reads every weight again,
    /// checked, and returns the error naming the first bad value (`Ok` if there is none).
    pub(crate) fn find_bad_value(&self) -> Result<()> {
        self.weights(&Device::Cpu, ValueCheck::Now).map(|_| ())
    }

    /// The tokenizer (`tokenizer.json`, SigLIP's `spiece.model`, or for open_clip without a
    /// tokenizer.json the bundled CLIP BPE).
    pub(crate) fn tokenizer(&self) -> Result<CaptionTokenizer> {
        let tok_path = self.dir.join("tokenizer.json");
        let ctx = self.config.text.context_length;
        if self.format == CheckpointFormat::HfSiglip {
            return Ok(SiglipTokenizer::from_dir(&self.dir, ctx)?.into());
        }
        let clip = match &self.open_clip {
            None => ClipTokenizer::from_file(&tok_path, TextCleaning::None, ctx, None),
            Some(extra) if tok_path.is_file() => {
                let pad = Some(extra.pad_id);
                ClipTokenizer::from_file(&tok_path, TextCleaning::OpenClip, ctx, pad)
            }
            Some(_) => ClipTokenizer::bundled_open_clip(ctx),
        };
        Ok(clip?.into())
    }

    /// The image preprocessing, checked to produce what the vision tower takes.
    pub(crate) fn preprocess(&self) -> Result<PreprocessConfig> {
        let (dir, config) = (&self.dir, &self.config);
        let preprocess = match &self.open_clip {
            None => {
                let pp_path = dir.join("preprocessor_config.json");
                let size = config.vision.image_size;
                match (self.format, pp_path.is_file()) {
                    (CheckpointFormat::HfSiglip, true) => {
                        PreprocessConfig::siglip_from_hf_file(&pp_path, size)?
                    }
                    (CheckpointFormat::HfSiglip, false) => PreprocessConfig::siglip_default(size),
                    (_, true) => PreprocessConfig::from_hf_file(&pp_path)?,
                    (_, false) => PreprocessConfig::hf_default(size),
                }
            }
            Some(extra) => PreprocessConfig::from_open_clip(
                &extra.preprocess_cfg,
                config.vision.image_size,
                &dir.join(open_clip::CONFIG),
            )?,
        };
        // Preprocessing must produce what the vision tower takes, or every image fails later.
        let input = match (preprocess.crop, preprocess.resize) {
            (Some(c), _) => Some(c),
            (None, ResizeMode::Exact { height, width }) => Some((height, width)),
            _ => None,
        };
        if let Some(input) = input.filter(|&i| i != config.vision.image_size) {
            let pp_file = match self.format {
                CheckpointFormat::Hf | CheckpointFormat::HfSiglip => {
                    dir.join("preprocessor_config.json")
                }
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
        Ok(preprocess)
    }

    /// Checks that the model can embed every id of `tokenizer` and pools where it ends a text.
    pub(crate) fn check_tokenizer(&self, tokenizer: &CaptionTokenizer) -> Result<()> {
        let (dir, config) = (&self.dir, &self.config);
        let tok_path = dir.join("tokenizer.json");
        let tok_file = if self.format == CheckpointFormat::HfSiglip {
            // The file SiglipTokenizer::from_dir reads.
            match dir.join(SENTENCEPIECE).is_file() {
                true => dir.join(SENTENCEPIECE),
                false => tok_path.clone(),
            }
        } else if tok_path.is_file() {
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
        if let (TextPooling::FirstId(eos), CaptionTokenizer::Clip(tokenizer)) =
            (config.text.pooling, tokenizer)
        {
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
        Ok(())
    }
}

/// The geometry and the weights, every value checked (no tokenizer, no preprocessing).
pub fn load_weights(
    dir: &Path,
    device: &Device,
) -> Result<(CheckpointFormat, ClipConfig, ClipWeights)> {
    let checkpoint = Checkpoint::open(dir)?;
    let weights = checkpoint.weights(device, ValueCheck::Now)?;
    Ok((checkpoint.format, checkpoint.config, weights))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found with the checkpoint fuzz target (`fuzz/`): sizes no file can hold overflowed the
    /// element count of a tensor (`vocab_size` x `hidden_size`) and the vision tower's patch grid
    /// (`image_size`): a panic in debug builds, a wrapped number in release ones. Both are now
    /// errors naming the tensor or the key.
    #[test]
    fn absurd_sizes_are_errors() {
        let fixture =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/models/hf-tiny-quickgelu");
        let dir = std::env::temp_dir().join(format!("pairlens-absurd-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for f in [
            "model.safetensors",
            "tokenizer.json",
            "preprocessor_config.json",
        ] {
            std::fs::copy(fixture.join(f), dir.join(f)).unwrap();
        }
        let config: serde_json::Value =
            serde_json::from_slice(&std::fs::read(fixture.join(hf::CONFIG)).unwrap()).unwrap();
        let cases: [(&str, &str, u64, &str); 2] = [
            ("text_config", "vocab_size", 1 << 30, "too large to exist"),
            ("vision_config", "image_size", 1 << 40, "megapixels"),
        ];
        for (section, key, value, want) in cases {
            let mut c = config.clone();
            c[section][key] = value.into();
            if key == "vocab_size" {
                c[section]["hidden_size"] = (1u64 << 40).into();
            }
            std::fs::write(dir.join(hf::CONFIG), c.to_string()).unwrap();
            let err = load(&dir, &Device::Cpu)
                .err()
                .expect("an error")
                .to_string();
            assert!(err.contains(want), "{section}.{key}: {err}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

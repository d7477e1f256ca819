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
pub mod vocab;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use pairlens::io::checkpoint::{self, LoadedModel};
use pairlens::io::image::{decode_file_within, DecodedImage};
use pairlens::{Device, Explainer, ModelSource};

/// The flags that choose a model and where it computes.
#[derive(clap::Args, Debug, Clone)]
pub struct ModelArgs {
    /// Checkpoint directory (Hugging Face CLIP or SigLIP, or open_clip hub layout)
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

    /// How text output names the model: its directory as given, or the built-in model's name
    /// (never its cache directory, an implementation detail).
    pub fn name(&self) -> String {
        model_name(self.model.as_deref())
    }

    /// How JSON output names the model: its directory as given, or `"built-in"` (as the
    /// viewer's API does).
    pub fn json_name(&self) -> String {
        match &self.model {
            Some(dir) => dir.display().to_string(),
            None => "built-in".to_string(),
        }
    }

    /// The command that lists this model's vocabulary.
    fn vocab_command(&self) -> String {
        match &self.model {
            Some(dir) => format!("pairlens vocab --model {}", dir.display()),
            None => "pairlens vocab".to_string(),
        }
    }

    /// Warns on stderr when `caption` has words the model does not know: they become `<unk>`,
    /// and a caption can score well or badly on the words the model never read. Returns them
    /// for the JSON output.
    pub fn unknown_words(&self, explainer: &Explainer, caption: &str) -> Result<Vec<String>> {
        let words = explainer.unknown_words(caption)?;
        if !words.is_empty() {
            let quoted: Vec<String> = words.iter().map(|w| format!("{w:?}")).collect();
            let (noun, pronoun) = match words.len() {
                1 => ("word", "it"),
                _ => ("words", "them"),
            };
            eprintln!(
                "warning: caption {caption:?}: the model does not know the {noun} {}; it reads \
                 {pronoun} as <unk>. `{}` lists the words it knows",
                quoted.join(", "),
                self.vocab_command()
            );
        }
        Ok(words)
    }
}

/// How text output names the model of a `--model` flag: the directory as given, or the
/// built-in model's name.
pub fn model_name(dir: Option<&Path>) -> String {
    match dir {
        Some(dir) => dir.display().to_string(),
        None => pairlens::builtin::NAME.to_string(),
    }
}

/// An output directory (`--png DIR`, `--out DIR`), checked before the work: it may be missing
/// (it is created), but not a file, nor under one.
pub fn check_out_dir(dir: &Path, flag: &str) -> Result<()> {
    if dir.exists() && !dir.is_dir() {
        anyhow::bail!(
            "{} is not a directory: {flag} takes a directory",
            dir.display()
        );
    }
    check_ancestors(dir)
}

/// The nearest existing ancestor of an output path must be a directory (else creating the
/// path fails after the work, with an OS error that does not say why).
pub fn check_ancestors(path: &Path) -> Result<()> {
    let existing = path.ancestors().skip(1).find(|a| a.exists());
    match existing {
        Some(a) if !a.as_os_str().is_empty() && !a.is_dir() => {
            anyhow::bail!(
                "{}: {} is a file, not a directory",
                path.display(),
                a.display()
            )
        }
        _ => Ok(()),
    }
}

/// Tells stderr that a file was written (stdout may be JSON), once it is complete.
pub fn wrote(path: &Path) {
    eprintln!("wrote {}", path.display());
}

/// The limit every command that reads images applies.
#[derive(clap::Args, Debug, Clone)]
pub struct ImageLimit {
    /// Largest image accepted, in pixels (width × height), checked from the file's header
    /// before anything is decoded.
    #[arg(long, default_value_t = pairlens::io::image::DEFAULT_MAX_PIXELS,
          value_parser = clap::value_parser!(u64).range(1..), allow_negative_numbers = true)]
    pub max_pixels: u64,
}

/// Text arguments (captions): clap's own check names no argument, this one names the flag and
/// shows the text with the bad bytes replaced.
pub fn utf8_text() -> impl clap::builder::TypedValueParser<Value = String> {
    use clap::builder::TypedValueParser;
    clap::builder::OsStringValueParser::new().try_map(|s| {
        s.into_string()
            .map_err(|s| format!("{:?} is not valid UTF-8", s.to_string_lossy()))
    })
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

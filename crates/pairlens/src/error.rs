//! One error type for the library: every variant names the file or input at fault, so the CLI
//! can print it as is.

use std::path::PathBuf;

/// `std::result::Result` with [`Error`] as the default error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Every error the library returns. `Display` gives a complete, user-facing message that
/// starts with the file or input at fault where there is one.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading or writing `path` failed at the operating-system level.
    #[error("{path}: {error}")]
    Io {
        /// The file or directory being read or written.
        path: PathBuf,
        /// The underlying I/O error (in the message, so not repeated as a source).
        error: std::io::Error,
    },

    /// `dir` is missing, is a file, or holds neither a Hugging Face CLIP `config.json` (with
    /// `model_type` "clip") nor an open_clip `open_clip_config.json`.
    #[error("{dir}: not a checkpoint directory pairlens can read: {msg}")]
    UnknownCheckpoint {
        /// The directory given as the checkpoint.
        dir: PathBuf,
        /// Why it is not recognised.
        msg: String,
    },

    /// A file the input needs does not exist: a checkpoint's config, tokenizer or weights, a
    /// shard listed in a weight index, a Fashion-MNIST idx file.
    #[error("{path}: missing file ({what})")]
    MissingFile {
        /// Where the file was expected.
        path: PathBuf,
        /// What the file is, and how to supply it where that helps.
        what: String,
    },

    /// A configuration file (checkpoint config, preprocessor or tokenizer config, weight
    /// index) is not valid JSON, lacks a key, or holds a value pairlens does not support.
    #[error("{path}: bad config: {msg}")]
    BadConfig {
        /// The configuration file.
        path: PathBuf,
        /// The key at fault and what is wrong with it.
        msg: String,
    },

    /// A weight the model's config calls for is absent from the safetensors file(s), or a
    /// weight index names a tensor its shard does not hold.
    #[error("{path}: missing tensor `{name}` (expected shape {expected:?})")]
    MissingTensor {
        /// The weights file searched.
        path: PathBuf,
        /// The tensor's name in the checkpoint.
        name: String,
        /// The shape the config implies (empty when not known at that point).
        expected: Vec<usize>,
    },

    /// A weight's shape disagrees with the one the model's config implies.
    #[error("{path}: tensor `{name}` has shape {got:?}, expected {expected:?}")]
    TensorShape {
        /// The weights file, or the source the model was built from.
        path: PathBuf,
        /// The tensor's name.
        name: String,
        /// The shape the config implies.
        expected: Vec<usize>,
        /// The shape found.
        got: Vec<usize>,
    },

    /// A weight cannot be used as stored: an unreadable safetensors header, an unsupported
    /// dtype, truncated data, or a block count that disagrees with the config.
    #[error("{path}: tensor `{name}`: {msg}")]
    BadTensor {
        /// The weights file, or the source the model was built from.
        path: PathBuf,
        /// The tensor's name (`<header>` for the file header).
        name: String,
        /// What is wrong with it.
        msg: String,
    },

    /// A tokenizer could not be loaded or built (bad `tokenizer.json`, vocabulary or special
    /// tokens).
    #[error("tokenizer: {0}")]
    Tokenizer(String),

    /// A caption cannot be encoded: empty, longer than the model's context (when not
    /// truncating), or with no token to pool at; also a zero-shot prompt with a word outside
    /// the built-in vocabulary.
    #[error("caption {}: {msg}", shown(caption))]
    Caption {
        /// The caption as given.
        caption: String,
        /// What is wrong with it.
        msg: String,
    },

    /// An image file cannot be decoded, or decodes to something preprocessing rejects.
    #[error("{path}: cannot read image: {msg}")]
    Image {
        /// The image file.
        path: PathBuf,
        /// What went wrong.
        msg: String,
    },

    /// An image's header claims more pixels than the caller allows: refused before decoding,
    /// so that a small file cannot make pairlens allocate gigabytes.
    #[error(
        "{path}: the image is {width}×{height} pixels, over the limit of {} megapixels",
        *max_pixels as f64 / 1e6
    )]
    ImageTooLarge {
        /// The image file.
        path: PathBuf,
        /// Width the header claims.
        width: usize,
        /// Height the header claims.
        height: usize,
        /// The limit.
        max_pixels: u64,
    },

    /// An argument or in-memory input is out of range or inconsistent (a layer past the
    /// model's depth, a span outside the caption, a batch size of 0, …); the message says which.
    #[error("{0}")]
    InvalidArgument(String),

    /// A result came out NaN or infinite (weights are read unchecked for speed and checked through the results).
    #[error("{0}")]
    NonFinite(String),

    /// A dataset file is malformed: a Fashion-MNIST idx file, a grounding JSONL, COCO or
    /// Flickr30k Entities file, or a grounding results.csv.
    #[error("{path}: bad dataset file: {msg}")]
    Dataset {
        /// The file at fault.
        path: PathBuf,
        /// What is wrong, with the line or record where known.
        msg: String,
    },

    /// The built-in model could not be written to its cache directory.
    #[error("{path}: {msg}")]
    Cache {
        /// The cache directory or file at fault.
        path: PathBuf,
        /// What failed.
        msg: String,
    },

    /// The caller's [`crate::Progress::cancelled`] asked the computation to stop.
    #[error("cancelled")]
    Cancelled,

    /// A tensor operation failed inside candle (device, dtype or shape errors not caught
    /// earlier).
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

impl Error {
    /// [`Error::Io`] for `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            error: source,
        }
    }

    /// [`Error::BadConfig`] for `path`.
    pub(crate) fn bad_config(path: impl Into<PathBuf>, msg: impl Into<String>) -> Self {
        Error::BadConfig {
            path: path.into(),
            msg: msg.into(),
        }
    }
}

/// A caption as error messages quote it: whole if short, else its start and its length (a
/// 5000-word caption is not echoed back).
fn shown(caption: &str) -> String {
    const SHOWN: usize = 80;
    let chars = caption.chars().count();
    if chars <= SHOWN {
        return format!("{caption:?}");
    }
    let start: String = caption.chars().take(SHOWN).collect();
    format!("{start:?}… ({chars} characters)")
}

//! One error type for the library: every variant names the file or input at fault, so the CLI
//! can print it as is.

use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("{dir}: not a checkpoint directory pairlens can read: {msg}")]
    UnknownCheckpoint { dir: PathBuf, msg: String },

    #[error("{path}: missing file ({what})")]
    MissingFile { path: PathBuf, what: String },

    #[error("{path}: bad config: {msg}")]
    BadConfig { path: PathBuf, msg: String },

    #[error("{path}: missing tensor `{name}` (expected shape {expected:?})")]
    MissingTensor {
        path: PathBuf,
        name: String,
        expected: Vec<usize>,
    },

    #[error("{path}: tensor `{name}` has shape {got:?}, expected {expected:?}")]
    TensorShape {
        path: PathBuf,
        name: String,
        expected: Vec<usize>,
        got: Vec<usize>,
    },

    #[error("{path}: tensor `{name}`: {msg}")]
    BadTensor {
        path: PathBuf,
        name: String,
        msg: String,
    },

    #[error("tokenizer: {0}")]
    Tokenizer(String),

    #[error("caption {caption:?}: {msg}")]
    Caption { caption: String, msg: String },

    #[error("{path}: cannot read image: {msg}")]
    Image { path: PathBuf, msg: String },

    #[error("{0}")]
    InvalidArgument(String),

    /// A result came out NaN or infinite (see [`crate::io::checkpoint::ValueCheck`]).
    #[error("{0}")]
    NonFinite(String),

    #[error("{path}: bad dataset file: {msg}")]
    Dataset { path: PathBuf, msg: String },

    #[error("{path}: {msg}")]
    Cache { path: PathBuf, msg: String },

    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

impl Error {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
    pub fn bad_config(path: impl Into<PathBuf>, msg: impl Into<String>) -> Self {
        Error::BadConfig {
            path: path.into(),
            msg: msg.into(),
        }
    }
}

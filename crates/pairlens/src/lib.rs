//! pairlens: second-order feature-pair attributions for CLIP-style dual encoders.
//!
//! Layout:
//! - [`model`]: the two CLIP towers written op by op, each with a plain forward pass and a
//!   forward-mode (JVP) pass, split at any block.
//! - [`io`]: everything that turns files into model inputs: checkpoints (HF and OpenCLIP
//!   directories), tokenizers, image decoding and Pillow-exact preprocessing.

pub mod attribution;
pub mod builtin;
pub mod data;
pub mod error;
pub mod eval;
pub mod grounding;
pub mod io;
pub mod model;
pub mod render;
pub mod train;

pub use error::{Error, Result};

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
mod device;
pub mod error;
pub mod eval;
pub mod grounding;
pub mod io;
pub mod model;
mod progress;
pub mod render;
mod session;
pub mod train;

pub use candle_core::Device;
pub use device::parse_device;
pub use error::{Error, Result};
pub use progress::{NoProgress, Progress};
pub use session::{Embeddings, Explained, Explainer, ImageSide, ModelSource};

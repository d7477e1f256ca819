//! The CLIP towers, op by op. Every op ([`ops`]) has its forward rule, its tangent (JVP) rule
//! and its reverse (VJP) rule side by side, so that each derivative can be checked against
//! finite differences and the two modes against each other; the towers ([`TextTower`],
//! [`VisionTower`]) run forward, forward mode from any block (the attribution engine) and
//! reverse mode (training).
//!
//! Modules: `config` (geometry), `weights` (the canonical parameter layout every checkpoint
//! format is read into), [`params`] (every parameter as a value: names and shapes in one
//! table), `block` (the transformer block), `text` and `vision` (the towers), `clip` (both),
//! [`ops`], `tangents` (how tangent batches are laid out), `kernels` and `matmul` (CPU kernels,
//! chosen by device), `check` (shape validation).

mod block;
mod check;
mod clip;
mod config;
mod kernels;
mod matmul;
pub mod ops;
pub mod params;
#[cfg(any(test, feature = "test-support"))]
pub mod random;
mod rng;
mod tangents;
mod text;
mod vision;
mod weights;

pub(crate) use block::{mlp_half, MlpHalf, Stack};
pub use clip::ClipModel;
pub use config::{
    Activation, ClipConfig, TextConfig, TextPooling, TransformerConfig, VisionConfig, VisionPooling,
};
pub use rng::Rng;
pub use tangents::Tangents;
pub use text::{TextTape, TextTower};
pub use vision::{VisionTape, VisionTower};
pub use weights::{Block, ClipWeights, LayerNorm, Linear, PoolingHead, TextWeights, VisionWeights};

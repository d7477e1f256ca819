//! The CLIP towers, op by op. Every op has its forward rule and its tangent (JVP) rule side by
//! side, so forward mode can be checked op by op against finite differences, and the reverse
//! (VJP) rule that training's hand-written backward pass uses.

mod block;
mod check;
pub mod clip;
pub mod config;
mod kernels;
mod matmul;
pub mod ops;
pub mod params;
pub mod random;
pub mod tangents;
pub mod text;
pub mod vision;
pub mod weights;

pub(crate) use block::{mlp_half, MlpHalf, Stack};
pub use clip::ClipModel;
pub use config::{
    Activation, ClipConfig, TextConfig, TextPooling, TransformerConfig, VisionConfig,
};
pub use tangents::Tangents;
pub use text::{TextTape, TextTower};
pub use vision::{VisionTape, VisionTower};
pub use weights::{Block, ClipWeights, LayerNorm, Linear, TextWeights, VisionWeights};

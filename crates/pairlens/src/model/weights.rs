//! Parameters of the towers in one canonical layout, whatever the checkpoint format.
//! Loaders (`io::checkpoint`) fill these; the forward/JVP code reads them.
//! Conventions: linear weights are `[out, in]` (PyTorch `nn.Linear`), applied as `x Wᵀ + b`.

use candle_core::{DType, Tensor};

use crate::Result;

/// `y = x Wᵀ + b`, weight `[out, in]`.
#[derive(Clone, Debug)]
pub struct Linear {
    /// `[out, in]`.
    pub weight: Tensor,
    /// `[out]`, if the layer has one.
    pub bias: Option<Tensor>,
}

/// LayerNorm over the last axis with affine `weight`, `bias` (both `[width]`).
#[derive(Clone, Debug)]
pub struct LayerNorm {
    /// Gain γ.
    pub weight: Tensor,
    /// Shift β.
    pub bias: Tensor,
    /// ε added to the variance.
    pub eps: f64,
}

/// One pre-LN residual block: `x + attn(ln_1(x))`, then `x + mlp(ln_2(x))`.
#[derive(Clone, Debug)]
pub struct Block {
    /// LayerNorm before attention.
    pub ln_1: LayerNorm,
    /// Query projection (open_clip's packed `in_proj` is split into Q, K, V when read).
    pub q: Linear,
    /// Key projection.
    pub k: Linear,
    /// Value projection.
    pub v: Linear,
    /// Attention output projection.
    pub out: Linear,
    /// LayerNorm before the MLP.
    pub ln_2: LayerNorm,
    /// width -> mlp_dim
    pub fc1: Linear,
    /// mlp_dim -> width
    pub fc2: Linear,
}

/// The text tower's parameters.
#[derive(Clone, Debug)]
pub struct TextWeights {
    /// `[vocab, width]`
    pub token_embedding: Tensor,
    /// `[context_length, width]`
    pub positional_embedding: Tensor,
    /// The transformer blocks, first to last.
    pub blocks: Vec<Block>,
    /// LayerNorm of the pooled row.
    pub ln_final: LayerNorm,
    /// width -> projection_dim, no bias.
    pub projection: Linear,
}

/// The image tower's parameters.
#[derive(Clone, Debug)]
pub struct VisionWeights {
    /// Patch embedding as a convolution kernel `[width, 3, patch, patch]` (stride = patch, no bias).
    pub patch_embedding: Tensor,
    /// `[width]`
    pub class_embedding: Tensor,
    /// `[1 + grid_h * grid_w, width]`
    pub positional_embedding: Tensor,
    /// LayerNorm of the embeddings (block 0's input).
    pub ln_pre: LayerNorm,
    /// The transformer blocks, first to last.
    pub blocks: Vec<Block>,
    /// LayerNorm of the class token's row.
    pub ln_post: LayerNorm,
    /// width -> projection_dim, no bias.
    pub projection: Linear,
}

/// Both towers' parameters and the similarity temperature.
#[derive(Clone, Debug)]
pub struct ClipWeights {
    /// The text tower.
    pub text: TextWeights,
    /// The image tower.
    pub vision: VisionWeights,
    /// log of the similarity temperature (scalar).
    pub logit_scale: f32,
}

impl ClipWeights {
    /// The same weights in another dtype (f64 copies give finite-difference references).
    pub fn to_dtype(&self, dtype: DType) -> Result<ClipWeights> {
        self.map_params(|_, t| Ok(t.to_dtype(dtype)?))
    }
}

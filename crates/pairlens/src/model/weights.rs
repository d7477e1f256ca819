//! Parameters of the towers in one canonical layout, whatever the checkpoint format.
//! Loaders (`io::checkpoint`) fill these; the forward/JVP code reads them.
//! Conventions: linear weights are `[out, in]` (PyTorch `nn.Linear`), applied as `x Wᵀ + b`.

use candle_core::Tensor;

/// `y = x Wᵀ + b`, weight `[out, in]`.
#[derive(Clone, Debug)]
pub struct Linear {
    pub weight: Tensor,
    pub bias: Option<Tensor>,
}

/// LayerNorm over the last axis with affine `weight`, `bias` (both `[width]`).
#[derive(Clone, Debug)]
pub struct LayerNorm {
    pub weight: Tensor,
    pub bias: Tensor,
    pub eps: f64,
}

/// One pre-LN residual block: `x + attn(ln_1(x))`, then `x + mlp(ln_2(x))`.
#[derive(Clone, Debug)]
pub struct Block {
    pub ln_1: LayerNorm,
    pub q: Linear,
    pub k: Linear,
    pub v: Linear,
    pub out: Linear,
    pub ln_2: LayerNorm,
    /// width -> mlp_dim
    pub fc1: Linear,
    /// mlp_dim -> width
    pub fc2: Linear,
}

#[derive(Clone, Debug)]
pub struct TextWeights {
    /// `[vocab, width]`
    pub token_embedding: Tensor,
    /// `[context_length, width]`
    pub positional_embedding: Tensor,
    pub blocks: Vec<Block>,
    pub ln_final: LayerNorm,
    /// width -> projection_dim, no bias.
    pub projection: Linear,
}

#[derive(Clone, Debug)]
pub struct VisionWeights {
    /// Patch embedding as a convolution kernel `[width, 3, patch, patch]` (stride = patch, no bias).
    pub patch_embedding: Tensor,
    /// `[width]`
    pub class_embedding: Tensor,
    /// `[1 + grid_h * grid_w, width]`
    pub positional_embedding: Tensor,
    pub ln_pre: LayerNorm,
    pub blocks: Vec<Block>,
    pub ln_post: LayerNorm,
    /// width -> projection_dim, no bias.
    pub projection: Linear,
}

#[derive(Clone, Debug)]
pub struct ClipWeights {
    pub text: TextWeights,
    pub vision: VisionWeights,
    /// log of the similarity temperature (scalar).
    pub logit_scale: f32,
}

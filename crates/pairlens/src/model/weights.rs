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
    /// width -> projection_dim; CLIP's has no bias, SigLIP's `head` has one.
    pub projection: Linear,
}

/// SigLIP's multihead attention-pooling head: one learned query (the probe) attends over every
/// row of `post_layernorm`'s output; then `x + mlp(layernorm(x))`. Its layers are a block's,
/// without the block's first LayerNorm (the tower's `ln_post` plays that part) and without the
/// residual around the attention.
#[derive(Clone, Debug)]
pub struct PoolingHead {
    /// The query `[width]`, used as it is (no LayerNorm before the query projection).
    pub probe: Tensor,
    /// Query, key, value (split from the packed `in_proj`) and output projections.
    pub q: Linear,
    /// Key projection.
    pub k: Linear,
    /// Value projection.
    pub v: Linear,
    /// Attention output projection.
    pub out: Linear,
    /// LayerNorm before the MLP.
    pub ln: LayerNorm,
    /// width -> mlp_dim
    pub fc1: Linear,
    /// mlp_dim -> width
    pub fc2: Linear,
}

impl PoolingHead {
    /// The head as a block whose first LayerNorm is `ln_1` (the tower's `ln_post`), so that the
    /// block code runs it (with [`crate::model::Stack`]'s probe rows).
    pub(crate) fn as_block(&self, ln_1: &LayerNorm) -> Block {
        Block {
            ln_1: ln_1.clone(),
            q: self.q.clone(),
            k: self.k.clone(),
            v: self.v.clone(),
            out: self.out.clone(),
            ln_2: self.ln.clone(),
            fc1: self.fc1.clone(),
            fc2: self.fc2.clone(),
        }
    }
}

/// The image tower's parameters. Which of the optional ones are present follows
/// [`crate::model::VisionPooling`]: CLIP has a class token, `ln_pre` and a projection; SigLIP a
/// patch bias and a pooling head.
#[derive(Clone, Debug)]
pub struct VisionWeights {
    /// Patch embedding as a convolution kernel `[width, 3, patch, patch]` (stride = patch).
    pub patch_embedding: Tensor,
    /// The convolution's bias `[width]` (SigLIP).
    pub patch_bias: Option<Tensor>,
    /// `[width]` (CLIP).
    pub class_embedding: Option<Tensor>,
    /// `[seq_len, width]`
    pub positional_embedding: Tensor,
    /// LayerNorm of the embeddings (block 0's input; CLIP).
    pub ln_pre: Option<LayerNorm>,
    /// The transformer blocks, first to last.
    pub blocks: Vec<Block>,
    /// CLIP: LayerNorm of the class token's row. SigLIP: `post_layernorm` of every row.
    pub ln_post: LayerNorm,
    /// The attention-pooling head (SigLIP).
    pub head: Option<PoolingHead>,
    /// width -> projection_dim, no bias (CLIP).
    pub projection: Option<Linear>,
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
    /// The logit's bias (SigLIP: the logit is `exp(logit_scale)·cos + logit_bias`).
    pub logit_bias: Option<f32>,
}

impl ClipWeights {
    /// The same weights in another dtype (f64 copies give finite-difference references).
    pub fn to_dtype(&self, dtype: DType) -> Result<ClipWeights> {
        self.map_params(|_, t| Ok(t.to_dtype(dtype)?))
    }
}

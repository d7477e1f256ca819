//! Geometry of a CLIP dual encoder, independent of the checkpoint format it came from.

use serde::{Deserialize, Serialize};

/// The MLP non-linearity. OpenAI and `*-quickgelu` weights use QuickGELU, open_clip's plain
/// `ViT-*` configs and most HF configs use the exact (erf) GELU.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    /// x * sigmoid(1.702 x)
    QuickGelu,
    /// x * Phi(x), Phi the standard normal CDF (erf form, not the tanh approximation).
    Gelu,
    /// x * (1 + tanh(√(2/π)(x + 0.044715 x³)))/2: PyTorch's `gelu(approximate="tanh")`,
    /// transformers' `gelu_pytorch_tanh` (SigLIP).
    GeluTanh,
}

/// A stack of pre-LayerNorm transformer blocks.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TransformerConfig {
    /// Width of the residual stream.
    pub width: usize,
    /// Number of blocks.
    pub layers: usize,
    /// Attention heads per block (they split the width evenly).
    pub heads: usize,
    /// Hidden size of the MLP (width * mlp_ratio).
    pub mlp_dim: usize,
    /// The MLP non-linearity.
    pub activation: Activation,
    /// ε of every LayerNorm of the tower.
    pub layer_norm_eps: f64,
}

impl TransformerConfig {
    /// Width of one attention head.
    pub fn head_dim(&self) -> usize {
        self.width / self.heads
    }

    /// Whether block `layer` is the last one: a split there has a closed form.
    pub fn is_last(&self, layer: usize) -> bool {
        layer + 1 == self.layers
    }
}

/// Which position of the text sequence feeds the embedding.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TextPooling {
    /// The position of the largest token id (open_clip, and HF when `eos_token_id == 2`):
    /// EOT is the largest id of the standard CLIP vocabulary.
    ArgmaxId,
    /// The first position holding this id (HF with a real `eos_token_id`).
    FirstId(u32),
    /// The last position of the padded sequence, whatever it holds (SigLIP: often padding).
    Last,
}

impl TextPooling {
    /// Index of the pooled position in one sequence of ids.
    pub fn index(&self, ids: &[u32]) -> Option<usize> {
        match *self {
            // First maximum, like torch.argmax on CPU.
            TextPooling::ArgmaxId => {
                let max = *ids.iter().max()?;
                ids.iter().position(|&i| i == max)
            }
            TextPooling::FirstId(id) => ids.iter().position(|&i| i == id),
            TextPooling::Last => ids.len().checked_sub(1),
        }
    }
}

/// The text tower's geometry. Token ids (start, end, padding) belong to the tokenizer; the
/// model only needs to know where it pools.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TextConfig {
    /// The blocks.
    pub transformer: TransformerConfig,
    /// Longest sequence (rows of the position embedding).
    pub context_length: usize,
    /// Rows of the token embedding.
    pub vocab_size: usize,
    /// Which position feeds the embedding.
    pub pooling: TextPooling,
    /// Whether a position attends only to itself and earlier ones (CLIP) or to every position
    /// (SigLIP).
    #[serde(default = "causal_by_default")]
    pub causal: bool,
    /// Whether the projection has a bias (SigLIP's `head`).
    #[serde(default)]
    pub projection_bias: bool,
}

fn causal_by_default() -> bool {
    true
}

/// How the image tower turns its last states into one vector.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VisionPooling {
    /// CLIP: a class token leads the sequence (after `ln_pre`); its row, through `ln_post` and
    /// the projection, is the embedding.
    #[default]
    ClassToken,
    /// SigLIP: patches only (a biased patch embedding, no `ln_pre`); `post_layernorm` on every
    /// row, then a multihead attention-pooling head whose single query is a learned probe. The
    /// head's output is the embedding (no projection).
    AttentionHead,
}

/// The image tower's geometry: a ViT with a class token, pooled at it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VisionConfig {
    /// The blocks.
    pub transformer: TransformerConfig,
    /// Side of a square patch in input pixels.
    pub patch_size: usize,
    /// (height, width) of the network input in pixels.
    pub image_size: (usize, usize),
    /// How the embedding is read out.
    #[serde(default)]
    pub pooling: VisionPooling,
}

impl VisionConfig {
    /// Patch grid (rows, columns).
    pub fn grid(&self) -> (usize, usize) {
        (
            self.image_size.0 / self.patch_size,
            self.image_size.1 / self.patch_size,
        )
    }
    /// The deepest split: the last block's input (CLIP), or the pooling head's input
    /// (`layers`, SigLIP). The default layer of an explanation.
    pub fn last_split(&self) -> usize {
        match self.pooling {
            VisionPooling::ClassToken => self.transformer.layers - 1,
            VisionPooling::AttentionHead => self.transformer.layers,
        }
    }

    /// Whether the sequence starts with a class token.
    pub fn class_token(&self) -> bool {
        self.pooling == VisionPooling::ClassToken
    }

    /// Sequence length: the class token if there is one, then the patches row-major.
    pub fn seq_len(&self) -> usize {
        let (h, w) = self.grid();
        usize::from(self.class_token()) + h * w
    }
}

/// A CLIP dual encoder's geometry, whatever checkpoint format it came from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClipConfig {
    /// The text tower.
    pub text: TextConfig,
    /// The image tower.
    pub vision: VisionConfig,
    /// Dimension of the shared embedding space.
    pub projection_dim: usize,
}

//! Every parameter tensor of the canonical layout ([`ClipWeights`]) as a value, with its shape
//! and its canonical name, and the two traversals everything else is written with: building the
//! weights one parameter at a time, and mapping over them in one fixed order.
//!
//! A checkpoint format is then a single table from [`Param`] to the tensor's name in its files
//! (`io::checkpoint::hf::name`, `io::checkpoint::open_clip::source`), which the reader, the writer
//! and the trainer share; the shape checker uses [`Param::shape`] and the canonical names.

use std::fmt;

use candle_core::Tensor;
use rayon::prelude::*;

use super::config::{ClipConfig, TextConfig, TransformerConfig, VisionConfig, VisionPooling};
use super::weights::{
    Block, ClipWeights, LayerNorm, Linear, PoolingHead, TextWeights, VisionWeights,
};
use crate::Result;

/// Which tower a parameter belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Tower {
    /// The text tower.
    Text,
    /// The image tower.
    Vision,
}

/// The weight or the bias of a LayerNorm or a linear layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Affine {
    /// LayerNorm gain, or a linear layer's `[out, in]` matrix.
    Weight,
    /// LayerNorm shift, or a linear layer's bias.
    Bias,
}

/// A layer inside a transformer block.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BlockLayer {
    /// The LayerNorm before attention.
    Ln1,
    /// Query projection.
    Q,
    /// Key projection.
    K,
    /// Value projection.
    V,
    /// Attention output projection.
    Out,
    /// The LayerNorm before the MLP.
    Ln2,
    /// MLP: width → mlp_dim.
    Fc1,
    /// MLP: mlp_dim → width.
    Fc2,
}

impl Affine {
    /// `"weight"` or `"bias"`, as PyTorch names them.
    pub fn as_str(self) -> &'static str {
        match self {
            Affine::Weight => "weight",
            Affine::Bias => "bias",
        }
    }
}

impl BlockLayer {
    /// Every layer of a block, in checkpoint order.
    pub const ALL: [BlockLayer; 8] = [
        BlockLayer::Ln1,
        BlockLayer::Q,
        BlockLayer::K,
        BlockLayer::V,
        BlockLayer::Out,
        BlockLayer::Ln2,
        BlockLayer::Fc1,
        BlockLayer::Fc2,
    ];

    fn canonical(self) -> &'static str {
        match self {
            BlockLayer::Ln1 => "ln_1",
            BlockLayer::Q => "q",
            BlockLayer::K => "k",
            BlockLayer::V => "v",
            BlockLayer::Out => "out",
            BlockLayer::Ln2 => "ln_2",
            BlockLayer::Fc1 => "fc1",
            BlockLayer::Fc2 => "fc2",
        }
    }
}

/// A parameter inside a transformer block.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct BlockParam {
    /// The tower.
    pub tower: Tower,
    /// Block index, from 0.
    pub layer: usize,
    /// Which layer of the block.
    pub part: BlockLayer,
    /// Weight or bias.
    pub affine: Affine,
}

/// One parameter tensor of a CLIP model (`logit_scale`, a plain number, is not one).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Param {
    /// Text token embedding `[vocab, width]`.
    TokenEmbedding,
    /// Learned position embedding `[sequence, width]` of either tower.
    PositionEmbedding(Tower),
    /// Patch embedding convolution kernel `[width, 3, patch, patch]`.
    PatchEmbedding,
    /// The image tower's class token `[width]`.
    ClassEmbedding,
    /// The image tower's LayerNorm before block 0 (`ln_pre`).
    PreNorm(Affine),
    /// A parameter inside a transformer block.
    Block(BlockParam),
    /// The LayerNorm after the last block (`ln_final`, `ln_post`).
    FinalNorm(Tower, Affine),
    /// Projection into the shared embedding space `[projection_dim, width]`.
    Projection(Tower),
    /// The projection's bias `[projection_dim]` (SigLIP's text `head`).
    ProjectionBias(Tower),
    /// The patch embedding convolution's bias `[width]` (SigLIP).
    PatchBias,
    /// The attention-pooling head's query `[width]` (SigLIP).
    Probe,
    /// A layer of the attention-pooling head (SigLIP): Q, K, V, Out, its LayerNorm (as `Ln2`),
    /// Fc1, Fc2. It has no `Ln1`: the tower's `ln_post` comes before it.
    Head(BlockLayer, Affine),
}

impl Param {
    /// The tower this parameter belongs to.
    pub fn tower(&self) -> Tower {
        match *self {
            Param::TokenEmbedding => Tower::Text,
            Param::PatchEmbedding
            | Param::ClassEmbedding
            | Param::PreNorm(_)
            | Param::PatchBias
            | Param::Probe
            | Param::Head(..) => Tower::Vision,
            Param::PositionEmbedding(t)
            | Param::FinalNorm(t, _)
            | Param::Projection(t)
            | Param::ProjectionBias(t)
            | Param::Block(BlockParam { tower: t, .. }) => t,
        }
    }

    /// The shape this parameter has in a model of geometry `cfg`.
    pub fn shape(&self, cfg: &ClipConfig) -> Vec<usize> {
        let tower = match self.tower() {
            Tower::Text => TowerConfig::Text(&cfg.text),
            Tower::Vision => TowerConfig::Vision(&cfg.vision),
        };
        self.shape_in(tower, cfg.projection_dim)
    }

    /// The shape in a tower of geometry `tower` whose projection has `projection_dim` outputs.
    pub(crate) fn shape_in(&self, tower: TowerConfig, projection_dim: usize) -> Vec<usize> {
        let t = tower.transformer();
        let w = t.width;
        match (*self, tower) {
            (Param::TokenEmbedding, TowerConfig::Text(c)) => vec![c.vocab_size, w],
            (Param::PositionEmbedding(_), TowerConfig::Text(c)) => vec![c.context_length, w],
            (Param::PositionEmbedding(_), TowerConfig::Vision(c)) => vec![c.seq_len(), w],
            (Param::PatchEmbedding, TowerConfig::Vision(c)) => {
                vec![w, 3, c.patch_size, c.patch_size]
            }
            (Param::Projection(_), _) => vec![projection_dim, w],
            (Param::ProjectionBias(_), _) => vec![projection_dim],
            (Param::Block(BlockParam { part, affine, .. }), _) | (Param::Head(part, affine), _) => {
                let (out, inp) = match part {
                    BlockLayer::Ln1 | BlockLayer::Ln2 => return vec![w],
                    BlockLayer::Fc1 => (t.mlp_dim, w),
                    BlockLayer::Fc2 => (w, t.mlp_dim),
                    BlockLayer::Q | BlockLayer::K | BlockLayer::V | BlockLayer::Out => (w, w),
                };
                match affine {
                    Affine::Weight => vec![out, inp],
                    Affine::Bias => vec![out],
                }
            }
            // Class token, LayerNorm gains and shifts; a parameter asked of the other tower
            // (a caller's mistake) gets the width too and fails the shape check by its name.
            _ => vec![w],
        }
    }
}

/// A tower's geometry, for [`Param::shape_in`].
#[derive(Clone, Copy)]
pub(crate) enum TowerConfig<'a> {
    Text(&'a TextConfig),
    Vision(&'a VisionConfig),
}

impl TowerConfig<'_> {
    fn transformer(&self) -> &TransformerConfig {
        match self {
            TowerConfig::Text(c) => &c.transformer,
            TowerConfig::Vision(c) => &c.transformer,
        }
    }
}

/// The canonical name, as shape errors of [`crate::model::ClipModel::new`] print it:
/// `text.blocks.3.fc1.weight`, `vision.ln_post.bias`, ….
impl fmt::Display for Param {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let tower = |t: Tower| match t {
            Tower::Text => "text",
            Tower::Vision => "vision",
        };
        let affine = |a: Affine| a.as_str();
        match *self {
            Param::TokenEmbedding => f.write_str("text.token_embedding"),
            Param::PositionEmbedding(t) => write!(f, "{}.positional_embedding", tower(t)),
            Param::PatchEmbedding => f.write_str("vision.patch_embedding"),
            Param::ClassEmbedding => f.write_str("vision.class_embedding"),
            Param::PreNorm(a) => write!(f, "vision.ln_pre.{}", affine(a)),
            Param::Block(b) => write!(
                f,
                "{}.blocks.{}.{}.{}",
                tower(b.tower),
                b.layer,
                b.part.canonical(),
                affine(b.affine)
            ),
            Param::FinalNorm(Tower::Text, a) => write!(f, "text.ln_final.{}", affine(a)),
            Param::FinalNorm(Tower::Vision, a) => write!(f, "vision.ln_post.{}", affine(a)),
            Param::Projection(t) => write!(f, "{}.projection.weight", tower(t)),
            Param::ProjectionBias(t) => write!(f, "{}.projection.bias", tower(t)),
            Param::PatchBias => f.write_str("vision.patch_embedding.bias"),
            Param::Probe => f.write_str("vision.head.probe"),
            Param::Head(part, a) => write!(f, "vision.head.{}.{}", part.canonical(), affine(a)),
        }
    }
}

/// A function from a parameter to its new tensor (see [`ClipWeights::map_params`]).
pub type MapFn<'a> = dyn FnMut(Param, &Tensor) -> Result<Tensor> + 'a;

fn map_norm(f: &mut MapFn, ln: &LayerNorm, at: impl Fn(Affine) -> Param) -> Result<LayerNorm> {
    Ok(LayerNorm {
        weight: f(at(Affine::Weight), &ln.weight)?,
        bias: f(at(Affine::Bias), &ln.bias)?,
        eps: ln.eps,
    })
}

fn map_linear(f: &mut MapFn, l: &Linear, at: impl Fn(Affine) -> Param) -> Result<Linear> {
    Ok(Linear {
        weight: f(at(Affine::Weight), &l.weight)?,
        bias: match &l.bias {
            Some(b) => Some(f(at(Affine::Bias), b)?),
            None => None,
        },
    })
}

fn map_blocks(f: &mut MapFn, tower: Tower, blocks: &[Block]) -> Result<Vec<Block>> {
    let mut out = Vec::with_capacity(blocks.len());
    for (layer, b) in blocks.iter().enumerate() {
        let at = |part| {
            move |affine| {
                Param::Block(BlockParam {
                    tower,
                    layer,
                    part,
                    affine,
                })
            }
        };
        out.push(Block {
            ln_1: map_norm(f, &b.ln_1, at(BlockLayer::Ln1))?,
            q: map_linear(f, &b.q, at(BlockLayer::Q))?,
            k: map_linear(f, &b.k, at(BlockLayer::K))?,
            v: map_linear(f, &b.v, at(BlockLayer::V))?,
            out: map_linear(f, &b.out, at(BlockLayer::Out))?,
            ln_2: map_norm(f, &b.ln_2, at(BlockLayer::Ln2))?,
            fc1: map_linear(f, &b.fc1, at(BlockLayer::Fc1))?,
            fc2: map_linear(f, &b.fc2, at(BlockLayer::Fc2))?,
        });
    }
    Ok(out)
}

fn build_block(
    read: &(dyn Fn(Param) -> Result<Tensor> + Sync),
    tower: Tower,
    layer: usize,
    eps: f64,
) -> Result<Block> {
    let get = |part, affine| {
        read(Param::Block(BlockParam {
            tower,
            layer,
            part,
            affine,
        }))
    };
    let norm = |part| -> Result<LayerNorm> {
        Ok(LayerNorm {
            weight: get(part, Affine::Weight)?,
            bias: get(part, Affine::Bias)?,
            eps,
        })
    };
    let linear = |part| biased(&get, part);
    Ok(Block {
        ln_1: norm(BlockLayer::Ln1)?,
        q: linear(BlockLayer::Q)?,
        k: linear(BlockLayer::K)?,
        v: linear(BlockLayer::V)?,
        out: linear(BlockLayer::Out)?,
        ln_2: norm(BlockLayer::Ln2)?,
        fc1: linear(BlockLayer::Fc1)?,
        fc2: linear(BlockLayer::Fc2)?,
    })
}

/// A linear layer with its bias, each asked of `get`.
fn biased(get: &dyn Fn(BlockLayer, Affine) -> Result<Tensor>, part: BlockLayer) -> Result<Linear> {
    Ok(Linear {
        weight: get(part, Affine::Weight)?,
        bias: Some(get(part, Affine::Bias)?),
    })
}

fn build_head(read: &(dyn Fn(Param) -> Result<Tensor> + Sync), eps: f64) -> Result<PoolingHead> {
    let get = |part, affine| read(Param::Head(part, affine));
    let linear = |part| biased(&get, part);
    Ok(PoolingHead {
        probe: read(Param::Probe)?,
        q: linear(BlockLayer::Q)?,
        k: linear(BlockLayer::K)?,
        v: linear(BlockLayer::V)?,
        out: linear(BlockLayer::Out)?,
        ln: LayerNorm {
            weight: get(BlockLayer::Ln2, Affine::Weight)?,
            bias: get(BlockLayer::Ln2, Affine::Bias)?,
            eps,
        },
        fc1: linear(BlockLayer::Fc1)?,
        fc2: linear(BlockLayer::Fc2)?,
    })
}

impl ClipWeights {
    /// Builds the weights of a model of geometry `cfg` by asking `read` for every parameter
    /// (the blocks in parallel: checkpoint reading converts bytes as it goes). Block linear
    /// layers have biases; which other parameters exist follows the geometry (CLIP or SigLIP).
    pub fn from_params(
        cfg: &ClipConfig,
        read: &(dyn Fn(Param) -> Result<Tensor> + Sync),
        logit_scale: f32,
        logit_bias: Option<f32>,
    ) -> Result<ClipWeights> {
        let norm = |at: &dyn Fn(Affine) -> Param, eps: f64| -> Result<LayerNorm> {
            Ok(LayerNorm {
                weight: read(at(Affine::Weight))?,
                bias: read(at(Affine::Bias))?,
                eps,
            })
        };
        let projection = |t, bias: bool| -> Result<Linear> {
            Ok(Linear {
                weight: read(Param::Projection(t))?,
                bias: match bias {
                    true => Some(read(Param::ProjectionBias(t))?),
                    false => None,
                },
            })
        };
        let blocks = |tower, layers: usize, eps| -> Result<Vec<Block>> {
            (0..layers)
                .into_par_iter()
                .map(|layer| build_block(read, tower, layer, eps))
                .collect()
        };
        let (tc, vc) = (&cfg.text.transformer, &cfg.vision.transformer);
        let text = TextWeights {
            token_embedding: read(Param::TokenEmbedding)?,
            positional_embedding: read(Param::PositionEmbedding(Tower::Text))?,
            blocks: blocks(Tower::Text, tc.layers, tc.layer_norm_eps)?,
            ln_final: norm(&|a| Param::FinalNorm(Tower::Text, a), tc.layer_norm_eps)?,
            projection: projection(Tower::Text, cfg.text.projection_bias)?,
        };
        let eps = vc.layer_norm_eps;
        let class = cfg.vision.pooling == VisionPooling::ClassToken;
        let vision = VisionWeights {
            patch_embedding: read(Param::PatchEmbedding)?,
            patch_bias: (!class).then(|| read(Param::PatchBias)).transpose()?,
            class_embedding: class.then(|| read(Param::ClassEmbedding)).transpose()?,
            positional_embedding: read(Param::PositionEmbedding(Tower::Vision))?,
            ln_pre: class.then(|| norm(&Param::PreNorm, eps)).transpose()?,
            blocks: blocks(Tower::Vision, vc.layers, eps)?,
            ln_post: norm(&|a| Param::FinalNorm(Tower::Vision, a), eps)?,
            head: (!class).then(|| build_head(read, eps)).transpose()?,
            projection: class
                .then(|| projection(Tower::Vision, false))
                .transpose()?,
        };
        Ok(ClipWeights {
            text,
            vision,
            logit_scale,
            logit_bias,
        })
    }

    /// The weights with every tensor replaced by `f(param, tensor)`, visited in one fixed order
    /// (the text tower first, each tower in checkpoint order). `logit_scale` is kept as it is.
    pub fn map_params(
        &self,
        mut f: impl FnMut(Param, &Tensor) -> Result<Tensor>,
    ) -> Result<ClipWeights> {
        Ok(ClipWeights {
            text: self.text.map_params(&mut f)?,
            vision: self.vision.map_params(&mut f)?,
            logit_scale: self.logit_scale,
            logit_bias: self.logit_bias,
        })
    }

    /// Every parameter with its tensor, in [`Self::map_params`]' order.
    pub fn params(&self) -> Result<Vec<(Param, Tensor)>> {
        let mut out = Vec::new();
        self.map_params(|p, t| {
            out.push((p, t.clone()));
            Ok(t.clone())
        })?;
        Ok(out)
    }
}

impl TextWeights {
    /// [`ClipWeights::map_params`] for the text tower alone.
    pub fn map_params(&self, f: &mut MapFn) -> Result<TextWeights> {
        Ok(TextWeights {
            token_embedding: f(Param::TokenEmbedding, &self.token_embedding)?,
            positional_embedding: f(
                Param::PositionEmbedding(Tower::Text),
                &self.positional_embedding,
            )?,
            blocks: map_blocks(f, Tower::Text, &self.blocks)?,
            ln_final: map_norm(f, &self.ln_final, |a| Param::FinalNorm(Tower::Text, a))?,
            projection: map_linear(f, &self.projection, |a| projection(Tower::Text, a))?,
        })
    }
}

impl VisionWeights {
    /// [`ClipWeights::map_params`] for the image tower alone.
    pub fn map_params(&self, f: &mut MapFn) -> Result<VisionWeights> {
        let class_embedding = match &self.class_embedding {
            Some(t) => Some(f(Param::ClassEmbedding, t)?),
            None => None,
        };
        let patch_embedding = f(Param::PatchEmbedding, &self.patch_embedding)?;
        let patch_bias = match &self.patch_bias {
            Some(t) => Some(f(Param::PatchBias, t)?),
            None => None,
        };
        let positional_embedding = f(
            Param::PositionEmbedding(Tower::Vision),
            &self.positional_embedding,
        )?;
        let ln_pre = match &self.ln_pre {
            Some(ln) => Some(map_norm(f, ln, Param::PreNorm)?),
            None => None,
        };
        let blocks = map_blocks(f, Tower::Vision, &self.blocks)?;
        let ln_post = map_norm(f, &self.ln_post, |a| Param::FinalNorm(Tower::Vision, a))?;
        let head = match &self.head {
            Some(h) => Some(map_head(f, h)?),
            None => None,
        };
        let projection = match &self.projection {
            Some(p) => Some(map_linear(f, p, |a| projection(Tower::Vision, a))?),
            None => None,
        };
        Ok(VisionWeights {
            patch_embedding,
            patch_bias,
            class_embedding,
            positional_embedding,
            ln_pre,
            blocks,
            ln_post,
            head,
            projection,
        })
    }
}

fn projection(tower: Tower, a: Affine) -> Param {
    match a {
        Affine::Weight => Param::Projection(tower),
        Affine::Bias => Param::ProjectionBias(tower),
    }
}

fn map_head(f: &mut MapFn, h: &PoolingHead) -> Result<PoolingHead> {
    let at = |part| move |a| Param::Head(part, a);
    Ok(PoolingHead {
        probe: f(Param::Probe, &h.probe)?,
        q: map_linear(f, &h.q, at(BlockLayer::Q))?,
        k: map_linear(f, &h.k, at(BlockLayer::K))?,
        v: map_linear(f, &h.v, at(BlockLayer::V))?,
        out: map_linear(f, &h.out, at(BlockLayer::Out))?,
        ln: map_norm(f, &h.ln, at(BlockLayer::Ln2))?,
        fc1: map_linear(f, &h.fc1, at(BlockLayer::Fc1))?,
        fc2: map_linear(f, &h.fc2, at(BlockLayer::Fc2))?,
    })
}

//! The vision tower: patch embedding (the stride-p convolution as im2col + one matmul, exact),
//! then, for CLIP, class token, positional embedding, `ln_pre` (= block 0's input), pre-LN blocks,
//! `ln_post` on the CLS row, projection; for SigLIP, the convolution's bias, positional embedding
//! (= block 0's input), pre-LN blocks, `post_layernorm` on every row and the attention-pooling
//! head. Forward and JVP from any block (`layers` = the head's input); the reverse pass for
//! training (CLIP).

use candle_core::{DType, Tensor};

use super::block::{BlockTape, Stack};
use super::check::{self, invalid, Checker};
use super::config::VisionConfig;
use super::ops::{self, LnCache};
use super::params::TowerConfig;
use super::tangents::Tangents;
use super::weights::VisionWeights;
use crate::Result;

const NAME: &str = "vision";

/// What the vision tower's forward keeps for its reverse pass.
#[derive(Clone, Debug)]
pub struct VisionTape {
    cols: Tensor,
    c_pre: Option<LnCache>,
    blocks: Vec<BlockTape>,
    c_post: LnCache,
    /// `ln_post`'s output (the projection's input).
    y: Tensor,
}

/// The image tower: its geometry and weights.
#[derive(Clone, Debug)]
pub struct VisionTower {
    /// Geometry.
    pub config: VisionConfig,
    /// Parameters.
    pub weights: VisionWeights,
}

impl VisionTower {
    /// Validates every weight shape against the config (f32, or f64 for reference checks).
    pub fn new(config: VisionConfig, weights: VisionWeights) -> Result<Self> {
        let tower = VisionTower { config, weights };
        tower.check_weights(&mut Checker::new())?;
        Ok(tower)
    }

    pub(crate) fn check_weights(&self, c: &mut Checker) -> Result<()> {
        let cfg = &self.config;
        let p = cfg.patch_size;
        let (gh, gw) = cfg.grid();
        if p == 0 || gh == 0 || gw == 0 {
            return invalid(format!(
                "vision tower: patch size {p} does not fit image size {:?}",
                cfg.image_size
            ));
        }
        let w = &self.weights;
        let class = cfg.class_token();
        let present = [
            ("vision.class_embedding", w.class_embedding.is_some(), class),
            ("vision.ln_pre", w.ln_pre.is_some(), class),
            ("vision.projection", w.projection.is_some(), class),
            (
                "vision.patch_embedding.bias",
                w.patch_bias.is_some(),
                !class,
            ),
            ("vision.head", w.head.is_some(), !class),
        ];
        if let Some((name, has, _)) = present.iter().find(|(_, has, want)| has != want) {
            let (what, how) = match has {
                true => ("has", "does not"),
                false => ("lacks", "does"),
            };
            return invalid(format!(
                "vision tower {what} {name}, which a {:?} tower {how} have",
                cfg.pooling
            ));
        }
        c.tower(
            TowerConfig::Vision(&self.config),
            w.blocks.len(),
            w.projection.as_ref(),
            |f| w.map_params(f).map(|_| ()),
        )
    }

    pub(crate) fn stack(&self) -> Stack<'_> {
        let w = &self.weights;
        let head = w.head.as_ref().map(|h| (&h.probe, h.as_block(&w.ln_post)));
        Stack {
            cfg: &self.config.transformer,
            blocks: &w.blocks,
            causal: false,
            final_ln: head.is_none().then_some(&w.ln_post),
            head,
            projection: w.projection.as_ref(),
        }
    }

    fn dtype(&self) -> DType {
        self.weights.patch_embedding.dtype()
    }

    /// `ln_pre(cat(class, patches) + pos)` (CLIP) or `patches + bias + pos` (SigLIP) for pixels
    /// `[B, 3, H, W]` (H, W = `image_size`): the input of block 0.
    pub fn embeddings(&self, pixels: &Tensor) -> Result<Tensor> {
        Ok(self.embeddings_taped(pixels)?.0)
    }

    /// [`Self::embeddings`], with the im2col patch columns `[B·P, 3p²]` and `ln_pre`'s cache.
    fn embeddings_taped(&self, pixels: &Tensor) -> Result<(Tensor, Tensor, Option<LnCache>)> {
        let cfg = &self.config;
        let (ih, iw) = cfg.image_size;
        let d = pixels.dims();
        if d.len() != 4 || d[0] == 0 || d[1] != 3 || d[2] != ih || d[3] != iw {
            return invalid(format!(
                "vision tower: pixels of shape {d:?}, expected [B, 3, {ih}, {iw}]"
            ));
        }
        if pixels.dtype() != self.dtype() {
            return invalid(format!(
                "vision tower: pixels are {:?}, weights are {:?}",
                pixels.dtype(),
                self.dtype()
            ));
        }
        let b = d[0];
        let p = cfg.patch_size;
        let (gh, gw) = cfg.grid();
        let width = cfg.transformer.width;
        // A stride-p convolution drops the border that does not fill a whole patch.
        let px = pixels.narrow(2, 0, gh * p)?.narrow(3, 0, gw * p)?;
        // im2col: [B,3,gh,p,gw,p] -> [B,gh,gw,3,p,p], rows in the kernel's (c, ky, kx) order.
        let cols = px
            .reshape((b, 3, gh, p, gw, p))?
            .permute((0, 2, 4, 1, 3, 5))?
            .contiguous()?
            .reshape((b * gh * gw, 3 * p * p))?;
        let kernel = self.weights.patch_embedding.reshape((width, 3 * p * p))?;
        let mut patches = ops::matmul_wt(&cols, &kernel)?.reshape((b, gh * gw, width))?;
        let w = &self.weights;
        if let Some(bias) = &w.patch_bias {
            patches = ops::add_param(&patches, bias)?;
        }
        let tokens = match &w.class_embedding {
            Some(class) => {
                let cls = class
                    .reshape((1, 1, width))?
                    .broadcast_as((b, 1, width))?
                    .contiguous()?;
                Tensor::cat(&[&cls, &patches], 1)?
            }
            None => patches,
        };
        let x = ops::add_param(&tokens, &w.positional_embedding)?;
        match &w.ln_pre {
            Some(ln) => {
                let (h, c) = ops::layer_norm_cached(&x, ln, cfg.transformer.layer_norm_eps)?;
                Ok((h, cols, Some(c)))
            }
            None => Ok((x, cols, None)),
        }
    }

    /// States entering block `layer` (0..=layers). pixels `[B,3,H,W]` → `[B, seq, width]`.
    pub fn hidden_at(&self, layer: usize, pixels: &Tensor) -> Result<Tensor> {
        check::layer(NAME, layer, self.config.transformer.layers)?;
        let h0 = self.embeddings(pixels)?;
        self.stack().forward(0, layer, &h0)
    }

    fn check_hidden(&self, layer: usize, hidden: &Tensor) -> Result<usize> {
        check::layer(NAME, layer, self.config.transformer.layers)?;
        let (b, s) = check::hidden(NAME, hidden, self.config.transformer.width, self.dtype())?;
        if s != self.config.seq_len() {
            return invalid(format!(
                "vision tower: sequence length {s}, expected {}",
                self.config.seq_len()
            ));
        }
        Ok(b)
    }

    /// Embedding (unnormalised) from states entering block `layer`: the CLS row projected, or
    /// the pooling head's output.
    pub fn embed_from(&self, layer: usize, hidden: &Tensor) -> Result<Tensor> {
        let b = self.check_hidden(layer, hidden)?;
        self.stack().embed(layer, hidden, &vec![0; b])
    }

    /// Embeddings `[B, proj]` of pixels `[B, 3, H, W]`.
    pub fn forward(&self, pixels: &Tensor) -> Result<Tensor> {
        let h0 = self.embeddings(pixels)?;
        self.embed_from(0, &h0)
    }

    /// [`Self::forward`], keeping what [`Self::vjp`] needs.
    pub fn forward_taped(&self, pixels: &Tensor) -> Result<(Tensor, VisionTape)> {
        let (h0, cols, c_pre) = self.embeddings_taped(pixels)?;
        let pool = vec![0; h0.dim(0)?];
        let (x, blocks) = self.stack().forward_pooled_taped(&h0, &pool)?;
        let Some(projection) = &self.weights.projection else {
            return invalid("the reverse pass (training) is implemented for CLIP towers only");
        };
        let eps = self.config.transformer.layer_norm_eps;
        let (y, c_post) = ops::layer_norm_cached(&x, &self.weights.ln_post, eps)?;
        let e = ops::linear(&y, projection)?;
        let tape = VisionTape {
            cols,
            c_pre,
            blocks,
            c_post,
            y,
        };
        Ok((e, tape))
    }

    /// Reverse pass of [`Self::forward_taped`]: the embeddings' gradient `[B, proj]` → every
    /// weight's gradient, laid out as the weights.
    pub fn vjp(&self, tape: &VisionTape, g: &Tensor) -> Result<VisionWeights> {
        let w = &self.weights;
        let Some(projection) = &w.projection else {
            return invalid("the reverse pass (training) is implemented for CLIP towers only");
        };
        let (gy, projection) = ops::linear_vjp(&tape.y, projection, g)?;
        let (gx, ln_post) = ops::layer_norm_vjp(&tape.c_post, &w.ln_post, &gy)?;
        let pool = vec![0; gx.dim(0)?];
        let (gh0, blocks) = self.stack().vjp_pooled(&tape.blocks, &pool, &gx)?;
        let (Some(c_pre), Some(ln_pre)) = (&tape.c_pre, &w.ln_pre) else {
            return invalid("the reverse pass (training) is implemented for CLIP towers only");
        };
        let (g0, ln_pre) = ops::layer_norm_vjp(c_pre, ln_pre, &gh0)?;
        let (b, s, width) = g0.dims3()?;
        let patch = g0.narrow(1, 1, s - 1)?.reshape((b * (s - 1), width))?;
        let kernel = patch.t()?.matmul(&tape.cols)?;
        Ok(VisionWeights {
            patch_embedding: kernel.reshape(w.patch_embedding.shape())?,
            patch_bias: None,
            class_embedding: Some(ops::sum_leading(&g0.narrow(1, 0, 1)?, 1)?),
            positional_embedding: ops::sum_leading(&g0, 2)?,
            ln_pre: Some(ln_pre),
            blocks,
            ln_post,
            head: None,
            projection: Some(projection),
        })
    }

    /// Embeddings `[P, proj]` of the P primals `[P, seq, width]` entering block `layer`, and
    /// their T×P tangents `[T, P, proj]`. With a class token, the last block computes only its
    /// row.
    pub fn jvp_from(
        &self,
        layer: usize,
        primal: &Tensor,
        tangents: &Tangents,
    ) -> Result<(Tensor, Tensor)> {
        let p = self.check_hidden(layer, primal)?;
        let (s, width) = (self.config.seq_len(), self.config.transformer.width);
        tangents.validate(p, s, width, self.dtype())?;
        self.stack().jvp_embed(layer, primal, tangents, &vec![0; p])
    }
}

//! The text tower: token + positional embeddings, pre-LN blocks, `ln_final` on the pooled row,
//! projection. CLIP's attention is causal: sequences may then be shorter than the context length
//! (the mask keeps later positions out of earlier rows, so truncating after the pooled rows is
//! exact). SigLIP's is bidirectional and pools at the last position of the padded sequence.

use candle_core::{DType, Tensor};

use super::block::{BlockTape, Stack};
use super::check::{self, invalid, Checker};
use super::config::TextConfig;
use super::ops::{self, LnCache};
use super::params::TowerConfig;
use super::tangents::Tangents;
use super::weights::TextWeights;
use crate::Result;

const NAME: &str = "text";

/// What the text tower's forward keeps for its reverse pass.
#[derive(Clone, Debug)]
pub struct TextTape {
    /// The ids `[B·S]` (u32) the token embeddings were gathered at.
    ids: Tensor,
    pool: Vec<usize>,
    blocks: Vec<BlockTape>,
    c_final: LnCache,
    /// `ln_final`'s output (the projection's input).
    y: Tensor,
}

/// The text tower: its geometry and weights.
#[derive(Clone, Debug)]
pub struct TextTower {
    /// Geometry.
    pub config: TextConfig,
    /// Parameters.
    pub weights: TextWeights,
}

impl TextTower {
    /// Validates every weight shape against the config (f32, or f64 for reference checks).
    pub fn new(config: TextConfig, weights: TextWeights) -> Result<Self> {
        let tower = TextTower { config, weights };
        tower.check_weights(&mut Checker::new())?;
        Ok(tower)
    }

    pub(crate) fn check_weights(&self, c: &mut Checker) -> Result<()> {
        let w = &self.weights;
        c.tower(
            TowerConfig::Text(&self.config),
            w.blocks.len(),
            Some(&w.projection),
            |f| w.map_params(f).map(|_| ()),
        )
    }

    pub(crate) fn stack(&self) -> Stack<'_> {
        Stack {
            cfg: &self.config.transformer,
            blocks: &self.weights.blocks,
            causal: self.config.causal,
            head: None,
            final_ln: Some(&self.weights.ln_final),
            projection: Some(&self.weights.projection),
        }
    }

    fn dtype(&self) -> DType {
        self.weights.token_embedding.dtype()
    }

    /// Token + positional embeddings of ids `[B, seq]` (u32, `seq <= context_length`).
    pub fn embeddings(&self, ids: &Tensor) -> Result<Tensor> {
        let cfg = &self.config;
        if ids.dtype() != DType::U32 {
            return invalid(format!(
                "text tower: token ids are {:?}, expected u32",
                ids.dtype()
            ));
        }
        let d = ids.dims();
        if d.len() != 2 || d[0] == 0 || d[1] == 0 || d[1] > cfg.context_length {
            return invalid(format!(
                "text tower: token ids of shape {d:?}, expected [B, seq] with 1 <= seq <= {}",
                cfg.context_length
            ));
        }
        let flat = ids.flatten_all()?;
        if let Some(bad) = flat
            .to_vec1::<u32>()?
            .into_iter()
            .find(|&i| i as usize >= cfg.vocab_size)
        {
            return invalid(format!(
                "text tower: token id {bad} out of range for vocabulary size {}",
                cfg.vocab_size
            ));
        }
        let (b, s) = (d[0], d[1]);
        let w = cfg.transformer.width;
        let tok = self
            .weights
            .token_embedding
            .index_select(&flat, 0)?
            .reshape((b, s, w))?;
        let pos = self.weights.positional_embedding.narrow(0, 0, s)?;
        ops::add_param(&tok, &pos)
    }

    /// States entering block `layer` (0..=layers; `layers` = output of the last block).
    /// ids `[B, seq]` u32 → `[B, seq, width]`.
    pub fn hidden_at(&self, layer: usize, ids: &Tensor) -> Result<Tensor> {
        check::layer(NAME, layer, self.config.transformer.layers)?;
        let h0 = self.embeddings(ids)?;
        self.stack().forward(0, layer, &h0)
    }

    fn check_hidden(
        &self,
        layer: usize,
        hidden: &Tensor,
        pool: &[usize],
    ) -> Result<(usize, usize)> {
        check::layer(NAME, layer, self.config.transformer.layers)?;
        let (b, s) = check::hidden(NAME, hidden, self.config.transformer.width, self.dtype())?;
        if s > self.config.context_length {
            return invalid(format!(
                "text tower: sequence length {s} exceeds the context length {}",
                self.config.context_length
            ));
        }
        check::pool(NAME, pool, b, s)?;
        Ok((b, s))
    }

    /// Embedding (unnormalised, projected) from states entering block `layer`; `pool[b]` is the
    /// pooled row of sequence b. `[B, seq, width]` → `[B, proj]`.
    pub fn embed_from(&self, layer: usize, hidden: &Tensor, pool: &[usize]) -> Result<Tensor> {
        self.check_hidden(layer, hidden, pool)?;
        self.stack().embed(layer, hidden, pool)
    }

    /// Embeddings `[B, proj]` of ids `[B, seq]`, pooled at `pool[b]`.
    pub fn forward(&self, ids: &Tensor, pool: &[usize]) -> Result<Tensor> {
        let h0 = self.embeddings(ids)?;
        self.embed_from(0, &h0, pool)
    }

    /// [`Self::forward`], keeping what [`Self::vjp`] needs.
    pub fn forward_taped(&self, ids: &Tensor, pool: &[usize]) -> Result<(Tensor, TextTape)> {
        let h0 = self.embeddings(ids)?;
        self.check_hidden(0, &h0, pool)?;
        let (x, blocks) = self.stack().forward_pooled_taped(&h0, pool)?;
        let eps = self.config.transformer.layer_norm_eps;
        let (y, c_final) = ops::layer_norm_cached(&x, &self.weights.ln_final, eps)?;
        let e = ops::linear(&y, &self.weights.projection)?;
        let tape = TextTape {
            ids: ids.flatten_all()?,
            pool: pool.to_vec(),
            blocks,
            c_final,
            y,
        };
        Ok((e, tape))
    }

    /// Reverse pass of [`Self::forward_taped`]: the embeddings' gradient `[B, proj]` → every
    /// weight's gradient, laid out as the weights. Token rows that no id used get zero.
    pub fn vjp(&self, tape: &TextTape, g: &Tensor) -> Result<TextWeights> {
        let w = &self.weights;
        let (gy, projection) = ops::linear_vjp(&tape.y, &w.projection, g)?;
        let (gx, ln_final) = ops::layer_norm_vjp(&tape.c_final, &w.ln_final, &gy)?;
        let (g0, blocks) = self.stack().vjp_pooled(&tape.blocks, &tape.pool, &gx)?;
        let (b, s, width) = g0.dims3()?;
        let token_embedding = w.token_embedding.zeros_like()?.index_add(
            &tape.ids,
            &g0.reshape((b * s, width))?,
            0,
        )?;
        let pos = ops::sum_leading(&g0, 2)?;
        let unused = self.config.context_length - s;
        let positional_embedding = if unused == 0 {
            pos
        } else {
            let zeros = Tensor::zeros((unused, width), pos.dtype(), pos.device())?;
            Tensor::cat(&[&pos, &zeros], 0)?
        };
        Ok(TextWeights {
            token_embedding,
            positional_embedding,
            blocks,
            ln_final,
            projection,
        })
    }

    /// Embeddings `[P, proj]` of the P primals `[P, seq, width]` entering block `layer`, and
    /// their T×P tangents `[T, P, proj]`. The last block computes only the pooled row.
    pub fn jvp_from(
        &self,
        layer: usize,
        primal: &Tensor,
        tangents: &Tangents,
        pool: &[usize],
    ) -> Result<(Tensor, Tensor)> {
        let (p, s) = self.check_hidden(layer, primal, pool)?;
        let width = self.config.transformer.width;
        tangents.validate(p, s, width, self.dtype())?;
        self.stack().jvp_embed(layer, primal, tangents, pool)
    }
}

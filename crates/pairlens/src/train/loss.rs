//! Symmetric InfoNCE (CLIP's loss) written with differentiable candle ops only, so candle's
//! autograd can differentiate it: the loss head alone in [`crate::train::Trainer::gradients`]
//! (the towers have their own reverse pass), the whole graph, towers included, when
//! [`clip_loss`] runs on the trainer's Vars ([`crate::train::Trainer::autograd_gradients`]).

use candle_core::{DType, Tensor, D};

use crate::model::{ClipConfig, ClipWeights, TextTower, VisionTower};
use crate::Result;

/// One mini-batch: B images and their B captions (pair i is the positive of row i).
#[derive(Clone, Debug)]
pub struct Batch {
    /// `[B, 3, H, W]`, the weights' dtype, already normalised like the preprocessing.
    pub pixels: Tensor,
    /// `[B, S]` u32 token ids, `S <= context_length`.
    pub ids: Tensor,
    /// Pooled (end-of-text) position of each caption.
    pub pool: Vec<usize>,
    /// `[B, B]` (image i, caption j): 1 where caption j is also a true description of image i,
    /// so the pair is left out of both softmaxes instead of being pushed apart; `None` when
    /// every off-diagonal pair is a negative.
    pub excluded: Option<Tensor>,
}

/// A source of mini-batches. `step` is the optimizer step the batch is for, so a seeded
/// source can make batch `step` independently of what was asked before (resumable,
/// reproducible).
pub trait Batches {
    /// The mini-batch for optimizer step `step` (0-based).
    fn batch(&mut self, step: u64) -> Result<Batch>;
}

/// Unnormalised embeddings `(image [B, proj], text [B, proj])`. The towers are built as plain
/// structs (no shape re-check per step: [`crate::train::Trainer::new`] checks once).
pub(crate) fn embed(
    config: &ClipConfig,
    weights: &ClipWeights,
    batch: &Batch,
) -> Result<(Tensor, Tensor)> {
    let (vision, text) = towers(config, weights);
    let img = vision.forward(&batch.pixels)?;
    let txt = text.forward(&batch.ids, &batch.pool)?;
    Ok((img, txt))
}

/// Both towers over `weights`, unchecked (shapes are checked once, when training starts).
pub(crate) fn towers(config: &ClipConfig, weights: &ClipWeights) -> (VisionTower, TextTower) {
    let vision = VisionTower {
        config: config.vision.clone(),
        weights: weights.vision.clone(),
    };
    let text = TextTower {
        config: config.text.clone(),
        weights: weights.text.clone(),
    };
    (vision, text)
}

/// Rows scaled to unit L2 norm.
pub fn l2_normalize(x: &Tensor) -> Result<Tensor> {
    let n = x.sqr()?.sum_keepdim(D::Minus1)?.sqrt()?;
    Ok(x.broadcast_div(&n)?)
}

/// Mean over rows of `logsumexp(row) − row[i]` for logits `[B, B]` (positives on the diagonal).
fn cross_entropy_diag(logits: &Tensor) -> Result<Tensor> {
    let b = logits.dim(0)?;
    // The max shift is a constant for the gradient, so it is detached (as in the softmax).
    let m = logits.max_keepdim(D::Minus1)?.detach();
    let lse = (logits
        .broadcast_sub(&m)?
        .exp()?
        .sum_keepdim(D::Minus1)?
        .log()?
        + &m)?;
    let eye = Tensor::eye(b, logits.dtype(), logits.device())?;
    let pos = (logits * eye)?.sum_keepdim(D::Minus1)?;
    Ok((lse - pos)?.mean_all()?)
}

/// CLIP's loss: `logits = exp(logit_scale) · îmg · t̂xtᵀ`, the mean of the image→text and
/// text→image cross-entropies. `logit_scale` is a 0-d tensor (the log temperature).
pub fn contrastive_loss(img: &Tensor, txt: &Tensor, logit_scale: &Tensor) -> Result<Tensor> {
    contrastive_loss_masked(img, txt, logit_scale, None)
}

/// Logit offset that removes a pair from the softmax (exp underflows to exactly 0 in f32/f64).
const EXCLUDED: f64 = -1.0e4;

/// [`contrastive_loss`] where `excluded` (`[B, B]`, 1 = drop, diagonal 0) removes pairs from
/// both softmaxes: used for pairs whose captions are identical, which are not negatives
/// ("a bag" under two different bags is true of both; contrasting them teaches noise).
pub fn contrastive_loss_masked(
    img: &Tensor,
    txt: &Tensor,
    logit_scale: &Tensor,
    excluded: Option<&Tensor>,
) -> Result<Tensor> {
    let (i, t) = (l2_normalize(img)?, l2_normalize(txt)?);
    let mut logits = i.matmul(&t.t()?)?.broadcast_mul(&logit_scale.exp()?)?;
    if let Some(mask) = excluded {
        logits = (logits + (mask.to_dtype(img.dtype())? * EXCLUDED)?)?;
    }
    let a = cross_entropy_diag(&logits)?;
    let b = cross_entropy_diag(&logits.t()?)?;
    Ok(((a + b)? * 0.5)?)
}

/// Forward both towers and return the scalar loss (differentiable w.r.t. every tensor in
/// `weights` and `logit_scale`).
pub fn clip_loss(
    config: &ClipConfig,
    weights: &ClipWeights,
    logit_scale: &Tensor,
    batch: &Batch,
) -> Result<Tensor> {
    let (img, txt) = embed(config, weights, batch)?;
    contrastive_loss_masked(&img, &txt, logit_scale, batch.excluded.as_ref())
}

/// `[B, B]` mask of the off-diagonal pairs whose token ids are identical (the same caption),
/// or `None` when every caption of the batch is distinct.
pub fn duplicate_caption_mask(ids: &Tensor) -> Result<Option<Tensor>> {
    let rows: Vec<Vec<u32>> = ids.to_vec2()?;
    excluded_pairs(rows.len(), ids.device(), |i, j| rows[i] == rows[j])
}

/// `[B, B]` mask (1 = left out of the loss) of the off-diagonal pairs `(i, j)` where
/// `leave_out(i, j)`, or `None` when there is none.
pub(crate) fn excluded_pairs(
    b: usize,
    device: &candle_core::Device,
    leave_out: impl Fn(usize, usize) -> bool,
) -> Result<Option<Tensor>> {
    let mut mask = vec![0f32; b * b];
    let mut any = false;
    for i in 0..b {
        for j in (0..b).filter(|&j| j != i) {
            if leave_out(i, j) {
                mask[i * b + j] = 1.0;
                any = true;
            }
        }
    }
    Ok(if any {
        Some(Tensor::from_vec(mask, (b, b), device)?)
    } else {
        None
    })
}

/// Top-1 retrieval accuracy within the batch: (image→text, text→image).
pub(crate) fn retrieval_accuracy(img: &Tensor, txt: &Tensor) -> Result<(f32, f32)> {
    let s = l2_normalize(img)?.matmul(&l2_normalize(txt)?.t()?)?;
    let acc = |s: &Tensor| -> Result<f32> {
        let am: Vec<u32> = s.argmax(D::Minus1)?.to_vec1()?;
        let hits = am
            .iter()
            .enumerate()
            .filter(|(i, &j)| *i == j as usize)
            .count();
        Ok(hits as f32 / am.len().max(1) as f32)
    };
    Ok((acc(&s)?, acc(&s.t()?.contiguous()?)?))
}

/// f32 value of a 0-d (or 1-element) tensor.
pub(crate) fn scalar_f32(t: &Tensor) -> Result<f32> {
    Ok(t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?[0])
}

//! One tower's half of the explanation: the contraction of its integrated Jacobian with the
//! input difference, one column per token (`U` for text, `V` for the image), by batched JVPs.

use super::settings::{ImageReference, Mode, Settings};
use crate::io::tokenizer::Encoded;
use crate::model::{ClipModel, Tangents, TransformerConfig};
use crate::{Error, Result};
use candle_core::{DType, Tensor, D};

/// Receives progress of long computations (the CLI draws a bar from it).
pub trait Progress {
    /// A new phase with `total` units of work.
    fn start(&mut self, label: &str, total: u64);
    fn advance(&mut self, done: u64);
}

/// Ignores progress.
pub struct NoProgress;
impl Progress for NoProgress {
    fn start(&mut self, _: &str, _: u64) {}
    fn advance(&mut self, _: u64) {}
}

/// One tower's result.
#[derive(Clone, Debug)]
pub struct TowerSide {
    /// `[tokens, proj]`: row s is the integrated JVP of token s (U or V transposed). In
    /// [`Mode::Cosine`] these are JVPs of the normalised embedding.
    pub contributions: Tensor,
    /// The input's embedding (α = 1), unnormalised, `[proj]`.
    pub embedding: Tensor,
    /// The embedding at the α = 0 end of the path (reference states, pooled like the input).
    pub path_end: Tensor,
    /// The reference embedding as exclip computes it (text: pooled at the reference's own EOT).
    pub reference: Tensor,
    /// Pooled row of the input (text: EOT index; image: 0).
    pub pooled_index: usize,
}

/// Text side: tokens SOT..EOT of `caption` against `reference` (see
/// [`crate::io::tokenizer::ClipTokenizer::reference`]).
pub fn text_side(
    model: &ClipModel,
    caption: &Encoded,
    reference: &Encoded,
    settings: &Settings,
    progress: &mut dyn Progress,
) -> Result<TowerSide> {
    let cfg = &model.config.text;
    let pool = cfg.pooling.index(&caption.ids).ok_or_else(|| {
        Error::InvalidArgument("caption ids hold no end-of-text token to pool at".into())
    })?;
    let ref_pool = cfg.pooling.index(&reference.ids).ok_or_else(|| {
        Error::InvalidArgument("reference ids hold no end-of-text token to pool at".into())
    })?;
    // Causal attention: rows after both pooled positions never reach an embedding.
    let seq = pool.max(ref_pool) + 1;
    let device = model.text.weights.token_embedding.device();
    let ids = Tensor::from_iter(
        caption.ids[..seq].iter().chain(&reference.ids[..seq]).copied(),
        device,
    )?
    .reshape((2, seq))?;
    let hidden = model.text.hidden_at(settings.text_layer, &ids)?;
    let (x, r) = (hidden.get(0)?, hidden.get(1)?);
    let layer = settings.text_layer;
    let tower = &model.text;
    let footprint = tangent_footprint(&cfg.transformer, layer, seq);
    let contributions = integrate(
        "text tokens",
        &x,
        &r,
        pool + 1,
        footprint,
        settings,
        progress,
        |primal, tangents| {
            let p = primal.dim(0)?;
            tower.jvp_from(layer, primal, tangents, &vec![pool; p])
        },
    )?;
    let ends = tower.embed_from(layer, &hidden, &[pool, pool])?;
    let reference_own = tower.embed_from(layer, &r.unsqueeze(0)?, &[ref_pool])?;
    Ok(TowerSide {
        contributions: contributions.contributions,
        embedding: ends.get(0)?,
        path_end: ends.get(1)?,
        reference: reference_own.get(0)?,
        pooled_index: pool,
    })
}

/// Image side: every token of the split layer (CLS first, then patches row-major).
/// `pixels` is the normalised `[3, H, W]` input.
pub fn image_side(
    model: &ClipModel,
    pixels: &Tensor,
    settings: &Settings,
    progress: &mut dyn Progress,
) -> Result<TowerSide> {
    let reference = match &settings.image_reference {
        ImageReference::Zeros => pixels.zeros_like()?,
        ImageReference::Tensor(t) => t.to_device(pixels.device())?.to_dtype(DType::F32)?,
    };
    let batch = Tensor::stack(&[pixels, &reference], 0)?;
    let layer = settings.image_layer;
    let tower = &model.vision;
    let hidden = tower.hidden_at(layer, &batch)?;
    let (x, r) = (hidden.get(0)?, hidden.get(1)?);
    let tokens = x.dim(0)?;
    let footprint = tangent_footprint(&model.config.vision.transformer, layer, tokens);
    let contributions = integrate(
        "image tokens",
        &x,
        &r,
        tokens,
        footprint,
        settings,
        progress,
        |primal, tangents| tower.jvp_from(layer, primal, tangents),
    )?;
    let ends = tower.embed_from(layer, &hidden)?;
    Ok(TowerSide {
        contributions: contributions.contributions,
        embedding: ends.get(0)?,
        path_end: ends.get(1)?,
        reference: ends.get(1)?,
        pooled_index: 0,
    })
}

struct Integrated {
    contributions: Tensor,
}

/// `(1/N) Σ_n JVP(e, r + α_n (x − r), (x − r) masked to row s)` for rows s in 0..rows, batched
/// over rows and path points in chunks that respect `settings.max_batch_elements`.
///
/// Path points are the outer loop and every row rides along, so each path point's primal goes
/// through the blocks once; rows are split only when one path point with all rows is already
/// over the budget (then the primal is recomputed per row chunk, a small relative cost).
fn integrate(
    label: &str,
    x: &Tensor,
    r: &Tensor,
    rows: usize,
    per_tangent: usize,
    settings: &Settings,
    progress: &mut dyn Progress,
    jvp: impl Fn(&Tensor, &Tangents) -> Result<(Tensor, Tensor)>,
) -> Result<Integrated> {
    let width = x.dim(1)?;
    let delta = (x - r)?;
    let alphas = settings.alphas();
    let steps = alphas.len();
    let budget = (settings.max_batch_elements / per_tangent.max(1)).max(1); // (row, path point) pairs
    let row_chunk = rows.clamp(1, budget);
    let path_chunk = (budget / row_chunk).clamp(1, steps);

    progress.start(label, (rows * steps) as u64);
    let mut sums: Vec<Tensor> = Vec::new();
    for row0 in (0..rows).step_by(row_chunk) {
        let row1 = (row0 + row_chunk).min(rows);
        let row_ids: Vec<usize> = (row0..row1).collect();
        let index = Tensor::from_iter(row_ids.iter().map(|&i| i as u32), x.device())?;
        let row_values = delta.index_select(&index, 0)?; // [t, width]
        let mut sum: Option<Tensor> = None;
        for p0 in (0..steps).step_by(path_chunk) {
            let p1 = (p0 + path_chunk).min(steps);
            let p = p1 - p0;
            let alpha = Tensor::from_slice(&alphas[p0..p1], (p, 1, 1), x.device())?;
            let primal = alpha.broadcast_mul(&delta.unsqueeze(0)?)?.broadcast_add(&r.unsqueeze(0)?)?;
            let values = row_values
                .unsqueeze(1)?
                .broadcast_as((row1 - row0, p, width))?
                .contiguous()?;
            let tangents = Tangents::SingleRow { rows: row_ids.clone(), values };
            let (emb, demb) = jvp(&primal, &tangents)?; // [p, proj], [t, p, proj]
            let demb = match settings.mode {
                Mode::Exclip => demb,
                Mode::Cosine => normalised_tangent(&emb, &demb)?,
            };
            let chunk_sum = demb.sum(1)?; // [t, proj]
            sum = Some(match sum {
                None => chunk_sum,
                Some(s) => (s + chunk_sum)?,
            });
            progress.advance(((row1 - row0) * p) as u64);
        }
        sums.push(sum.expect("at least one path point"));
    }
    let contributions = (Tensor::cat(&sums, 0)? / steps as f64)?;
    Ok(Integrated { contributions })
}

/// Elements one (token, path point) pair occupies in the largest activation of a JVP from
/// `layer`: the MLP hidden states of every row; from the last block only the pooled row's MLP and
/// one attention row per head (tangents stay on single rows there).
fn tangent_footprint(cfg: &TransformerConfig, layer: usize, seq: usize) -> usize {
    if layer + 1 >= cfg.layers {
        cfg.mlp_dim + cfg.heads * seq
    } else {
        seq * cfg.mlp_dim
    }
}

/// Tangent of e/|e| given the tangent ė of e: (ė − ê (ê·ė)) / |e|.
/// `emb` `[p, proj]`, `demb` `[t, p, proj]`.
pub fn normalised_tangent(emb: &Tensor, demb: &Tensor) -> Result<Tensor> {
    let norm = emb.sqr()?.sum_keepdim(D::Minus1)?.sqrt()?; // [p, 1]
    let unit = emb.broadcast_div(&norm)?; // [p, proj]
    let along = demb.broadcast_mul(&unit)?.sum_keepdim(D::Minus1)?; // [t, p, 1]
    let radial = along.broadcast_mul(&unit)?;
    Ok((demb - radial)?.broadcast_div(&norm)?)
}

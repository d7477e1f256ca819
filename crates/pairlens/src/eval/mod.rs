//! Held-out evaluation of a loaded model on the Fashion-MNIST test split:
//!
//! - [`evaluate_retrieval`]: image↔caption recall (R@1, R@5) over seeded test mosaics;
//! - [`evaluate_zero_shot`]: 10-class accuracy on single test items against class-noun prompts.
//!
//! Images are fed exactly as `pairlens explain` would treat a grayscale PNG of them (8-bit
//! pixels → [`DecodedImage::from_raw`] → the checkpoint's own preprocessing), so the numbers
//! describe what users of the checkpoint get, not the training pipeline's shortcut.

mod retrieval;
mod zero_shot;

use candle_core::Tensor;
use rayon::prelude::*;

use crate::io::checkpoint::LoadedModel;
use crate::io::image::{DecodedImage, Mode};
use crate::io::preprocess::{preprocess_u8, to_chw_f32};
use crate::progress::Progress;
use crate::train::loss::l2_normalize;
use crate::{Error, Result};

pub use retrieval::{
    evaluate_retrieval, positive_ranks, recall_at, retrieval_metrics, Recall, RetrievalMetrics,
    RetrievalReport,
};
pub use zero_shot::{
    class_prompts, evaluate_zero_shot, place_like_generator, place_single, predict,
    synonym_prompts, zero_shot_metrics, ClassAccuracy, Placement, ZeroShotMetrics, ZeroShotReport,
};

fn check_batch(batch: usize) -> Result<()> {
    if batch == 0 {
        return Err(Error::InvalidArgument(
            "evaluation batch size must be at least 1".into(),
        ));
    }
    Ok(())
}

/// Unit-norm image embeddings `[n, proj]` of `n` square grayscale canvases of side `side`;
/// `make(i)` draws canvas `i`. Canvases are preprocessed in parallel, embedded `batch` at a time.
pub fn embed_gray_images(
    loaded: &LoadedModel,
    n: usize,
    side: usize,
    batch: usize,
    make: impl Fn(usize) -> Result<Vec<u8>> + Sync,
    progress: &mut dyn Progress,
) -> Result<Tensor> {
    check_batch(batch)?;
    let mut out = Vec::with_capacity(n.div_ceil(batch));
    let mut start = 0;
    while start < n {
        let end = (start + batch).min(n);
        let rows: Vec<(Vec<f32>, (usize, usize))> = (start..end)
            .into_par_iter()
            .map(|i| {
                let img = DecodedImage::from_raw(side, side, Mode::L, make(i)?)?;
                let rgb = preprocess_u8(&img, &loaded.preprocess)?;
                Ok((
                    to_chw_f32(&rgb, &loaded.preprocess),
                    (rgb.height, rgb.width),
                ))
            })
            .collect::<Result<_>>()?;
        let (h, w) = rows[0].1;
        let pixels: Vec<f32> = rows.into_iter().flat_map(|r| r.0).collect();
        let pixels = Tensor::from_vec(pixels, (end - start, 3, h, w), loaded.model.device())?;
        out.push(l2_normalize(&loaded.model.vision.forward(&pixels)?)?);
        progress.advance((end - start) as u64);
        start = end;
    }
    if out.is_empty() {
        return Err(Error::InvalidArgument("no images to embed".into()));
    }
    Ok(Tensor::cat(&out, 0)?)
}

/// Unit-norm text embeddings `[n, proj]` of `captions`, `batch` at a time. Each batch is cut
/// after its last pooled position (exact: the text tower is causal). A caption longer than the
/// context is an error, not silently truncated.
pub fn embed_captions(
    loaded: &LoadedModel,
    captions: &[String],
    batch: usize,
    progress: &mut dyn Progress,
) -> Result<Tensor> {
    check_batch(batch)?;
    let pooling = loaded.model.text.config.pooling;
    let mut out = Vec::with_capacity(captions.len().div_ceil(batch));
    for chunk in captions.chunks(batch) {
        let mut ids = Vec::with_capacity(chunk.len());
        let mut pool = Vec::with_capacity(chunk.len());
        for c in chunk {
            let enc = loaded.tokenizer.encode(c, false)?;
            let p = pooling.index(&enc.ids).ok_or_else(|| Error::Caption {
                caption: c.clone(),
                msg: format!("no token to pool ({pooling:?}) in its ids"),
            })?;
            pool.push(p);
            ids.push(enc.ids);
        }
        let s = pool.iter().max().map_or(1, |p| p + 1);
        let flat: Vec<u32> = ids.iter().flat_map(|r| r[..s].iter().copied()).collect();
        let ids = Tensor::from_vec(flat, (chunk.len(), s), loaded.model.device())?;
        out.push(l2_normalize(&loaded.model.text.forward(&ids, &pool)?)?);
        progress.advance(chunk.len() as u64);
    }
    if out.is_empty() {
        return Err(Error::InvalidArgument("no captions to embed".into()));
    }
    Ok(Tensor::cat(&out, 0)?)
}

/// Whether a candidate scoring `candidate` ranks at or above a positive scoring `positive`:
/// ties, and NaN on either side, count against the model.
pub(crate) fn outranks(candidate: f32, positive: f32) -> bool {
    candidate.partial_cmp(&positive) != Some(std::cmp::Ordering::Less)
}

/// Cosine similarities `a · bᵀ` of unit-norm rows, row-major `[rows(a), rows(b)]`.
pub(crate) fn cosine_matrix(a: &Tensor, b: &Tensor) -> Result<Vec<f32>> {
    Ok(a.matmul(&b.t()?.contiguous()?)?
        .flatten_all()?
        .to_vec1::<f32>()?)
}

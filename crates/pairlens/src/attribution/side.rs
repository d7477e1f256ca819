//! One tower's half of the explanation: the contraction of its integrated Jacobian with the
//! input difference, one column per token (`U` for text, `V` for the image), by batched JVPs,
//! or in closed form ([`super::last_block`]) when the split is the tower's last block.

use super::last_block::{self, LastBlock};
use super::settings::{ImageReference, Mode, Settings};
use crate::io::tokenizer::Encoded;
use crate::model::{ClipModel, Tangents, TransformerConfig};
use crate::progress::Progress;
use crate::{Error, Result};
use candle_core::{DType, Tensor, D};

/// The two ends of one tower's integration path: the input's states `x` and the reference's
/// `r` entering the split block, `[S, D]` each.
#[derive(Clone, Copy)]
pub(crate) struct PathEnds<'a> {
    pub x: &'a Tensor,
    pub r: &'a Tensor,
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
    text_side_by(
        model,
        caption,
        reference,
        settings,
        progress,
        Route::ClosedForm,
    )
}

/// How a split at the last block is integrated: [`last_block`]'s closed form, or batched JVPs as
/// at every other block (kept to check the closed form against).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Route {
    ClosedForm,
    #[cfg_attr(not(test), allow(dead_code))]
    Jvp,
}

fn text_side_by(
    model: &ClipModel,
    caption: &Encoded,
    reference: &Encoded,
    settings: &Settings,
    progress: &mut dyn Progress,
    route: Route,
) -> Result<TowerSide> {
    let cfg = &model.text.config;
    let pool = cfg.pooling.index(&caption.ids).ok_or_else(|| {
        Error::InvalidArgument("caption ids hold no end-of-text token to pool at".into())
    })?;
    let ref_pool = cfg.pooling.index(&reference.ids).ok_or_else(|| {
        Error::InvalidArgument("reference ids hold no end-of-text token to pool at".into())
    })?;
    // Causal attention: rows after both pooled positions never reach an embedding, and only
    // rows up to the pooled one are attributed. Bidirectional attention reads them all.
    let (seq, rows) = match cfg.causal {
        true => (pool.max(ref_pool) + 1, pool + 1),
        false => (caption.ids.len(), caption.ids.len()),
    };
    if reference.ids.len() < seq {
        return Err(Error::InvalidArgument(format!(
            "the text reference has {} ids, the caption {seq}",
            reference.ids.len()
        )));
    }
    let device = model.text.weights.token_embedding.device();
    let ids = Tensor::from_iter(
        caption.ids[..seq]
            .iter()
            .chain(&reference.ids[..seq])
            .copied(),
        device,
    )?
    .reshape((2, seq))?;
    let hidden = model.text.hidden_at(settings.text_layer, &ids)?;
    let (x, r) = (hidden.get(0)?, hidden.get(1)?);
    let layer = settings.text_layer;
    let tower = &model.text;
    let reference_own = tower
        .embed_from(layer, &r.unsqueeze(0)?, &[ref_pool])?
        .get(0)?;
    let label = "text tokens";
    if cfg.transformer.is_last(layer) && route == Route::ClosedForm {
        let last = LastBlock::of(tower.stack());
        let (x, r) = (x.narrow(0, 0, rows)?, r.narrow(0, 0, rows)?);
        let ends = PathEnds { x: &x, r: &r };
        let c = last_block::integrate(&last, ends, pool, rows, label, settings, progress)?;
        return Ok(TowerSide {
            contributions: c.contributions,
            embedding: c.embedding,
            path_end: c.path_end,
            reference: reference_own,
            pooled_index: pool,
        });
    }
    let footprint = tangent_footprint(&cfg.transformer, layer, seq, false);
    let ends = PathEnds { x: &x, r: &r };
    let jvp = |primal: &Tensor, tangents: &Tangents| {
        let p = primal.dim(0)?;
        tower.jvp_from(layer, primal, tangents, &vec![pool; p])
    };
    let contributions = integrate(label, ends, rows, footprint, settings, progress, jvp)?;
    let embedded = tower.embed_from(layer, &hidden, &[pool, pool])?;
    Ok(TowerSide {
        contributions: contributions.contributions,
        embedding: embedded.get(0)?,
        path_end: embedded.get(1)?,
        reference: reference_own,
        pooled_index: pool,
    })
}

/// Image side: every token of the split layer (CLS first if the tower has one, then patches
/// row-major).
/// `pixels` is the normalised `[3, H, W]` input.
pub fn image_side(
    model: &ClipModel,
    pixels: &Tensor,
    settings: &Settings,
    progress: &mut dyn Progress,
) -> Result<TowerSide> {
    image_side_by(model, pixels, settings, progress, Route::ClosedForm)
}

fn image_side_by(
    model: &ClipModel,
    pixels: &Tensor,
    settings: &Settings,
    progress: &mut dyn Progress,
    route: Route,
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
    let (ends, label) = (PathEnds { x: &x, r: &r }, "image tokens");
    let cfg = &model.vision.config;
    let closed_form = layer == cfg.last_split();
    if closed_form && route == Route::ClosedForm {
        let last = LastBlock::of(tower.stack());
        let c = last_block::integrate(&last, ends, 0, tokens, label, settings, progress)?;
        return Ok(TowerSide {
            contributions: c.contributions,
            embedding: c.embedding,
            reference: c.path_end.clone(),
            path_end: c.path_end,
            pooled_index: 0,
        });
    }
    let footprint = tangent_footprint(&cfg.transformer, layer, tokens, !cfg.class_token());
    let jvp = |primal: &Tensor, tangents: &Tangents| tower.jvp_from(layer, primal, tangents);
    let contributions = integrate(label, ends, tokens, footprint, settings, progress, jvp)?;
    let embedded = tower.embed_from(layer, &hidden)?;
    Ok(TowerSide {
        contributions: contributions.contributions,
        embedding: embedded.get(0)?,
        path_end: embedded.get(1)?,
        reference: embedded.get(1)?,
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
    PathEnds { x, r }: PathEnds,
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
            let alpha =
                Tensor::from_slice(&alphas[p0..p1], (p, 1, 1), x.device())?.to_dtype(x.dtype())?;
            let primal = alpha
                .broadcast_mul(&delta.unsqueeze(0)?)?
                .broadcast_add(&r.unsqueeze(0)?)?;
            let values = row_values
                .unsqueeze(1)?
                .broadcast_as((row1 - row0, p, width))?
                .contiguous()?;
            let tangents = Tangents::SingleRow {
                rows: row_ids.clone(),
                values,
            };
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
            if progress.cancelled() {
                return Err(Error::Cancelled);
            }
        }
        sums.push(sum.expect("at least one path point"));
    }
    let contributions = (Tensor::cat(&sums, 0)? / steps as f64)?;
    Ok(Integrated { contributions })
}

/// Elements one (token, path point) pair occupies in the largest activation of a JVP from
/// `layer`: the MLP hidden states of every row; from the last single-query layer (the last block,
/// or a pooling `head`'s input) only the query row's MLP and one attention row per head (tangents
/// stay on single rows there).
fn tangent_footprint(cfg: &TransformerConfig, layer: usize, seq: usize, head: bool) -> usize {
    let single_query = match head {
        true => layer == cfg.layers,
        false => cfg.is_last(layer),
    };
    if single_query {
        cfg.mlp_dim + cfg.heads * seq
    } else {
        seq * cfg.mlp_dim
    }
}

/// Tangent of e/|e| given the tangent ė of e: (ė − ê (ê·ė)) / |e|.
/// `emb` `[p, proj]`, `demb` `[t, p, proj]`.
fn normalised_tangent(emb: &Tensor, demb: &Tensor) -> Result<Tensor> {
    let norm = emb.sqr()?.sum_keepdim(D::Minus1)?.sqrt()?; // [p, 1]
    let unit = emb.broadcast_div(&norm)?; // [p, proj]
    let along = demb.broadcast_mul(&unit)?.sum_keepdim(D::Minus1)?; // [t, p, 1]
    let radial = along.broadcast_mul(&unit)?;
    Ok((demb - radial)?.broadcast_div(&norm)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ClipConfig, ClipWeights, TextTower, VisionTower};
    use crate::progress::NoProgress;

    fn model(dtype: DType) -> ClipModel {
        model_of(ClipConfig::tiny(), dtype)
    }

    fn model_of(config: ClipConfig, dtype: DType) -> ClipModel {
        let w = ClipWeights::random(&config, 11)
            .unwrap()
            .to_dtype(dtype)
            .unwrap();
        ClipModel {
            text: TextTower {
                config: config.text.clone(),
                weights: w.text,
            },
            vision: VisionTower {
                config: config.vision.clone(),
                weights: w.vision,
            },
            logit_scale: w.logit_scale,
            logit_bias: w.logit_bias,
        }
    }

    fn encoded(ids: &[u32], context: usize) -> Encoded {
        let mut all = ids.to_vec();
        all.resize(context, 0);
        Encoded {
            ids: all,
            len: ids.len(),
            tokens: ids.iter().map(|i| i.to_string()).collect(),
        }
    }

    fn rel(a: &Tensor, b: &Tensor) -> f64 {
        let max_abs = |t: &Tensor| -> f64 {
            let m = t.abs().unwrap().max_all().unwrap();
            m.to_dtype(DType::F64).unwrap().to_scalar().unwrap()
        };
        max_abs(&(a - b).unwrap()) / max_abs(b).max(1e-30)
    }

    /// The closed form through the last block (SigLIP's image tower: through its pooling head)
    /// equals the batched JVPs, every quantity, both towers, both modes, both families, chunked
    /// or not; f64 to rounding, f32 to 1e-5.
    #[test]
    fn closed_form_last_block_equals_batched_jvps() {
        for config in [ClipConfig::tiny(), ClipConfig::tiny_siglip()] {
            closed_form_equals_batched_jvps(config);
        }
    }

    fn closed_form_equals_batched_jvps(config: ClipConfig) {
        for (dtype, tol) in [(DType::F64, 1e-11), (DType::F32, 2e-5)] {
            let m = model_of(config.clone(), dtype);
            let layers = m.text.config.transformer.layers;
            let caption = encoded(&[38, 5, 17, 3, 39], 8);
            let reference = encoded(&[38, 0, 39], 8);
            let mut rng = crate::model::Rng::new(3);
            let pixels = rng
                .tensor(&[3, 8, 12], 0.0, 1.0)
                .unwrap()
                .to_dtype(dtype)
                .unwrap();
            for mode in [Mode::Exclip, Mode::Cosine] {
                for (steps, budget) in [(1, 8 << 20), (7, 8 << 20), (10, 1500)] {
                    let settings = Settings {
                        text_layer: layers - 1,
                        image_layer: m.vision.config.last_split(),
                        steps,
                        mode,
                        max_batch_elements: budget,
                        ..Settings::default()
                    };
                    let sides = |route| {
                        let t = text_side_by(
                            &m,
                            &caption,
                            &reference,
                            &settings,
                            &mut NoProgress,
                            route,
                        )
                        .unwrap();
                        let i =
                            image_side_by(&m, &pixels, &settings, &mut NoProgress, route).unwrap();
                        (t, i)
                    };
                    let (fast, slow) = (sides(Route::ClosedForm), sides(Route::Jvp));
                    for (a, b, what) in [(&fast.0, &slow.0, "text"), (&fast.1, &slow.1, "image")] {
                        let label = format!(
                            "{:?} {dtype:?} {mode:?} N={steps} budget {budget} {what}",
                            config.vision.pooling
                        );
                        for (x, y, q) in [
                            (&a.contributions, &b.contributions, "contributions"),
                            (&a.embedding, &b.embedding, "embedding"),
                            (&a.path_end, &b.path_end, "path end"),
                            (&a.reference, &b.reference, "reference"),
                        ] {
                            let e = rel(x, y);
                            assert!(e < tol, "{label} {q}: {e:e}");
                        }
                        assert_eq!(a.pooled_index, b.pooled_index);
                    }
                }
            }
        }
    }

    /// A caller that no longer wants the work (a viewer client gone, Ctrl-C in a notebook)
    /// stops it after the first chunk of path points: both routes, both towers.
    #[test]
    fn a_cancelled_computation_stops_with_cancelled() {
        struct Cancelled(u64);
        impl Progress for Cancelled {
            fn start(&mut self, _: &str, _: u64) {}
            fn advance(&mut self, done: u64) {
                self.0 += done;
            }
            fn cancelled(&self) -> bool {
                true
            }
        }
        let m = model(DType::F32);
        let caption = encoded(&[38, 5, 17, 3, 39], 8);
        let reference = encoded(&[38, 0, 39], 8);
        let pixels = crate::model::Rng::new(3)
            .tensor(&[3, 8, 12], 0.0, 1.0)
            .unwrap();
        let last = m.vision.config.transformer.layers - 1;
        for (route, layer) in [(Route::ClosedForm, last), (Route::Jvp, 0)] {
            let settings = Settings {
                text_layer: layer,
                image_layer: layer,
                steps: 50,
                max_batch_elements: 1500,
                ..Settings::default()
            };
            let mut p = Cancelled(0);
            let r = text_side_by(&m, &caption, &reference, &settings, &mut p, route);
            assert!(matches!(r, Err(Error::Cancelled)), "text {route:?}");
            let mut q = Cancelled(0);
            let r = image_side_by(&m, &pixels, &settings, &mut q, route);
            assert!(matches!(r, Err(Error::Cancelled)), "image {route:?}");
            assert!(p.0 < 5 * 50 && q.0 < 96 * 50, "{route:?}: stopped early");
        }
    }
}

//! Both sides combined: the interaction matrix, the score, the reference terms and the
//! conservation residual, plus the queries users ask of it (a token span's heatmap, an image
//! region's token scores).

use super::settings::{Mode, Settings};
use super::side::TowerSide;
use crate::io::preprocess::Geometry;
use crate::model::ClipModel;
use crate::{Error, Result};
use candle_core::{Device, Tensor};

/// Similarities that involve a reference, in the normalisation of the interactions:
/// divided by `|f(x)| |g(y)|` in [`Mode::Exclip`]; between unit vectors in [`Mode::Cosine`].
/// They are taken at the ends of the integration path (the text reference pooled at the
/// *caption's* EOT), which makes the conservation identity exact as N grows:
///
/// `score = Σ A + text_vs_image_reference + text_reference_vs_image − reference_vs_reference + residual`.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct ReferenceTerms {
    /// f(x) · g(r_y)
    pub text_vs_image_reference: f32,
    /// f̃(r_x) · g(y)
    pub text_reference_vs_image: f32,
    /// f̃(r_x) · g(r_y)
    pub reference_vs_reference: f32,
}

/// exclip's `compute_lhs_terms`: cosines, each with its own norms, the text reference pooled at
/// its *own* EOT. Reported for comparison; they do not close the conservation identity.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct ExclipTerms {
    /// cos(f(x), g(y))
    pub score: f32,
    /// cos(f(x), g(r_y)) — exclip's `txt_ref_sim`
    pub text_vs_image_reference: f32,
    /// cos(f(r_x), g(y)) — exclip's `img_ref_sim`
    pub text_reference_vs_image: f32,
    /// cos(f(r_x), g(r_y)) — exclip's `ref_ref_sim`
    pub reference_vs_reference: f32,
}

/// One caption explained against one image: the token × image-token interactions and the
/// numbers that, with them, add up to the score.
#[derive(Clone, Debug)]
pub struct Explanation {
    /// Display strings of the attributed text tokens (the rows): CLIP's SOT..EOT, SigLIP's
    /// whole padded sequence.
    pub tokens: Vec<String>,
    /// `[tokens, image_tokens]`: image tokens of the split layer, the CLS token first if the
    /// tower has one, then the patches row-major.
    pub interactions: Tensor,
    /// Whether the first image token is a class token (CLIP) or every one is a patch (SigLIP).
    pub class_token: bool,
    /// Patch grid (rows, columns).
    pub grid: (usize, usize),
    /// Side of a patch in network-input pixels.
    pub patch_size: usize,
    /// Cosine similarity of the two embeddings.
    pub score: f32,
    /// The terms that close the conservation identity (see [`ReferenceTerms`]).
    pub reference_terms: ReferenceTerms,
    /// exclip's own reference terms, for comparison with it.
    pub exclip_terms: ExclipTerms,
    /// `score − (Σ A + text_vs_image_reference + text_reference_vs_image − reference_vs_reference)`.
    pub residual: f32,
    /// Which function was integrated.
    pub mode: Mode,
    /// The text block whose input was attributed.
    pub text_layer: usize,
    /// The image block whose input was attributed.
    pub image_layer: usize,
    /// Path points N.
    pub steps: usize,
    /// The text reference's ids (the α = 0 end of the text path), to reproduce the run.
    pub text_reference: Vec<u32>,
    /// The image reference (the α = 0 end of the image path), in words.
    pub image_reference: String,
}

fn dot(a: &Tensor, b: &Tensor) -> Result<f32> {
    Ok((a * b)?.sum_all()?.to_scalar::<f32>()?)
}

fn norm(a: &Tensor) -> Result<f32> {
    Ok(dot(a, a)?.sqrt())
}

/// Cosine similarity of two vectors (any shapes with the same number of elements).
pub fn cosine(a: &Tensor, b: &Tensor) -> Result<f32> {
    let (a, b) = (&a.flatten_all()?, &b.flatten_all()?);
    Ok(dot(a, b)? / (norm(a)? * norm(b)?))
}

impl Explanation {
    /// Bytes it holds (the interaction matrix and the token strings), for caches bounded in
    /// memory.
    pub fn bytes(&self) -> usize {
        let matrix = self.interactions.elem_count() * self.interactions.dtype().size_in_bytes();
        let tokens: usize = self.tokens.iter().map(|t| t.len() + 24).sum();
        matrix + tokens + std::mem::size_of::<Self>()
    }

    /// A = U Vᵀ (rows: text tokens, columns: image tokens), normalised per the mode.
    pub fn combine(
        text: &TowerSide,
        image: &TowerSide,
        tokens: Vec<String>,
        text_reference: &[u32],
        model: &ClipModel,
        settings: &Settings,
    ) -> Result<Self> {
        let (fx, gy) = (&text.embedding, &image.embedding);
        let (fr, gr) = (&text.path_end, &image.path_end);
        let (nx, ny) = (norm(fx)?, norm(gy)?);
        let raw = text.contributions.matmul(&image.contributions.t()?)?;
        let (interactions, reference_terms) = match settings.mode {
            Mode::Exclip => {
                let scale = 1.0 / (nx * ny);
                (
                    (raw * scale as f64)?,
                    ReferenceTerms {
                        text_vs_image_reference: dot(fx, gr)? * scale,
                        text_reference_vs_image: dot(fr, gy)? * scale,
                        reference_vs_reference: dot(fr, gr)? * scale,
                    },
                )
            }
            Mode::Cosine => (
                raw,
                ReferenceTerms {
                    text_vs_image_reference: cosine(fx, gr)?,
                    text_reference_vs_image: cosine(fr, gy)?,
                    reference_vs_reference: cosine(fr, gr)?,
                },
            ),
        };
        let interactions = interactions.to_device(&Device::Cpu)?;
        let score = cosine(fx, gy)?;
        let total = interactions.sum_all()?.to_scalar::<f32>()?;
        let residual = score
            - (total
                + reference_terms.text_vs_image_reference
                + reference_terms.text_reference_vs_image
                - reference_terms.reference_vs_reference);
        let exclip_terms = ExclipTerms {
            score,
            text_vs_image_reference: cosine(fx, &image.reference)?,
            text_reference_vs_image: cosine(&text.reference, gy)?,
            reference_vs_reference: cosine(&text.reference, &image.reference)?,
        };
        // Rows are the tokens up to the pooled one: with causal attention nothing after it can
        // interact. That is the EOT, unless a model pools at the largest id and the caption holds
        // an id above EOT (possible with small vocabularies); then the later tokens are dropped.
        let mut tokens = tokens;
        let rows = interactions.dim(0)?;
        if tokens.len() < rows {
            return Err(Error::InvalidArgument(format!(
                "{} display tokens for {rows} attributed text tokens",
                tokens.len()
            )));
        }
        tokens.truncate(rows);
        let e = Explanation {
            tokens,
            interactions,
            class_token: model.vision.config.class_token(),
            grid: model.vision.config.grid(),
            patch_size: model.vision.config.patch_size,
            score,
            reference_terms,
            exclip_terms,
            residual,
            mode: settings.mode,
            text_layer: settings.text_layer,
            image_layer: settings.image_layer,
            steps: settings.steps,
            text_reference: text_reference.to_vec(),
            image_reference: settings.image_reference.describe().into(),
        };
        e.check_finite()?;
        Ok(e)
    }

    fn check_finite(&self) -> Result<()> {
        let values = self.matrix()?;
        if !values.iter().flatten().all(|v| v.is_finite()) || !self.score.is_finite() {
            return Err(Error::NonFinite(
                "the explanation contains NaN or infinite values (the model's weights or input may be broken)"
                    .into(),
            ));
        }
        Ok(())
    }

    /// The interactions as rows of floats.
    pub fn matrix(&self) -> Result<Vec<Vec<f32>>> {
        Ok(self.interactions.to_vec2::<f32>()?)
    }

    /// Σ A over all entries.
    pub fn total(&self) -> Result<f32> {
        Ok(self.interactions.sum_all()?.to_scalar::<f32>()?)
    }

    /// Sum of the rows of a token span (`start..end`, indices into [`Self::tokens`]) over the
    /// patches: a heatmap `[grid rows × grid cols]` row-major, CLS excluded (returned apart).
    pub fn span_heatmap(&self, start: usize, end: usize) -> Result<SpanHeatmap> {
        let rows = span_rows(&self.interactions, start, end)?;
        let first = usize::from(self.class_token);
        Ok(SpanHeatmap {
            cls: self.class_token.then(|| rows[0]),
            patches: rows[first..].to_vec(),
            grid: self.grid,
        })
    }

    /// Every token's interaction with a box `[x0, y0, x1, y1]` in pixels of the original image
    /// (`geometry` maps them to the network input): patches weighted by the share of their area
    /// inside the box, which is clipped to the image.
    pub fn box_scores(&self, geometry: &Geometry, b: [f32; 4]) -> Result<Vec<f32>> {
        let input = geometry.user_box_to_input(b)?;
        let weights = patch_weights(self.grid, self.patch_size, input)
            .map_err(|e| Error::InvalidArgument(format!("box {b:?}: {e}")))?;
        self.region_token_scores(&weights)
    }

    /// Token scores for an image region given as weights over the patches (row-major, see
    /// [`patch_weights`]): Σ_t w_t A[s, patch t] for every token s.
    pub fn region_token_scores(&self, weights: &[f32]) -> Result<Vec<f32>> {
        region_scores(&self.interactions, self.grid, weights)
    }
}

/// The rows `start..end` of a token × image-token matrix `[tokens, 1 + patches]`, summed
/// (CLS first): the span query of [`Explanation`] and of the grounding baselines.
pub fn span_rows(matrix: &Tensor, start: usize, end: usize) -> Result<Vec<f32>> {
    let n = matrix.dim(0)?;
    if start >= end || end > n {
        return Err(Error::InvalidArgument(format!(
            "token span {start}:{end} is out of range: the caption has {n} tokens (SOT = 0 … EOT = {}), spans are start:end with start < end ≤ {n}",
            n.saturating_sub(1)
        )));
    }
    Ok(matrix
        .narrow(0, start, end - start)?
        .sum(0)?
        .to_vec1::<f32>()?)
}

/// `Σ_t w_t M[s, t-th patch]` for every token s of a token × image-token matrix whose last
/// columns are the patches: the region query.
pub fn region_scores(matrix: &Tensor, grid: (usize, usize), weights: &[f32]) -> Result<Vec<f32>> {
    let patches = grid.0 * grid.1;
    if weights.len() != patches {
        return Err(Error::InvalidArgument(format!(
            "{} region weights for {patches} patches",
            weights.len()
        )));
    }
    let w = Tensor::from_slice(weights, (patches, 1), &Device::Cpu)?;
    let cols = matrix.dim(1)?;
    if cols < patches {
        return Err(Error::InvalidArgument(format!(
            "{cols} image tokens for {patches} patches"
        )));
    }
    let patch_cols = matrix.narrow(1, cols - patches, patches)?;
    Ok(patch_cols.matmul(&w)?.squeeze(1)?.to_vec1::<f32>()?)
}

/// A token span's interactions with every image token.
#[derive(Clone, Debug, serde::Serialize)]
pub struct SpanHeatmap {
    /// Interaction with the CLS token of the split layer (`None`: the tower has none).
    pub cls: Option<f32>,
    /// Row-major over the patch grid.
    pub patches: Vec<f32>,
    /// Patch grid (rows, columns).
    pub grid: (usize, usize),
}

/// Weight of every patch for a box in network-input pixel coordinates `(x0, y0, x1, y1)`:
/// the fraction of the patch's area inside the box (so partly covered patches count partly).
/// Errors if the box is empty or lies outside the input.
pub fn patch_weights(
    grid: (usize, usize),
    patch_size: usize,
    (x0, y0, x1, y1): (f32, f32, f32, f32),
) -> Result<Vec<f32>> {
    let (gh, gw) = grid;
    let (w, h) = ((gw * patch_size) as f32, (gh * patch_size) as f32);
    let (cx0, cy0, cx1, cy1) = (x0.max(0.0), y0.max(0.0), x1.min(w), y1.min(h));
    if !(x0 < x1 && y0 < y1) {
        return Err(Error::InvalidArgument(format!(
            "box ({x0}, {y0}, {x1}, {y1}) is empty: expected x0 < x1 and y0 < y1"
        )));
    }
    if !(cx0 < cx1 && cy0 < cy1) {
        return Err(Error::InvalidArgument(format!(
            "box ({x0}, {y0}, {x1}, {y1}) does not overlap the part of the image the model sees (0..{w} × 0..{h} after resize and crop)"
        )));
    }
    let p = patch_size as f32;
    let area = p * p;
    let mut weights = Vec::with_capacity(gh * gw);
    for row in 0..gh {
        for col in 0..gw {
            let (px0, py0) = (col as f32 * p, row as f32 * p);
            let ox = (cx1.min(px0 + p) - cx0.max(px0)).max(0.0);
            let oy = (cy1.min(py0 + p) - cy0.max(py0)).max(0.0);
            weights.push(ox * oy / area);
        }
    }
    Ok(weights)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patch_weights_count_partial_overlap() {
        // 2×2 grid of 10-pixel patches; the box covers patch (0,0) fully and half of (0,1).
        let w = patch_weights((2, 2), 10, (0.0, 0.0, 15.0, 10.0)).unwrap();
        assert_eq!(w, vec![1.0, 0.5, 0.0, 0.0]);
        // Clipped to the input.
        let w = patch_weights((2, 2), 10, (-5.0, 15.0, 100.0, 100.0)).unwrap();
        assert_eq!(w, vec![0.0, 0.0, 0.5, 0.5]);
        assert!(patch_weights((2, 2), 10, (30.0, 30.0, 40.0, 40.0)).is_err());
        assert!(patch_weights((2, 2), 10, (5.0, 5.0, 5.0, 8.0)).is_err());
    }
}

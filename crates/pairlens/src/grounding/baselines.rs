//! First-order baselines for the grounding evaluation, beside pairlens' second-order
//! interactions (chosen with `--method`):
//!
//! - **ig**: image-side integrated gradients of the cosine score w.r.t. the image states entering
//!   block l, summed per patch. IG has no notion of a phrase, so a phrase's heatmap is the IG of
//!   the score between the image and the PHRASE'S TEXT alone as a caption. Computed from the
//!   engine's image side in [`Mode::Cosine`]: its row t is the integrated JVP of the unit image
//!   embedding along `y − r_y` masked to token t, so `IG_t = ê_text · V̂[t]` — the same Riemann
//!   rule and path points as pairlens, and `Σ_t IG_t` (CLS included) tends to
//!   `cos(text, g(y)) − cos(text, g(r_y))`. There are no token scores, so the reverse
//!   direction is undefined.
//! - **similarity**: the states entering block l of each tower, every token passed through its
//!   tower's final LayerNorm and projection, cosine per (token, image token). A full token ×
//!   image-token matrix, so both directions are computed as for pairlens.

use candle_core::{Device, Tensor, D};

use crate::attribution::{image_side, Mode, Settings, TowerSide};
use crate::attribution::{region_scores, span_rows};
use crate::io::tokenizer::Encoded;
use crate::model::{ops, ClipModel};
use crate::progress::NoProgress;
use crate::{Error, Result};

/// What produces a phrase's heatmap.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    /// Second-order token × patch interactions (the span's rows summed).
    Pairlens,
    /// Image-side integrated gradients of the score with the phrase's text as caption.
    Ig,
    /// Cosine of projected layer-l token and patch states.
    Similarity,
}

impl Method {
    /// The name `--method` takes and results.csv records: `pairlens`, `ig` or `similarity`.
    pub fn name(self) -> &'static str {
        match self {
            Method::Pairlens => "pairlens",
            Method::Ig => "ig",
            Method::Similarity => "similarity",
        }
    }
}

impl std::fmt::Display for Method {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Method {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "pairlens" => Ok(Method::Pairlens),
            "ig" => Ok(Method::Ig),
            "similarity" => Ok(Method::Similarity),
            other => Err(Error::InvalidArgument(format!(
                "unknown method {other:?}: expected `pairlens`, `ig` or `similarity`"
            ))),
        }
    }
}

fn unit_rows(x: &Tensor) -> Result<Tensor> {
    let n = x.sqr()?.sum_keepdim(D::Minus1)?.sqrt()?;
    Ok(x.broadcast_div(&n)?)
}

fn pooled(model: &ClipModel, caption: &Encoded) -> Result<usize> {
    model
        .text
        .config
        .pooling
        .index(&caption.ids)
        .ok_or_else(|| {
            Error::InvalidArgument("caption ids hold no end-of-text token to pool at".into())
        })
}

/// Unit text embedding of a caption, `[proj]`.
pub fn text_embedding(model: &ClipModel, caption: &Encoded) -> Result<Tensor> {
    let e = model.embed_text(&caption.ids)?.unsqueeze(0)?;
    Ok(unit_rows(&e)?.squeeze(0)?.to_device(&Device::Cpu)?)
}

/// The image side IG needs: [`image_side`] in [`Mode::Cosine`] (whatever `settings.mode`), at
/// `settings.image_layer` with `settings.steps` path points.
pub fn ig_image_side(model: &ClipModel, pixels: &Tensor, settings: &Settings) -> Result<TowerSide> {
    let s = Settings {
        mode: Mode::Cosine,
        ..settings.clone()
    };
    image_side(model, pixels, &s, &mut NoProgress)
}

/// IG of `cos(text, g(image))` per image token (CLS first, if the tower has one): `V̂ ê_text`, with
/// `image` from [`ig_image_side`] and `text` a unit embedding from [`text_embedding`].
pub fn ig_attributions(image: &TowerSide, text: &Tensor) -> Result<Vec<f32>> {
    let v = image.contributions.to_device(&Device::Cpu)?;
    Ok(v.matmul(&text.unsqueeze(1)?)?
        .squeeze(1)?
        .to_vec1::<f32>()?)
}

/// Unit embeddings `[1 + patches, proj]` of every image token entering block `layer`
/// (`ln_post` and the projection applied to each row, as to the CLS row at the top).
pub fn image_token_embeddings(model: &ClipModel, pixels: &Tensor, layer: usize) -> Result<Tensor> {
    let v = &model.vision;
    let h = v.hidden_at(layer, &pixels.unsqueeze(0)?)?.squeeze(0)?;
    let Some(projection) = &v.weights.projection else {
        return Err(crate::Error::InvalidArgument(
            "token-embedding baselines need an image tower with a class token and a projection \
             (CLIP)"
                .into(),
        ));
    };
    let y = ops::layer_norm(&h, &v.weights.ln_post, v.config.transformer.layer_norm_eps)?;
    unit_rows(&ops::linear(&y, projection)?)
}

/// Unit embeddings `[pooled + 1, proj]` of the caption's tokens SOT..pooled (EOT) entering
/// block `layer` (`ln_final` and the projection applied to each row).
pub fn text_token_embeddings(model: &ClipModel, caption: &Encoded, layer: usize) -> Result<Tensor> {
    let pool = pooled(model, caption)?;
    let t = &model.text;
    let ids = Tensor::from_slice(
        &caption.ids[..pool + 1],
        (1, pool + 1),
        t.weights.token_embedding.device(),
    )?;
    let h = t.hidden_at(layer, &ids)?.squeeze(0)?;
    let y = ops::layer_norm(&h, &t.weights.ln_final, t.config.transformer.layer_norm_eps)?;
    unit_rows(&ops::linear(&y, &t.weights.projection)?)
}

/// A token × image-token map (CLS at column 0, then patches row-major) with the two queries of
/// the evaluation; what [`similarity`] returns.
#[derive(Clone, Debug)]
pub struct TokenPatchMap {
    /// `[tokens, 1 + patches]` on the CPU.
    pub values: Tensor,
    /// Patch grid `(rows, cols)`; `rows × cols` is the number of patch columns of `values`.
    pub grid: (usize, usize),
}

impl TokenPatchMap {
    /// Sum of the span's rows over the patches (CLS dropped), row-major.
    pub fn span_heatmap(&self, start: usize, end: usize) -> Result<Vec<f32>> {
        Ok(span_rows(&self.values, start, end)?[1..].to_vec())
    }

    /// `Σ_t w_t M[s, 1 + t]` for every token s.
    pub fn region_token_scores(&self, weights: &[f32]) -> Result<Vec<f32>> {
        region_scores(&self.values, self.grid, weights)
    }
}

/// Cosine of every (token, image token) pair of [`text_token_embeddings`] and
/// [`image_token_embeddings`] (the image's computed once per image by the caller).
pub fn similarity(
    model: &ClipModel,
    caption: &Encoded,
    text_layer: usize,
    image_tokens: &Tensor,
) -> Result<TokenPatchMap> {
    let t = text_token_embeddings(model, caption, text_layer)?;
    let values = t.matmul(&image_tokens.t()?)?.to_device(&Device::Cpu)?;
    let ok = values
        .flatten_all()?
        .to_vec1::<f32>()?
        .iter()
        .all(|v| v.is_finite());
    if !ok {
        return Err(Error::InvalidArgument(
            "the similarity map contains NaN or infinite values (the model's weights or input may be broken)".into(),
        ));
    }
    Ok(TokenPatchMap {
        values,
        grid: model.vision.config.grid(),
    })
}

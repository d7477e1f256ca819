//! The built-in model: its geometry, its preprocessing, and mini-batches of Fashion-MNIST
//! mosaics ([`crate::data`]) tokenized with the word-level vocabulary.

use candle_core::{Device, Tensor};
use serde_json::{json, Value};

use super::loss::{duplicate_caption_mask, excluded_pairs, Batch, Batches};
use crate::data::caption::caption_fits;
use crate::data::{max_caption_words, Mosaic, MosaicGenerator};
use crate::io::preprocess::{PixelScaling, PreprocessConfig};
use crate::io::tokenizer::ClipTokenizer;
use crate::model::{
    Activation, ClipConfig, TextConfig, TextPooling, TransformerConfig, VisionConfig, VisionPooling,
};
use crate::{Error, Result};

/// Geometry of the built-in model (~1.7 M parameters, ~7 MB in f32): both towers width 128,
/// 4 layers, 4 heads, QuickGELU; 8-pixel patches on the 64×64 mosaics (8×8 grid); a context
/// that holds the longest caption of `max_items` items plus SOT/EOT; projection 128. Token ids
/// come from `tokenizer` (EOT pooling by first occurrence, as HF does).
pub fn builtin_config(tokenizer: &ClipTokenizer, canvas: usize, max_items: usize) -> ClipConfig {
    let tf = TransformerConfig {
        width: 128,
        layers: 4,
        heads: 4,
        mlp_dim: 512,
        activation: Activation::QuickGelu,
        layer_norm_eps: 1e-5,
    };
    ClipConfig {
        text: TextConfig {
            transformer: tf.clone(),
            context_length: max_caption_words(max_items) + 2,
            vocab_size: tokenizer.vocab_size(),
            pooling: TextPooling::FirstId(tokenizer.eot_id()),
            causal: true,
            projection_bias: false,
        },
        vision: VisionConfig {
            transformer: tf,
            patch_size: 8,
            image_size: (canvas, canvas),
            pooling: VisionPooling::ClassToken,
        },
        projection_dim: 128,
    }
}

/// `preprocessor_config.json` for mosaic-like inputs: resize the shortest edge to the canvas,
/// centre-crop, scale by 1/255, normalise with mean 0.5 / std 0.5 (so black is −1).
pub fn builtin_preprocess_json(canvas: usize) -> Value {
    json!({
        "image_processor_type": "CLIPImageProcessor",
        "do_resize": true,
        "size": {"shortest_edge": canvas},
        "resample": 3,
        "do_center_crop": true,
        "crop_size": {"height": canvas, "width": canvas},
        "do_rescale": true,
        "rescale_factor": 1.0 / 255.0,
        "do_normalize": true,
        "image_mean": [0.5, 0.5, 0.5],
        "image_std": [0.5, 0.5, 0.5],
        "do_convert_rgb": true,
    })
}

/// Which off-diagonal pairs of a batch the contrastive loss pushes apart.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum NegativePairs {
    /// Every pair whose caption differs in wording: "a coat" and "a jacket" under two coats
    /// are contrasted (only word-for-word equal captions are left out).
    #[default]
    DifferentCaption,
    /// Only pairs whose caption is false of the image: the same items in the same counts
    /// (any synonyms or prefix) with the caption's relations holding are left out
    /// (`caption_fits` of [`crate::data::caption`]).
    FalseCaption,
}

/// Batch `step` holds mosaics `step·B .. step·B + B` of the generator (so a seed fixes every
/// batch, in any order). Pixels go through the preprocessing's scaling and normalisation
/// exactly as [`crate::io::preprocess`] does for a decoded canvas-sized image; captions are
/// cut to the longest one of the batch (exact under the causal mask).
pub struct MosaicBatches {
    /// Source of the mosaics; its seed fixes every batch.
    pub generator: MosaicGenerator,
    /// Turns captions into ids; a caption longer than its context length is an error.
    pub tokenizer: ClipTokenizer,
    /// Image–caption pairs per batch (B).
    pub batch_size: usize,
    /// Pixel scaling and per-channel normalisation applied to the mosaics (resizing and
    /// cropping are not: mosaics are already canvas-sized).
    pub preprocess: PreprocessConfig,
    /// Which off-diagonal pairs are negatives (sets [`Batch::excluded`]).
    pub negatives: NegativePairs,
}

/// `[B, B]` mask of the pairs (image i, caption j ≠ i) where caption j is true of image i.
fn true_caption_mask(mosaics: &[Mosaic]) -> Result<Option<Tensor>> {
    let items: Vec<Vec<(u8, [u32; 4])>> = mosaics
        .iter()
        .map(|m| m.items.iter().map(|it| (it.class, it.bbox)).collect())
        .collect();
    excluded_pairs(mosaics.len(), &Device::Cpu, |i, j| {
        caption_fits(&mosaics[j].phrases, &mosaics[j].relations, &items[i])
    })
}

impl Batches for MosaicBatches {
    fn batch(&mut self, step: u64) -> Result<Batch> {
        let b = self.batch_size;
        if b == 0 {
            return Err(Error::InvalidArgument(
                "batch size must be at least 1".into(),
            ));
        }
        let side = self.generator.config().canvas;
        let n = side * side;
        let pp = &self.preprocess;
        let mut pixels = vec![0f32; b * 3 * n];
        let mut rows = Vec::with_capacity(b);
        let mut mosaics = Vec::with_capacity(b);
        for i in 0..b {
            let m = self.generator.mosaic(step * b as u64 + i as u64);
            for ch in 0..3 {
                let out = &mut pixels[(i * 3 + ch) * n..(i * 3 + ch + 1) * n];
                for (o, &p) in out.iter_mut().zip(&m.pixels) {
                    let x = match pp.scaling {
                        PixelScaling::MulF64(f) => (p as f64 * f) as f32,
                        PixelScaling::DivF32(d) => p as f32 / d,
                        PixelScaling::None => p as f32,
                    };
                    *o = (x - pp.mean[ch]) / pp.std[ch];
                }
            }
            let enc = self.tokenizer.encode(&m.caption, false).map_err(|e| {
                Error::InvalidArgument(format!("mosaic {}: caption {:?}: {e}", m.index, m.caption))
            })?;
            rows.push(enc);
            mosaics.push(m);
        }
        let s = rows.iter().map(|e| e.len).max().unwrap_or(1);
        let ids: Vec<u32> = rows
            .iter()
            .flat_map(|e| e.ids[..s].iter().copied())
            .collect();
        let pool = rows.iter().map(|e| e.len - 1).collect();
        let ids = Tensor::from_vec(ids, (b, s), &Device::Cpu)?;
        let excluded = match self.negatives {
            NegativePairs::DifferentCaption => duplicate_caption_mask(&ids)?,
            NegativePairs::FalseCaption => true_caption_mask(&mosaics)?,
        };
        Ok(Batch {
            pixels: Tensor::from_vec(pixels, (b, 3, side, side), &Device::Cpu)?,
            ids,
            pool,
            excluded,
        })
    }
}

/// The built-in word-level tokenizer ([`crate::data::word_level_tokenizer_json`] over
/// [`crate::data::vocabulary`]) bound to `context_length`, and its tokenizer.json text.
/// `ClipTokenizer` reads files only, so the JSON passes through a uniquely named temporary file.
pub fn builtin_tokenizer(context_length: usize) -> Result<(ClipTokenizer, String)> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let json = crate::data::word_level_tokenizer_json(&crate::data::vocabulary());
    let path = std::env::temp_dir().join(format!(
        "pairlens-{}-{}-tokenizer.json",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::write(&path, &json).map_err(|e| Error::io(&path, e))?;
    let tok = ClipTokenizer::from_file(
        &path,
        crate::io::tokenizer::TextCleaning::None,
        context_length,
        None,
    );
    let _ = std::fs::remove_file(&path);
    Ok((tok?, json))
}

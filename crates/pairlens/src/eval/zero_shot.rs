//! Zero-shot classification: every test item alone on the model's canvas, scored by cosine
//! against one prompt per class, "a photo of a {noun}" with the grammar's first (canonical)
//! singular noun of the class. A synonym ensemble (mean unit embedding of the prompts for every
//! singular noun the grammar uses) is reported next to it.
//!
//! Where the item goes matters a lot to a model trained on mosaics, where 3 of 4 one-item
//! grids cap items at 32 px (the first built-in model: 68.5 % drawn by the generator, 66 %
//! centred at 28 px, 48.5 % centred at 56 px; the shipped one: 73.9 % and 57.2 % at 56 px),
//! so [`Placement::Generator`], the mosaic generator's own one-item draw, is the reference;
//! [`Placement::Centred`] is a fixed, easy-to-describe alternative.

use std::time::Instant;

use candle_core::Tensor;
use serde::Serialize;

use super::{cosine_matrix, embed_captions, embed_gray_images, outranks};
use crate::data::caption::CLASS_NOUNS;
use crate::data::idx::PIXELS;
use crate::data::mosaic::{resize_box, MosaicConfig};
use crate::data::{vocabulary, FashionMnist, MosaicGenerator, CLASS_KEYS, CLASS_NAMES};
use crate::io::checkpoint::LoadedModel;
use crate::progress::Progress;
use crate::train::loss::l2_normalize;
use crate::{Error, Result};

const CLASSES: usize = 10;

/// "a photo of a {noun}", with "an" before a vowel as the caption grammar writes it.
fn prompt(noun: &str) -> String {
    let article = if noun.starts_with(['a', 'e', 'i', 'o', 'u']) {
        "an"
    } else {
        "a"
    };
    format!("a photo of {article} {noun}")
}

/// One prompt per class (label order) from the class's first singular noun, e.g.
/// "a photo of a t shirt", "a photo of an ankle boot".
pub fn class_prompts() -> Vec<String> {
    CLASS_NOUNS.iter().map(|n| prompt(n[0].0)).collect()
}

/// For each class (label order), a prompt per singular noun the grammar uses for it.
pub fn synonym_prompts() -> Vec<Vec<String>> {
    CLASS_NOUNS
        .iter()
        .map(|ns| ns.iter().map(|(s, _)| prompt(s)).collect())
        .collect()
}

/// Every prompt word must be one the built-in model was trained on; a grammar change that
/// breaks that should fail loudly, not score `<unk>` prompts.
fn check_vocabulary(prompts: &[String]) -> Result<()> {
    let vocab = vocabulary();
    for p in prompts {
        if let Some(w) = p
            .split(' ')
            .find(|w| vocab.binary_search(&w.to_string()).is_err())
        {
            return Err(Error::Caption {
                caption: p.clone(),
                msg: format!("word {w:?} is not in the caption grammar's vocabulary"),
            });
        }
    }
    Ok(())
}

/// Where a lone test item goes on the canvas.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Placement {
    /// Item `i` as the mosaic generator draws a one-item mosaic (grid cell, size, position and
    /// background noise), mosaic `i` of `seed`: see [`place_like_generator`].
    Generator {
        /// Seed of the mosaic generator whose one-item draws are used.
        seed: u64,
    },
    /// Box-resampled to `side` pixels (capped at the canvas), centred on black: see
    /// [`place_single`].
    Centred {
        /// Item side in pixels before capping at the canvas.
        side: usize,
    },
}

impl Placement {
    /// The generator's largest item size, centred (56 px, ×2, on the default 64-px canvas).
    pub fn centred_max(config: &MosaicConfig) -> Self {
        Placement::Centred {
            side: config.max_size,
        }
    }

    /// Canvas of item `index` of `data`.
    pub(crate) fn place(
        &self,
        data: &FashionMnist,
        index: usize,
        config: &MosaicConfig,
    ) -> Result<Vec<u8>> {
        let (image, label) = (&data.images[index], data.labels[index]);
        match *self {
            Placement::Generator { seed } => {
                place_like_generator(image, label, config, seed, index as u64)
            }
            Placement::Centred { side } => Ok(place_single(image, side, config.canvas)),
        }
    }
}

/// The item drawn by the mosaic generator itself: a generator over a one-image dataset with
/// `min_items = max_items = 1` makes mosaic `index` of `seed`, so grid, size, position and
/// noise follow exactly the code (and distribution) of training's one-item mosaics.
pub fn place_like_generator(
    image: &[u8; PIXELS],
    label: u8,
    config: &MosaicConfig,
    seed: u64,
    index: u64,
) -> Result<Vec<u8>> {
    let cfg = MosaicConfig {
        min_items: 1,
        max_items: 1,
        ..config.clone()
    };
    let data = FashionMnist {
        images: vec![*image],
        labels: vec![label],
    };
    Ok(MosaicGenerator::try_new(data, cfg, seed)?
        .mosaic(index)
        .pixels)
}

/// A lone item on a black `canvas × canvas` canvas: box-resampled (the generator's resampling)
/// to `min(side, canvas)` pixels and centred, offset rounded down, no background noise.
pub fn place_single(image: &[u8; PIXELS], side: usize, canvas: usize) -> Vec<u8> {
    let c = canvas;
    let side = side.min(c).max(1);
    let glyph = resize_box(image, side);
    let off = (c - side) / 2;
    let mut out = vec![0u8; c * c];
    for y in 0..side {
        out[(off + y) * c + off..(off + y) * c + off + side]
            .copy_from_slice(&glyph[y * side..(y + 1) * side]);
    }
    out
}

/// Predicted class from one row of class scores, ties against the model: the true `label`
/// only if it beats every other class strictly, else the best other class (NaNs lose).
/// `label` must index `scores`.
pub fn predict(scores: &[f32], label: usize) -> usize {
    let pos = scores[label];
    let beaten = (0..scores.len()).any(|c| c != label && outranks(scores[c], pos));
    if !beaten {
        return label;
    }
    let key = |c: usize| {
        if scores[c].is_nan() {
            f32::NEG_INFINITY
        } else {
            scores[c]
        }
    };
    (0..scores.len())
        .filter(|&c| c != label)
        .fold(None, |best: Option<usize>, c| match best {
            Some(b) if key(b) >= key(c) => Some(b),
            _ => Some(c),
        })
        .unwrap_or(label)
}

/// Accuracy of one class.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ClassAccuracy {
    /// Fashion-MNIST label, 0..10.
    pub label: u8,
    /// The class's short key ([`crate::data::CLASS_KEYS`]).
    pub key: &'static str,
    /// The class's display name.
    pub name: &'static str,
    /// Items of this class.
    pub total: usize,
    /// Of those, items predicted as this class.
    pub correct: usize,
    /// `correct / total` (0 for a class with no items).
    pub accuracy: f64,
}

/// Accuracy over all items and per class, and the confusion matrix.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ZeroShotMetrics {
    /// Number of items scored.
    pub count: usize,
    /// Fraction of items predicted correctly (0 for no items).
    pub accuracy: f64,
    /// Mean of the per-class accuracies over classes that have items.
    pub balanced_accuracy: f64,
    /// One entry per class, label order.
    pub per_class: Vec<ClassAccuracy>,
    /// `confusion[true][predicted]` counts, predictions as [`predict`] makes them.
    pub confusion: Vec<Vec<usize>>,
}

/// Metrics of `scores` (`labels.len() × 10`, row-major, row `i` = item `i`).
pub fn zero_shot_metrics(scores: &[f32], labels: &[u8]) -> Result<ZeroShotMetrics> {
    if scores.len() != labels.len() * CLASSES {
        return Err(Error::InvalidArgument(format!(
            "score matrix has {} entries, expected {} items × {CLASSES} classes",
            scores.len(),
            labels.len()
        )));
    }
    if let Some(l) = labels.iter().find(|&&l| l as usize >= CLASSES) {
        return Err(Error::InvalidArgument(format!(
            "label {l} is not a Fashion-MNIST class"
        )));
    }
    let mut confusion = vec![vec![0usize; CLASSES]; CLASSES];
    for (row, &l) in scores.chunks_exact(CLASSES).zip(labels) {
        confusion[l as usize][predict(row, l as usize)] += 1;
    }
    let per_class: Vec<ClassAccuracy> = (0..CLASSES)
        .map(|c| {
            let total: usize = confusion[c].iter().sum();
            let correct = confusion[c][c];
            ClassAccuracy {
                label: c as u8,
                key: CLASS_KEYS[c],
                name: CLASS_NAMES[c],
                total,
                correct,
                accuracy: if total == 0 {
                    0.0
                } else {
                    correct as f64 / total as f64
                },
            }
        })
        .collect();
    let correct: usize = per_class.iter().map(|c| c.correct).sum();
    let present: Vec<f64> = per_class
        .iter()
        .filter(|c| c.total > 0)
        .map(|c| c.accuracy)
        .collect();
    Ok(ZeroShotMetrics {
        count: labels.len(),
        accuracy: correct as f64 / labels.len().max(1) as f64,
        balanced_accuracy: present.iter().sum::<f64>() / present.len().max(1) as f64,
        per_class,
        confusion,
    })
}

/// Zero-shot results on one split, with timing.
#[derive(Clone, Debug, Serialize)]
pub struct ZeroShotReport {
    /// The class prompts, label order.
    pub prompts: Vec<String>,
    /// Accuracy with the class prompts (flattened into the report's JSON).
    #[serde(flatten)]
    pub metrics: ZeroShotMetrics,
    /// Accuracy when each class is scored by the mean unit embedding of its
    /// [`synonym_prompts`] instead of its single class prompt.
    pub ensemble_accuracy: f64,
    /// 1/10.
    pub chance: f64,
    /// Side of the canvas, and where the items went.
    pub canvas: usize,
    /// Where each item was placed on the canvas.
    pub placement: Placement,
    /// Wall time of embedding the prompts and the items, and scoring.
    pub seconds: f64,
    /// Items per second.
    pub items_per_s: f64,
}

/// Classify every item of `data` (the test split) alone on `config`'s canvas, placed by
/// `placement` and preprocessed like a PNG of it.
pub fn evaluate_zero_shot(
    loaded: &LoadedModel,
    data: &FashionMnist,
    config: &MosaicConfig,
    placement: Placement,
    batch: usize,
    progress: &mut dyn Progress,
) -> Result<ZeroShotReport> {
    if data.is_empty() || data.images.len() != data.labels.len() {
        return Err(Error::InvalidArgument(format!(
            "zero-shot needs a non-empty dataset with one label per image ({} images, {} labels)",
            data.images.len(),
            data.labels.len()
        )));
    }
    config.validate()?;
    let started = Instant::now();
    let prompts = class_prompts();
    let synonyms = synonym_prompts();
    let flat: Vec<String> = synonyms.iter().flatten().cloned().collect();
    check_vocabulary(&prompts)?;
    check_vocabulary(&flat)?;

    let mut quiet = crate::progress::NoProgress;
    let txt = embed_captions(loaded, &prompts, batch, &mut quiet)?;
    let syn = embed_captions(loaded, &flat, batch, &mut quiet)?;
    let mut means = Vec::with_capacity(CLASSES);
    let mut at = 0;
    for s in &synonyms {
        means.push(syn.narrow(0, at, s.len())?.mean_keepdim(0)?);
        at += s.len();
    }
    let ensemble = l2_normalize(&Tensor::cat(&means, 0)?)?;

    let n = data.len();
    progress.start("single items", n as u64);
    let img = embed_gray_images(
        loaded,
        n,
        config.canvas,
        batch,
        |i| placement.place(data, i, config),
        progress,
    )?;
    let metrics = zero_shot_metrics(&cosine_matrix(&img, &txt)?, &data.labels)?;
    let ens = zero_shot_metrics(&cosine_matrix(&img, &ensemble)?, &data.labels)?;
    let seconds = started.elapsed().as_secs_f64();
    Ok(ZeroShotReport {
        prompts,
        metrics,
        ensemble_accuracy: ens.accuracy,
        chance: 1.0 / CLASSES as f64,
        canvas: config.canvas,
        placement,
        seconds,
        items_per_s: n as f64 / seconds.max(1e-9),
    })
}

//! What the server holds: the model, the images (examples pinned, uploads in a byte-bounded
//! LRU), the explanations and the image sides (byte-bounded LRUs keyed by image, caption and
//! settings), and the job queue that computes them.
//!
//! Computing happens on the job queue's blocking threads with no lock held: the locks guard only
//! lookups and inserts, so a user waits for their own computation, never for someone else's.
//! Two identical requests arriving together may both compute; the results are equal and the
//! second insert simply replaces the first.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use candle_core::Tensor;
use pairlens::attribution::SpanHeatmap;
use pairlens::attribution::{Explanation, Settings};
use pairlens::io::image::{decode_bytes_within, DecodedImage};
use pairlens::io::preprocess::Geometry;
use pairlens::io::tokenizer::Encoded;
use pairlens::{Explainer, ImageSide};
use sha2::{Digest, Sha256};

use crate::cache::Lru;
use crate::error::ApiError;
use crate::examples::ExampleFile;
use crate::jobs::{Cancel, Jobs};

/// Limits and sizes, set by `pairlens serve`'s flags.
#[derive(Clone, Debug)]
pub struct Config {
    /// Largest upload body accepted (413 above).
    pub max_upload_bytes: usize,
    /// Bytes of explanations kept (interaction matrices and what queries need).
    pub explanation_bytes: u64,
    /// Largest image accepted, in pixels, checked from the header before decoding (a small file
    /// can claim a huge image).
    pub max_image_pixels: u64,
    /// Bytes of uploaded images kept (served PNG + network input); the oldest go first.
    pub image_store_bytes: u64,
    /// Bytes of image sides (the image tower's half, shared by all captions) kept.
    pub image_side_bytes: u64,
    /// Computations (explanations, uploads) running at once.
    pub workers: usize,
    /// Computations waiting for a worker; more are refused with 503.
    pub queued: usize,
    /// Which requests reach the API: `Host` names and the token, if any.
    pub access: crate::guard::Access,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_upload_bytes: 8 << 20,
            explanation_bytes: 192 << 20,
            max_image_pixels: 40_000_000,
            image_store_bytes: 512 << 20,
            image_side_bytes: 64 << 20,
            workers: 2,
            queued: 8,
            access: Default::default(),
        }
    }
}

/// Most captions in one request, and the longest caption in characters (the tokenizer rejects
/// long ones anyway; this bounds its work).
pub const MAX_CAPTIONS: usize = 8;
pub const MAX_CAPTION_CHARS: usize = 2000;
/// Most path points N.
pub const MAX_STEPS: usize = 200;

/// A registered image: what the page shows and what the model sees.
pub struct StoredImage {
    /// 16 hex digits of the SHA-256 of the file's bytes.
    pub id: String,
    pub width: usize,
    pub height: usize,
    /// Served by `GET /api/images/{id}`: the upload itself if it was a PNG, else re-encoded.
    pub png: Vec<u8>,
    /// Preprocessed network input `[3, H, W]`, exactly as `pairlens explain` makes it.
    pub pixels: Tensor,
    pub geometry: Geometry,
}

pub struct Example {
    pub name: String,
    pub caption: String,
    pub image: String,
}

/// One caption's explanation and what the span and box queries need.
pub struct CachedExplanation {
    pub id: String,
    pub image: String,
    pub caption: String,
    pub explanation: Explanation,
    /// The image's geometry, to map boxes from original pixels to patches.
    pub geometry: Geometry,
    /// Σ of all interactions, as `pairlens explain` reports it.
    pub sum: f32,
    /// Row sums: each token's total interaction.
    pub token_totals: Vec<f32>,
    /// The whole caption's heatmap.
    pub whole: SpanHeatmap,
    /// Time spent computing it (its text side plus the image side, when that was computed for it).
    pub seconds: f64,
}

impl CachedExplanation {
    /// What it holds, as the cache weighs it.
    pub fn bytes(&self) -> usize {
        let floats = self.token_totals.len() + self.whole.patches.len();
        self.explanation.bytes() + floats * 4 + self.caption.len() + std::mem::size_of::<Self>()
    }
}

/// An explanation for a request, and whether it came from the cache.
pub struct Explained {
    pub entry: Arc<CachedExplanation>,
    pub cached: bool,
}

struct Images {
    pinned: std::collections::HashMap<String, Arc<StoredImage>>,
    uploads: Lru<String, Arc<StoredImage>>,
}

pub struct AppState {
    pub explainer: Explainer,
    /// "built-in" or the checkpoint directory, as `/api/info` reports it.
    pub model_name: String,
    pub config: Config,
    pub examples: Vec<Example>,
    pub jobs: Jobs,
    images: Mutex<Images>,
    explanations: Mutex<Lru<String, Arc<CachedExplanation>>>,
    image_sides: Mutex<Lru<String, ImageSide>>,
}

/// 16 hex digits of SHA-256: content-addressed ids, so the same file or request maps to the
/// same id and ids cannot be forged to collide.
fn short_hash(parts: &[&[u8]]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_le_bytes());
        h.update(p);
    }
    h.finalize()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding one of these locks cannot leave the maps inconsistent (each
    // operation is a single insert or lookup), so a poisoned lock is still usable.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl AppState {
    /// Register the examples (decoded and preprocessed now, so a bad file fails at start).
    pub fn new(
        explainer: Explainer,
        model_name: String,
        examples: Vec<ExampleFile>,
        config: Config,
    ) -> anyhow::Result<Self> {
        let mut state = AppState {
            explainer,
            model_name,
            images: Mutex::new(Images {
                pinned: Default::default(),
                uploads: Lru::new(config.image_store_bytes),
            }),
            explanations: Mutex::new(Lru::new(config.explanation_bytes)),
            image_sides: Mutex::new(Lru::new(config.image_side_bytes)),
            jobs: Jobs::new(config.workers, config.queued),
            config,
            examples: Vec::new(),
        };
        for ex in examples {
            let img = state
                .prepare_image(&ex.bytes, Path::new(&ex.name))
                .map_err(|e| anyhow::anyhow!("example {}: {}", ex.name, e.message))?;
            let id = img.id.clone();
            lock(&state.images).pinned.insert(id.clone(), Arc::new(img));
            state.examples.push(Example {
                name: ex.name,
                caption: ex.caption,
                image: id,
            });
        }
        Ok(state)
    }

    /// Decode as `pairlens explain` does (the size the header claims checked first), preprocess,
    /// and make the PNG the page shows. Slow for big images: call it off the async threads.
    pub fn prepare_image(&self, bytes: &[u8], name: &Path) -> Result<StoredImage, ApiError> {
        if bytes.is_empty() {
            return Err(ApiError::bad_request(
                "empty upload: send the image file's bytes as the request body",
            ));
        }
        let what = name.display();
        let decoded = decode_bytes_within(bytes, name, self.config.max_image_pixels).map_err(
            |e| match e {
                pairlens::Error::Image { msg, .. } => {
                    ApiError::unsupported(format!("{what}: not a decodable image ({msg})"))
                }
                other => ApiError::from(other),
            },
        )?;
        let pre = self.explainer.preprocess(&decoded).map_err(|e| {
            ApiError::bad_request(format!("{what}: cannot preprocess the image: {e}"))
        })?;
        let png = if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
            bytes.to_vec()
        } else {
            encode_png(&decoded)?
        };
        Ok(StoredImage {
            id: short_hash(&[bytes]),
            width: decoded.width,
            height: decoded.height,
            png,
            pixels: pre.pixels,
            geometry: pre.geometry,
        })
    }

    /// Keep an uploaded image (the oldest uploads go when the store is full); the same file
    /// uploaded again keeps its id.
    pub fn add_upload(&self, img: StoredImage) -> Arc<StoredImage> {
        let mut images = lock(&self.images);
        if let Some(existing) = images.pinned.get(&img.id) {
            return existing.clone();
        }
        let weight = (img.png.len() + img.pixels.elem_count() * 4) as u64;
        let img = Arc::new(img);
        images.uploads.insert(img.id.clone(), img.clone(), weight);
        img
    }

    pub fn image(&self, id: &str) -> Option<Arc<StoredImage>> {
        let mut images = lock(&self.images);
        match images.pinned.get(id) {
            Some(img) => Some(img.clone()),
            None => images.uploads.get(&id.to_string()),
        }
    }

    pub fn explanation(&self, id: &str) -> Option<Arc<CachedExplanation>> {
        lock(&self.explanations).get(&id.to_string())
    }

    /// The model's defaults with the request's overrides, checked.
    pub fn settings(
        &self,
        text_layer: Option<usize>,
        image_layer: Option<usize>,
        steps: Option<usize>,
        mode: Option<&str>,
    ) -> Result<Settings, ApiError> {
        let mut s = self.explainer.default_settings();
        s.text_layer = text_layer.unwrap_or(s.text_layer);
        s.image_layer = image_layer.unwrap_or(s.image_layer);
        s.steps = steps.unwrap_or(s.steps);
        if let Some(m) = mode {
            s.mode = m
                .parse()
                .map_err(|e: pairlens::Error| ApiError::bad_request(e.to_string()))?;
        }
        if s.steps > MAX_STEPS {
            return Err(ApiError::bad_request(format!(
                "steps {} is too many: at most {MAX_STEPS}",
                s.steps
            )));
        }
        self.explainer.check_settings(&s)?;
        Ok(s)
    }

    /// One explanation per caption, from the cache where possible; the rest computed together
    /// (sharing the image side) on a blocking thread.
    pub async fn explain(
        self: &Arc<Self>,
        image: Arc<StoredImage>,
        captions: &[String],
        settings: Settings,
    ) -> Result<Vec<Explained>, ApiError> {
        let encoded = captions
            .iter()
            .map(|c| self.explainer.encode(c, false))
            .collect::<pairlens::Result<Vec<Encoded>>>()?;
        let ids: Vec<String> = captions
            .iter()
            .map(|c| explanation_id(&image.id, c, &settings))
            .collect();
        let mut found: Vec<Option<Explained>> = {
            let mut cache = lock(&self.explanations);
            ids.iter()
                .map(|id| {
                    cache.get(id).map(|entry| Explained {
                        entry,
                        cached: true,
                    })
                })
                .collect()
        };
        // Each missing id once (a caption may repeat within a request).
        let mut missing: Vec<(String, String, Encoded)> = Vec::new();
        for (i, id) in ids.iter().enumerate() {
            if found[i].is_none() && !missing.iter().any(|(j, _, _)| j == id) {
                missing.push((id.clone(), captions[i].clone(), encoded[i].clone()));
            }
        }
        if !missing.is_empty() {
            let state = self.clone();
            let image = image.clone();
            let computed = self
                .jobs
                .run(move |cancel| state.compute(&image, missing, &settings, cancel))
                .await?;
            let mut cache = lock(&self.explanations);
            for entry in &computed {
                cache.insert(entry.id.clone(), entry.clone(), entry.bytes() as u64);
            }
            drop(cache);
            for (i, id) in ids.iter().enumerate() {
                if found[i].is_none() {
                    let entry = computed
                        .iter()
                        .find(|e| &e.id == id)
                        .expect("every missing id computed")
                        .clone();
                    found[i] = Some(Explained {
                        entry,
                        cached: false,
                    });
                }
            }
        }
        Ok(found
            .into_iter()
            .map(|f| f.expect("filled above"))
            .collect())
    }

    /// What `pairlens explain` computes: the image side once (cached across requests), then
    /// each caption against it.
    fn compute(
        &self,
        image: &StoredImage,
        missing: Vec<(String, String, Encoded)>,
        settings: &Settings,
        cancel: &mut Cancel,
    ) -> Result<Vec<Arc<CachedExplanation>>, ApiError> {
        let ex = &self.explainer;
        let side_key = format!(
            "{}/{}/{}/{}",
            image.id, settings.image_layer, settings.steps, settings.mode
        );
        let cached_side = lock(&self.image_sides).get(&side_key);
        let (side, image_s) = match cached_side {
            Some(side) => (side.with_settings(settings)?, 0.0),
            None => {
                let side = ex.image_with_progress(&image.pixels, settings, cancel)?;
                lock(&self.image_sides).insert(side_key, side.clone(), side.bytes() as u64);
                let seconds = side.seconds();
                (side, seconds)
            }
        };
        missing
            .into_iter()
            .map(|(id, caption, encoded)| {
                let t = Instant::now();
                let explanation = ex
                    .explain_encoded(&side, std::slice::from_ref(&encoded), cancel)?
                    .remove(0);
                let token_totals = explanation
                    .interactions
                    .sum(1)
                    .and_then(|t| t.to_vec1::<f32>())
                    .map_err(pairlens::Error::from)?;
                let whole = explanation.span_heatmap(0, explanation.tokens.len())?;
                let sum = explanation.total()?;
                Ok(Arc::new(CachedExplanation {
                    id,
                    image: image.id.clone(),
                    caption,
                    explanation,
                    geometry: image.geometry,
                    sum,
                    token_totals,
                    whole,
                    seconds: image_s + t.elapsed().as_secs_f64(),
                }))
            })
            .collect()
    }
}

/// The cache key: everything the numbers depend on.
pub fn explanation_id(image: &str, caption: &str, s: &Settings) -> String {
    let settings = format!(
        "{}/{}/{}/{}/{}",
        s.text_layer, s.image_layer, s.steps, s.mode, s.text_reference_len
    );
    short_hash(&[image.as_bytes(), caption.as_bytes(), settings.as_bytes()])
}

/// A PNG of the decoded pixels (for JPEG and WebP uploads), fast compression.
fn encode_png(d: &DecodedImage) -> Result<Vec<u8>, ApiError> {
    use image::codecs::png::{CompressionType, FilterType, PngEncoder};
    use image::{ExtendedColorType, ImageEncoder};
    use pairlens::io::image::Mode as M;
    let color = match d.mode {
        M::L => ExtendedColorType::L8,
        M::LA => ExtendedColorType::La8,
        M::Rgb => ExtendedColorType::Rgb8,
        M::Rgba => ExtendedColorType::Rgba8,
    };
    let mut out = Vec::new();
    PngEncoder::new_with_quality(&mut out, CompressionType::Fast, FilterType::Adaptive)
        .write_image(&d.data, d.width as u32, d.height as u32, color)
        .map_err(|e| ApiError::internal(format!("encoding the image as PNG: {e}")))?;
    Ok(out)
}

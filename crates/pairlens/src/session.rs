//! The [`Explainer`]: the one way from a model source to explanations. It opens a checkpoint on
//! a device, owns the towers, the tokenizer and the image preprocessing, and decides how an
//! explanation is computed, so that every front end (the CLI, the viewer, the Python package)
//! is a few calls:
//!
//! ```
//! use pairlens::{Device, Explainer, ModelSource, NoProgress};
//!
//! let ex = Explainer::open(ModelSource::Builtin, &Device::Cpu)?;
//! let image = pairlens::decode_file("../../examples/mosaics/00001.png".as_ref())?;
//!
//! // One call: preprocessing, the image side, every caption.
//! let captions = ["a sneaker beside a bag".to_string(), "a dress".to_string()];
//! let settings = ex.default_settings();
//! let out = ex.explain_image(&image, &captions, false, &settings, &mut NoProgress)?;
//! assert_eq!(out.explanations.len(), 2);
//!
//! // More captions against the same image side, at no image cost.
//! let more = ex.explain(&out.image, &["a pair of trousers"])?;
//! println!("score {}", more[0].score);
//! # Ok::<(), pairlens::Error>(())
//! ```
//!
//! What it hides: the tokenizer builds on a thread of its own from [`Explainer::open`] on (a
//! CLIP vocabulary takes tens of milliseconds), the text side runs beside a quick image side in
//! [`Explainer::explain_image`], a split at a tower's last block takes the closed form, and the
//! weights are read lazily and checked through the results: a NaN or infinite explanation
//! rereads them to name the bad tensor.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::Instant;

use candle_core::{Device, Tensor};

use crate::attribution::{image_side, text_side, Explanation, TowerSide};
use crate::attribution::{ImageReference, Settings};
use crate::io::caption_tokenizer::CaptionTokenizer;
use crate::io::checkpoint::{Checkpoint, CheckpointFormat, ValueCheck};
use crate::io::image::DecodedImage;
use crate::io::preprocess::{preprocess, PreprocessConfig, Preprocessed};
use crate::io::tokenizer::Encoded;
use crate::model::ClipModel;
use crate::progress::{NoProgress, Progress};
use crate::{builtin, Error, Result};

/// Where a model comes from. Nothing is ever downloaded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ModelSource {
    /// The small CLIP trained on Fashion-MNIST mosaics that ships inside pairlens.
    Builtin,
    /// A Hugging Face `CLIPModel` or OpenCLIP hub directory.
    Dir(PathBuf),
}

impl ModelSource {
    /// A directory, or the built-in model for `None`.
    pub fn from_option(dir: Option<&Path>) -> Self {
        match dir {
            Some(d) => ModelSource::Dir(d.to_path_buf()),
            None => ModelSource::Builtin,
        }
    }
}

/// `model DIR`, or the built-in model's name: how messages refer to a source.
impl std::fmt::Display for ModelSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ModelSource::Builtin => f.write_str(builtin::NAME),
            ModelSource::Dir(d) => write!(f, "model {}", d.display()),
        }
    }
}

/// The image tower's half of explanations (V): computed once per image and settings, shared by
/// every caption explained against it. Cheap to clone.
#[derive(Clone, Debug)]
pub struct ImageSide {
    side: Arc<TowerSide>,
    settings: Settings,
    seconds: f64,
}

impl ImageSide {
    /// The settings it was computed with; [`Explainer::explain`] uses them for the text side.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Seconds its computation took.
    pub fn seconds(&self) -> f64 {
        self.seconds
    }

    /// The same image side under other settings that share its image half (image layer, path
    /// points, mode, image reference): text layers and references may differ.
    pub fn with_settings(&self, settings: &Settings) -> Result<ImageSide> {
        let (a, b) = (&self.settings, settings);
        let same_reference = matches!(
            (&a.image_reference, &b.image_reference),
            (ImageReference::Zeros, ImageReference::Zeros)
        );
        if a.image_layer != b.image_layer || a.steps != b.steps || a.mode != b.mode {
            return Err(Error::InvalidArgument(format!(
                "this image side was computed at image layer {}, N = {}, mode {}; the settings ask \
                 for image layer {}, N = {}, mode {}",
                a.image_layer, a.steps, a.mode, b.image_layer, b.steps, b.mode
            )));
        }
        if !same_reference {
            return Err(Error::InvalidArgument(
                "an image side computed against a custom image reference cannot be reused".into(),
            ));
        }
        Ok(ImageSide {
            settings: settings.clone(),
            ..self.clone()
        })
    }

    /// Bytes of tensor data it holds, for caches bounded in memory.
    pub fn bytes(&self) -> usize {
        let s = &self.side;
        [&s.contributions, &s.embedding, &s.path_end, &s.reference]
            .iter()
            .map(|t| t.elem_count() * t.dtype().size_in_bytes())
            .sum()
    }
}

/// What [`Explainer::explain_image`] returns.
#[derive(Debug)]
pub struct Explained {
    /// The network input and the geometry that maps original pixels to it (for box queries
    /// and pictures).
    pub input: Preprocessed,
    /// The image side, reusable for more captions.
    pub image: ImageSide,
    /// One explanation per caption, in order.
    pub explanations: Vec<Explanation>,
    /// The captions as the tokenizer encoded them.
    pub encoded: Vec<Encoded>,
    /// Seconds spent on the text sides (beside the image side when that was quick).
    pub text_seconds: f64,
}

/// Embeddings of one image and one caption, unnormalised, and their cosine.
#[derive(Clone, Debug)]
pub struct Embeddings {
    /// The image embedding `[projection_dim]`.
    pub image: Vec<f32>,
    /// The text embedding `[projection_dim]`.
    pub text: Vec<f32>,
    /// cos(text, image).
    pub score: f32,
    /// The model's own logit, `exp(logit_scale)·score (+ logit_bias)`.
    pub logit: f32,
    /// SigLIP's match probability `sigmoid(logit)` (a model with a logit bias, trained with the
    /// sigmoid loss); CLIP's logits mean something only against other captions (softmax).
    pub probability: Option<f32>,
}

type Building = JoinHandle<Result<CaptionTokenizer>>;

/// A model opened for explaining: towers on a device, tokenizer, preprocessing. Shareable
/// across threads (`&Explainer` is all every method needs).
pub struct Explainer {
    source: ModelSource,
    checkpoint: Arc<Checkpoint>,
    model: ClipModel,
    preprocess: PreprocessConfig,
    device: Device,
    tokenizer: OnceLock<CaptionTokenizer>,
    building: Mutex<Option<Building>>,
}

impl std::fmt::Debug for Explainer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Explainer")
            .field("source", &self.source)
            .field("device", &self.device)
            .finish_non_exhaustive()
    }
}

impl Explainer {
    /// Opens `source` with its weights on `device`. Returns once the configuration, the image
    /// preprocessing and the weights (memory-mapped) are read; the tokenizer goes on building
    /// on its own thread, and a problem with it is reported by the first call that needs it
    /// ([`Self::tokenizer`] waits for it).
    pub fn open(source: ModelSource, device: &Device) -> Result<Explainer> {
        let checkpoint = Arc::new(match &source {
            ModelSource::Builtin => builtin::checkpoint()?,
            ModelSource::Dir(dir) => Checkpoint::open(dir)?,
        });
        let building = {
            let checkpoint = checkpoint.clone();
            std::thread::spawn(move || {
                let tokenizer = checkpoint.tokenizer()?;
                checkpoint.check_tokenizer(&tokenizer)?;
                Ok(tokenizer)
            })
        };
        let model = checkpoint.model(device, ValueCheck::Deferred)?;
        let preprocess = checkpoint.preprocess()?;
        Ok(Explainer {
            source,
            checkpoint,
            model,
            preprocess,
            device: device.clone(),
            tokenizer: OnceLock::new(),
            building: Mutex::new(Some(building)),
        })
    }

    /// Where the model came from.
    pub fn source(&self) -> &ModelSource {
        &self.source
    }

    /// The checkpoint directory (for the built-in model, its copy in the cache).
    pub fn dir(&self) -> &Path {
        self.checkpoint.dir()
    }

    /// The checkpoint's layout.
    pub fn format(&self) -> CheckpointFormat {
        self.checkpoint.format()
    }

    /// The device the towers compute on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The towers.
    pub fn model(&self) -> &ClipModel {
        &self.model
    }

    /// The image preprocessing of the checkpoint.
    pub fn preprocess_config(&self) -> &PreprocessConfig {
        &self.preprocess
    }

    /// The tokenizer, once built (waits for [`Self::open`]'s thread the first time).
    pub fn tokenizer(&self) -> Result<&CaptionTokenizer> {
        if let Some(t) = self.tokenizer.get() {
            return Ok(t);
        }
        let mut building = self.building.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(t) = self.tokenizer.get() {
            return Ok(t); // built by another caller while this one waited for the lock
        }
        // A failed build leaves no thread behind; building again gives the same error.
        let built = match building.take() {
            Some(job) => job.join().unwrap_or_else(|e| std::panic::resume_unwind(e)),
            None => self.checkpoint.tokenizer().and_then(|t| {
                self.checkpoint.check_tokenizer(&t)?;
                Ok(t)
            }),
        }?;
        Ok(self.tokenizer.get_or_init(|| built))
    }

    /// Reads every weight and fails naming the first NaN or infinite value, if any. Explaining
    /// checks results instead; long runs call this first to fail before any work.
    pub fn check_weights(&self) -> Result<()> {
        self.checkpoint.find_bad_value()
    }

    /// The model's default settings: the last block of each tower (exclip's default), N = 10.
    pub fn default_settings(&self) -> Settings {
        Settings::for_model(&self.model)
    }

    /// Rejects settings the model cannot honour, naming the valid range.
    pub fn check_settings(&self, settings: &Settings) -> Result<()> {
        settings.validate(&self.model)
    }

    /// A caption's ids as the model's tokenizer makes them; too long is an error unless
    /// `truncate`.
    pub fn encode(&self, caption: &str, truncate: bool) -> Result<Encoded> {
        self.tokenizer()?.encode(caption, truncate)
    }

    /// The words of `caption` the model's vocabulary does not hold (each becomes `<unk>`), in
    /// order, each once; see [`CaptionTokenizer::unknown_words`].
    pub fn unknown_words(&self, caption: &str) -> Result<Vec<String>> {
        self.tokenizer()?.unknown_words(caption)
    }

    /// The network input of a decoded image, exactly as the checkpoint's own processor makes
    /// it, with the geometry that maps original pixels to it.
    pub fn preprocess(&self, image: &DecodedImage) -> Result<Preprocessed> {
        preprocess(image, &self.preprocess)
    }

    /// The image side of normalised `pixels` `[3, H, W]` (from [`Self::preprocess`]).
    pub fn image(&self, pixels: &Tensor, settings: &Settings) -> Result<ImageSide> {
        self.image_with_progress(pixels, settings, &mut NoProgress)
    }

    /// [`Self::image`], reporting progress.
    pub fn image_with_progress(
        &self,
        pixels: &Tensor,
        settings: &Settings,
        progress: &mut dyn Progress,
    ) -> Result<ImageSide> {
        self.check_settings(settings)?;
        let started = Instant::now();
        let pixels = pixels.to_device(&self.device)?;
        let side = self.named(image_side(&self.model, &pixels, settings, progress))?;
        Ok(ImageSide {
            side: Arc::new(side),
            settings: settings.clone(),
            seconds: started.elapsed().as_secs_f64(),
        })
    }

    /// One explanation per caption against `image`, with the image side's settings.
    pub fn explain(&self, image: &ImageSide, captions: &[&str]) -> Result<Vec<Explanation>> {
        let encoded = captions
            .iter()
            .map(|c| self.encode(c, false))
            .collect::<Result<Vec<_>>>()?;
        self.explain_encoded(image, &encoded, &mut NoProgress)
    }

    /// [`Self::explain`] for captions already encoded (ids of this model's tokenizer).
    pub fn explain_encoded(
        &self,
        image: &ImageSide,
        captions: &[Encoded],
        progress: &mut dyn Progress,
    ) -> Result<Vec<Explanation>> {
        let texts = self.text_sides(captions, &image.settings, progress)?;
        self.combine(image, captions, &texts)
    }

    /// Everything one image and its captions need, the fastest way: with a split at the image
    /// tower's last block (a fraction of a second) the text sides run beside the preprocessing
    /// and the image side; below it the captions are encoded first, so that a caption the
    /// tokenizer rejects is reported before seconds of work.
    pub fn explain_image(
        &self,
        image: &DecodedImage,
        captions: &[String],
        truncate: bool,
        settings: &Settings,
        progress: &mut dyn Progress,
    ) -> Result<Explained> {
        self.check_settings(settings)?;
        let encode = || {
            captions
                .iter()
                .map(|c| self.encode(c, truncate))
                .collect::<Result<Vec<_>>>()
        };
        let texts = |encoded: &[Encoded], progress: &mut dyn Progress| {
            let started = Instant::now();
            let sides = self.text_sides(encoded, settings, progress)?;
            Ok::<_, Error>((sides, started.elapsed().as_secs_f64()))
        };
        let quick = settings.image_layer == self.model.vision.config.last_split();
        let image_part = |progress: &mut dyn Progress| {
            let input = self.preprocess(image)?;
            let side = self.image_with_progress(&input.pixels, settings, progress)?;
            Ok::<_, Error>((input, side))
        };
        let ((input, side), encoded, (sides, text_seconds)) = if quick {
            std::thread::scope(|scope| {
                let text = scope.spawn(|| {
                    let encoded = encode()?;
                    let sides = texts(&encoded, &mut NoProgress)?;
                    Ok::<_, Error>((encoded, sides))
                });
                let image = image_part(progress);
                let (encoded, sides) = text
                    .join()
                    .unwrap_or_else(|e| std::panic::resume_unwind(e))?;
                Ok::<_, Error>((image?, encoded, sides))
            })?
        } else {
            let encoded = encode()?;
            let image = image_part(progress)?;
            let sides = texts(&encoded, progress)?;
            (image, encoded, sides)
        };
        let explanations = self.combine(&side, &encoded, &sides)?;
        Ok(Explained {
            input,
            image: side,
            explanations,
            encoded,
            text_seconds,
        })
    }

    /// Embeddings of normalised `pixels` `[3, H, W]` and a caption, and their cosine.
    pub fn embed(&self, pixels: &Tensor, caption: &Encoded) -> Result<Embeddings> {
        let pixels = pixels.to_device(&self.device)?;
        let image = self.named(self.model.embed_image(&pixels).and_then(finite))?;
        let text = self.named(self.model.embed_text(&caption.ids).and_then(finite))?;
        let score = crate::attribution::cosine(&text, &image)?;
        let logit = self.model.logit(score);
        let probability = self.model.logit_bias.map(|_| 1.0 / (1.0 + (-logit).exp()));
        Ok(Embeddings {
            image: image.to_vec1()?,
            text: text.to_vec1()?,
            score,
            logit,
            probability,
        })
    }

    fn text_sides(
        &self,
        captions: &[Encoded],
        settings: &Settings,
        progress: &mut dyn Progress,
    ) -> Result<Vec<TowerSide>> {
        self.check_settings(settings)?;
        let reference = self.tokenizer()?.reference(settings.text_reference_len);
        let sides = captions
            .iter()
            .map(|caption| text_side(&self.model, caption, &reference, settings, progress))
            .collect();
        self.named(sides)
    }

    fn combine(
        &self,
        image: &ImageSide,
        captions: &[Encoded],
        texts: &[TowerSide],
    ) -> Result<Vec<Explanation>> {
        let tokenizer = self.tokenizer()?;
        let reference = tokenizer.reference(image.settings.text_reference_len);
        let explanations = captions
            .iter()
            .zip(texts)
            .map(|(caption, text)| {
                Explanation::combine(
                    text,
                    &image.side,
                    tokenizer.row_tokens(caption),
                    &reference.ids,
                    &self.model,
                    &image.settings,
                )
            })
            .collect();
        self.named(explanations)
    }

    /// A non-finite result from weights read unchecked: reads them again, checked, so that the
    /// error names the bad tensor when there is one.
    fn named<T>(&self, result: Result<T>) -> Result<T> {
        match result {
            Err(Error::NonFinite(msg)) => {
                self.checkpoint.find_bad_value()?;
                Err(Error::NonFinite(msg))
            }
            r => r,
        }
    }
}

/// `t` if every value is finite, else [`Error::NonFinite`].
fn finite(t: Tensor) -> Result<Tensor> {
    let values: Vec<f32> = t
        .flatten_all()?
        .to_dtype(candle_core::DType::F32)?
        .to_vec1()?;
    if values.iter().all(|v| v.is_finite()) {
        Ok(t)
    } else {
        Err(Error::NonFinite(
            "the embedding contains NaN or infinite values (the model's weights or input may be \
             broken)"
                .into(),
        ))
    }
}

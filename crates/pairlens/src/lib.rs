//! pairlens: second-order feature-pair attributions for CLIP-style dual encoders (Möller et
//! al., TMLR'25): why a model finds an image and a caption similar, as a token × patch
//! interaction matrix whose entries add up, with three reference terms and a measured residual,
//! to the similarity score.
//!
//! Start at [`Explainer`]: it opens a model (a Hugging Face or OpenCLIP directory, or the
//! built-in one) on a device and computes explanations, embeddings and everything in between.
//!
//! ```
//! use pairlens::{Device, Explainer, ModelSource};
//!
//! let ex = Explainer::open(ModelSource::Builtin, &Device::Cpu)?;
//! let image = pairlens::decode_file("../../examples/mosaics/00000.png".as_ref())?;
//! let input = ex.preprocess(&image)?;
//! let side = ex.image(&input.pixels, &ex.default_settings())?;
//! let e = ex.explain(&side, &["a running shoe next to a boot"])?.remove(0);
//! // Σ A + reference terms + residual = the cosine score.
//! let r = e.reference_terms;
//! let total = e.total()? + r.text_vs_image_reference + r.text_reference_vs_image
//!     - r.reference_vs_reference + e.residual;
//! assert!((total - e.score).abs() < 1e-5);
//! // Which patches the words "running shoe" (tokens 2..4) interact with.
//! let heatmap = e.span_heatmap(2, 4)?;
//! assert_eq!(heatmap.patches.len(), e.grid.0 * e.grid.1);
//! # Ok::<(), pairlens::Error>(())
//! ```
//!
//! Layers, each using only those below it:
//! - [`io`]: files to inputs. Checkpoint directories (one parameter-name table per format),
//!   tokenizers, image decoding, preprocessing bit-exact with each family's processor.
//! - [`model`]: the CLIP towers op by op, each op's forward, tangent and reverse rules side by
//!   side; CPU kernels chosen by device.
//! - [`attribution`]: one tower's contraction (batched JVPs, or the closed form at the last
//!   block), the combination into interactions, reference terms and residual, span and box
//!   queries, export. Pure functions of tensors and settings.
//! - [`Explainer`] (the session): owns model, tokenizer and preprocessing, validates settings,
//!   overlaps work, names a bad weight when a result is not finite.
//! - Analyses: [`grounding`] (pointing game, box mass, the first-order baselines), [`eval`]
//!   (retrieval, zero-shot), [`train`] (the built-in model's trainer, fine-tuning), [`data`]
//!   (Fashion-MNIST mosaics), [`render`] (heatmaps, token strips, the HTML report).
//! - [`builtin`]: the model compiled into the binary.

#![warn(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn)]

pub mod attribution;
pub mod builtin;
pub mod data;
mod device;
mod error;
pub mod eval;
pub mod grounding;
pub mod io;
pub mod model;
mod progress;
pub mod render;
mod session;
pub mod train;

pub use attribution::{
    ExclipTerms, Explanation, ImageReference, Mode, ReferenceTerms, Settings, SpanHeatmap,
};
pub use candle_core::Device;
pub use device::parse_device;
pub use error::{Error, Result};
pub use io::image::{decode_bytes, decode_file, DecodedImage};
pub use io::preprocess::{Geometry, Preprocessed};
pub use io::tokenizer::Encoded;
pub use progress::{NoProgress, Progress};
pub use session::{Embeddings, Explained, Explainer, ImageSide, ModelSource};

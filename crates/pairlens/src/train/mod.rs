//! Contrastive (CLIP) training of the towers.
//!
//! Every parameter is a candle `Var` ([`Param`], named as in the HF checkpoint). For a step,
//! [`Trainer::gradients`] cuts the batch into one shard per core and runs the towers' taped
//! forward on each ([`crate::model::VisionTower::forward_taped`],
//! [`crate::model::TextTower::forward_taped`]). Only the loss head goes through candle's
//! autograd: the symmetric InfoNCE loss over all embeddings ([`contrastive_loss_masked`]) is
//! differentiated w.r.t. the embeddings and `logit_scale`. The parameter gradients come from
//! the towers' hand-written reverse pass ([`crate::model::VisionTower::vjp`],
//! [`crate::model::TextTower::vjp`], built on the `*_vjp` rules of [`crate::model::ops`]).
//! [`Trainer::step`] then clips the global gradient norm, applies AdamW ([`AdamWConfig`]) to
//! the Vars in place and clamps `logit_scale` to `[0, ln 100]`.
//! [`Trainer::autograd_gradients`] differentiates the whole graph with candle's autograd
//! instead; it is slower and serves as the independent check of the hand-written pass.
//!
//! The data source is pluggable through [`Batches`]; checkpoints are Hugging Face directories
//! ([`crate::io::checkpoint::save_hf`]).

mod init;
pub mod loss;
mod mosaics;
mod optimizer;
mod schedule;
mod synthetic;
mod trainer;

pub use init::init_weights;
pub use loss::{
    clip_loss, contrastive_loss, contrastive_loss_masked, duplicate_caption_mask, Batch, Batches,
};
pub use mosaics::{
    builtin_config, builtin_preprocess_json, builtin_tokenizer, MosaicBatches, NegativePairs,
};
pub use optimizer::{AdamWConfig, Param};
pub use schedule::Schedule;
pub use synthetic::SyntheticBatches;
pub use trainer::{CheckpointPlan, Evaluation, Observer, StepStats, TrainConfig, Trainer};

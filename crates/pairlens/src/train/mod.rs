//! Contrastive (CLIP) training of the towers on candle's reverse mode.
//!
//! Every parameter is a candle `Var`; the towers run their ordinary forward on the Vars'
//! tensors (the forward uses only differentiable ops), the symmetric InfoNCE loss is
//! back-propagated and AdamW updates the Vars in place. The data source is pluggable through
//! [`Batches`]; checkpoints are Hugging Face directories ([`crate::io::checkpoint::save_hf`]).

pub mod init;
pub mod loss;
pub mod mosaics;
pub mod optimizer;
pub mod schedule;
pub mod synthetic;
pub mod trainer;

pub use init::init_weights;
pub use loss::{
    clip_loss, contrastive_loss, contrastive_loss_masked, duplicate_caption_mask, embed,
    retrieval_accuracy, Batch, Batches,
};
pub use mosaics::{
    builtin_config, builtin_preprocess_json, builtin_tokenizer, MosaicBatches, NegativePairs,
};
pub use optimizer::{AdamW, AdamWConfig, Param};
pub use schedule::Schedule;
pub use synthetic::SyntheticBatches;
pub use trainer::{CheckpointPlan, Evaluation, Observer, StepStats, TrainConfig, Trainer};

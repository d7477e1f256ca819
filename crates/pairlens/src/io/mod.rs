//! Turning files into model inputs: checkpoints, tokenizers, images.

pub mod checkpoint;
mod clip_bpe;
pub mod image;
pub mod mapped;
pub mod preprocess;
pub mod resample;
pub mod text_clean;
pub mod tokenizer;

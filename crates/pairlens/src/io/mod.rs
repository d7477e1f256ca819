//! Turning files into model inputs: checkpoints, tokenizers, images.

pub mod caption_tokenizer;
pub mod checkpoint;
mod clip_bpe;
pub mod image;
pub mod mapped;
pub mod preprocess;
pub mod resample;
pub mod sentencepiece;
pub mod siglip_tokenizer;
pub mod text_clean;
pub mod tokenizer;

//! Training and evaluation data for pairlens' built-in model: seeded captioned mosaics of
//! Fashion-MNIST items with a box for every item and a token span for every object phrase, so
//! token × patch attributions can be checked against ground truth.
//!
//! - [`idx`]: the Fashion-MNIST IDX reader.
//! - [`mosaic`]: the deterministic mosaic generator.
//! - [`caption`]: the caption grammar, its vocabulary and its word-level tokenizer.
//! - [`export()`]: PNG files plus `data.jsonl`.

pub mod caption;
pub mod export;
pub mod idx;
pub mod mosaic;
mod rng;

pub use caption::{
    max_caption_words, vocabulary, word_level_tokenizer_json, Phrase, Relation, RelationKind,
};
pub use export::export;
pub(crate) use idx::CLASS_NAMES;
pub use idx::{FashionMnist, Split, CLASS_KEYS};
pub use mosaic::{Item, Mosaic, MosaicConfig, MosaicGenerator};

//! Phrase grounding evaluation: does a phrase's patch heatmap point at the phrase's boxes, and
//! does a box's token scores point back at the phrase? Datasets: the mosaic JSONL that
//! `pairlens mosaics` writes ([`read_jsonl`]), COCO ([`coco`]) and Flickr30k Entities
//! ([`flickr30k`]), whose character-range phrases become token spans in [`align_items`]; heatmaps
//! from pairlens or the first-order [`baselines`]; numbers and summaries in [`metrics`] and
//! [`report`].

mod align;
pub mod baselines;
pub mod coco;
mod dataset;
pub mod flickr30k;
pub mod metrics;
pub mod report;
mod xml;

pub use align::{align_items, token_span, CaptionItem, Skipped, TextPhrase};
pub use baselines::Method;
pub use coco::read_coco;
pub use dataset::{read_jsonl, GroundingItem, GroundingPhrase};
pub use flickr30k::read_flickr30k;
pub use metrics::{
    box_mass, mean_ci, pointing_game, reverse_direction, t975, union_weights, wilson, Reverse,
};
pub use report::{PhraseResult, Summary};

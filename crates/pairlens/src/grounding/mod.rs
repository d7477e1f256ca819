//! Phrase grounding evaluation: does a phrase's patch heatmap point at the phrase's boxes, and
//! does a box's token scores point back at the phrase? Run over the mosaic JSONL format that
//! `pairlens mosaics` writes (see [`dataset`]); numbers and summaries in [`metrics`] and
//! [`report`].

pub mod dataset;
pub mod metrics;
pub mod report;

pub use dataset::{read_jsonl, GroundingItem, GroundingPhrase};
pub use metrics::{
    box_mass, mean_ci, pointing_game, reverse_direction, t975, union_weights, wilson, Reverse,
};
pub use report::{PhraseResult, Summary};

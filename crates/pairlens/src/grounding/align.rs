//! Phrases located by byte ranges in the caption (the COCO and Flickr30k Entities readers) →
//! token spans of the model's own tokenizer.
//!
//! The tokenizer exposes no offsets that survive open_clip's cleaning, so a range `a..b` is
//! mapped by tokenising the three pieces `caption[..a]`, `caption[a..b]`, `caption[b..]`: when
//! their ids, concatenated, are exactly the caption's ids, the phrase is tokens
//! `1 + |pre| .. 1 + |pre| + |phrase|` (SOT = 0). Word-level and BPE tokenizers both split at
//! whitespace and punctuation first, so this holds whenever the phrase starts and ends at word
//! boundaries; when it does not (a range inside a word), the phrase is skipped, never guessed.

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::dataset::{GroundingItem, GroundingPhrase};
use crate::io::caption_tokenizer::CaptionTokenizer;
use crate::{Error, Result};

/// A phrase as a byte range `[start, end)` of its caption.
#[derive(Clone, Debug, PartialEq)]
pub struct TextPhrase {
    /// Byte range `[start, end)` in the caption, on character boundaries.
    pub range: (usize, usize),
    /// The phrase's class label (COCO category name, Flickr30k Entities type).
    pub class: String,
    /// Original-image pixels `[x0, y0, x1, y1]`, exclusive ends.
    pub boxes: Vec<[f32; 4]>,
}

/// A caption with byte-range phrases; see [`GroundingItem`] for the other fields.
#[derive(Clone, Debug, PartialEq)]
pub struct CaptionItem {
    /// Unique key of the pair ([`GroundingItem::id`]).
    pub id: String,
    /// The image as the dataset names it.
    pub image: String,
    /// The image file, resolved.
    pub image_path: PathBuf,
    /// The plain caption the phrase ranges index into.
    pub caption: String,
    /// The caption's phrases, in caption order.
    pub phrases: Vec<TextPhrase>,
    /// Where the pair was read, for messages.
    pub origin: String,
}

/// What a reader or the alignment left out, by reason, with counts (reported, never silent).
pub type Skipped = BTreeMap<String, usize>;

/// Count one more `reason`.
pub(crate) fn skip(skipped: &mut Skipped, reason: &str) {
    *skipped.entry(reason.to_string()).or_default() += 1;
}

/// The token span (rows of an explanation: SOT = 0 for CLIP, the first word's for SigLIP;
/// half-open) of bytes `range` of `caption`, or `None` when the
/// pieces `caption[..a]`, `caption[a..b]`, `caption[b..]`, tokenised apart and concatenated,
/// differ from the caption's own ids (typically a range that starts or ends inside a word) or
/// the phrase has no tokens. A range outside the caption or off a character boundary is an error.
pub fn token_span(
    tok: &CaptionTokenizer,
    caption: &str,
    (a, b): (usize, usize),
) -> Result<Option<(usize, usize)>> {
    if !(a < b && b <= caption.len() && caption.is_char_boundary(a) && caption.is_char_boundary(b))
    {
        return Err(Error::InvalidArgument(format!(
            "byte range {a}..{b} is not a non-empty range of whole characters of the {}-byte caption {caption:?}",
            caption.len()
        )));
    }
    let ids = |s: &str| -> Result<Vec<u32>> {
        if s.trim().is_empty() {
            Ok(Vec::new())
        } else {
            tok.content_ids(s)
        }
    };
    let (pre, phrase, post) = (
        ids(&caption[..a])?,
        ids(&caption[a..b])?,
        ids(&caption[b..])?,
    );
    if phrase.is_empty() {
        return Ok(None);
    }
    let whole = ids(caption)?;
    let joined = pre.iter().chain(&phrase).chain(&post);
    if whole.len() != pre.len() + phrase.len() + post.len() || !whole.iter().eq(joined) {
        return Ok(None);
    }
    let start = tok.first_content_row() + pre.len();
    Ok(Some((start, start + phrase.len())))
}

/// Token spans for every phrase. Captions that do not fit the model's context, phrases whose
/// tokens do not line up (see [`token_span`]) and captions left without a phrase are skipped
/// and counted in the returned map (added to `skipped`).
pub fn align_items(
    items: Vec<CaptionItem>,
    tok: &CaptionTokenizer,
    skipped: &mut Skipped,
) -> Result<Vec<GroundingItem>> {
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        let at = |e: Error| Error::InvalidArgument(format!("{}: {e}", item.origin));
        let content = tok.content_ids(&item.caption).map_err(at)?;
        if content.is_empty() {
            skip(skipped, "captions with no tokens");
            continue;
        }
        if content.len() + tok.added_tokens() > tok.context_length() {
            skip(skipped, "captions longer than the model's context");
            continue;
        }
        let mut phrases = Vec::with_capacity(item.phrases.len());
        for p in &item.phrases {
            match token_span(tok, &item.caption, p.range).map_err(at)? {
                Some(span) => phrases.push(GroundingPhrase {
                    span,
                    class: p.class.clone(),
                    text: Some(item.caption[p.range.0..p.range.1].to_string()),
                    boxes: p.boxes.clone(),
                }),
                None => skip(
                    skipped,
                    "phrases whose tokens do not line up with the caption's",
                ),
            }
        }
        if phrases.is_empty() {
            if !item.phrases.is_empty() {
                skip(skipped, "captions left without a phrase after tokenizing");
            }
            continue;
        }
        out.push(GroundingItem {
            id: item.id,
            image: item.image,
            image_path: item.image_path,
            caption: item.caption,
            phrases,
            origin: item.origin,
        });
    }
    Ok(out)
}

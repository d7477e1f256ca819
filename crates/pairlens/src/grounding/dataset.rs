//! The mosaic JSONL format (`pairlens mosaics`): one object per line,
//! `{"image": "00000.png", "caption": …, "phrases": [{"span": [i, j], "class": …, "boxes":
//! [[x0, y0, x1, y1], …]}, …]}`. Spans are half-open token indices (SOT = 0); boxes are in
//! original-image pixels with exclusive ends. Other fields are ignored.
//!
//! [`GroundingItem`] is also what the COCO and Flickr30k Entities readers produce, once their
//! character ranges are turned into token spans ([`super::align`]).

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::{Error, Result};

/// One phrase of a [`GroundingItem`]: its tokens in the caption and the boxes it names.
#[derive(Clone, Debug, PartialEq)]
pub struct GroundingPhrase {
    /// Half-open token range `[start, end)` in the encoded caption, SOT = 0.
    pub span: (usize, usize),
    /// Class label; results are summarised per class.
    pub class: String,
    /// The phrase's words, when the dataset gives them (always for COCO and Flickr30k
    /// Entities; optional in the mosaic JSONL).
    pub text: Option<String>,
    /// Original-image pixels `[x0, y0, x1, y1]`, exclusive ends.
    pub boxes: Vec<[f32; 4]>,
}

/// One (image, caption) pair with its phrases, whatever the dataset format.
#[derive(Clone, Debug, PartialEq)]
pub struct GroundingItem {
    /// Unique key of the pair (results.csv rows are keyed by it and the phrase index): the
    /// image name for mosaics (one caption each), the caption id for COCO, `<id>#<k>` for
    /// Flickr30k Entities.
    pub id: String,
    /// The image as the dataset names it (results.csv's `image` column).
    pub image: String,
    /// The image file, resolved.
    pub image_path: PathBuf,
    /// The caption, as it is given to the tokenizer.
    pub caption: String,
    /// The caption's phrases, each with at least one box.
    pub phrases: Vec<GroundingPhrase>,
    /// Where the pair was read, for messages: `FILE line N`, `FILE caption id N`, ….
    pub origin: String,
}

#[derive(Deserialize)]
struct RawPhrase {
    span: (usize, usize),
    class: String,
    #[serde(default)]
    text: Option<String>,
    boxes: Vec<[f32; 4]>,
}

#[derive(Deserialize)]
struct RawItem {
    image: String,
    caption: String,
    phrases: Vec<RawPhrase>,
}

/// Read a mosaic JSONL file: one object per line, `{"image": …, "caption": …, "phrases":
/// [{"span": [i, j], "class": …, "text": … (optional), "boxes": [[x0, y0, x1, y1], …]}, …]}`,
/// other fields ignored; images are resolved next to the file. Every line is checked (blank
/// lines skipped): non-empty spans, at least one box per phrase, finite non-empty boxes.
/// Errors name the file and the 1-based line. Token spans are checked against the caption
/// later, once it is tokenised.
pub fn read_jsonl(path: &Path) -> Result<Vec<GroundingItem>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let bad = |line: usize, msg: String| Error::Dataset {
        path: path.to_path_buf(),
        msg: format!("line {line}: {msg}"),
    };
    let mut items = Vec::new();
    for (k, raw) in text.lines().enumerate() {
        let line = k + 1;
        if raw.trim().is_empty() {
            continue;
        }
        let item: RawItem = serde_json::from_str(raw).map_err(|e| bad(line, e.to_string()))?;
        if item.image.is_empty() {
            return Err(bad(line, "empty \"image\"".into()));
        }
        let mut phrases = Vec::with_capacity(item.phrases.len());
        for (p, ph) in item.phrases.into_iter().enumerate() {
            let (a, b) = ph.span;
            if a >= b {
                return Err(bad(
                    line,
                    format!("phrase {p}: span [{a}, {b}] is empty (expected start < end)"),
                ));
            }
            if ph.boxes.is_empty() {
                return Err(bad(line, format!("phrase {p}: no boxes")));
            }
            for bx in &ph.boxes {
                if !(bx.iter().all(|v| v.is_finite()) && bx[0] < bx[2] && bx[1] < bx[3]) {
                    return Err(bad(
                        line,
                        format!("phrase {p}: box {bx:?} is not x0 < x1, y0 < y1"),
                    ));
                }
            }
            phrases.push(GroundingPhrase {
                span: ph.span,
                class: ph.class,
                text: ph.text,
                boxes: ph.boxes,
            });
        }
        items.push(GroundingItem {
            id: item.image.clone(),
            image_path: path.parent().unwrap_or(Path::new(".")).join(&item.image),
            image: item.image,
            caption: item.caption,
            phrases,
            origin: format!("{} line {line}", path.display()),
        });
    }
    Ok(items)
}

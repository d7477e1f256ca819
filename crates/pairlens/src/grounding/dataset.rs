//! The mosaic JSONL format (`pairlens mosaics`): one object per line,
//! `{"image": "00000.png", "caption": …, "phrases": [{"span": [i, j], "class": …, "boxes":
//! [[x0, y0, x1, y1], …]}, …]}`. Spans are half-open token indices (SOT = 0); boxes are in
//! original-image pixels with exclusive ends. Other fields are ignored.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::{Error, Result};

#[derive(Clone, Debug, PartialEq)]
pub struct GroundingPhrase {
    pub span: (usize, usize),
    pub class: String,
    pub text: Option<String>,
    pub boxes: Vec<[f32; 4]>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct GroundingItem {
    /// As written in the file (relative to the JSONL's directory unless absolute).
    pub image: String,
    pub caption: String,
    pub phrases: Vec<GroundingPhrase>,
    /// 1-based line in the JSONL, for messages.
    pub line: usize,
}

impl GroundingItem {
    /// The image file: `image` resolved against the JSONL's directory.
    pub fn image_path(&self, jsonl: &Path) -> PathBuf {
        jsonl.parent().unwrap_or(Path::new(".")).join(&self.image)
    }
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

/// Read and check every line (blank lines skipped). Errors name the file and the 1-based line.
/// Token spans are checked against the caption later, once it is tokenised.
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
            image: item.image,
            caption: item.caption,
            phrases,
            line,
        });
    }
    Ok(items)
}

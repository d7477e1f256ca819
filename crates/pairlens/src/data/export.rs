//! Mosaics to disk: one grayscale PNG per mosaic plus `data.jsonl`, one JSON object per line:
//!
//! ```json
//! {"image": "00000.png", "index": 0, "caption": "a bag left of two sneakers",
//!  "phrases": [{"span": [1, 3], "noun": [2, 3], "text": "a bag", "class": "bag", "class_id": 8,
//!               "boxes": [[x0, y0, x1, y1]]}, …],
//!  "items": [{"class": "bag", "class_id": 8, "bbox": [x0, y0, x1, y1], "source_index": 17}, …],
//!  "relations": [{"kind": "left_of", "subject": 0, "object": 1}]}
//! ```
//!
//! Spans are word-level token indices with SOT = 0 (word `w` is token `w + 1`); boxes are
//! pixels with exclusive ends; `class` is a [`CLASS_KEYS`] entry.

use std::io::Write;
use std::ops::Range;
use std::path::Path;

use serde::Serialize;

use super::caption::Relation;
use super::idx::CLASS_KEYS;
use super::mosaic::{Mosaic, MosaicGenerator};
use crate::{Error, Result};

#[derive(Serialize)]
struct PhraseLine<'a> {
    span: [usize; 2],
    noun: [usize; 2],
    text: &'a str,
    class: &'static str,
    class_id: u8,
    boxes: &'a [[u32; 4]],
}

#[derive(Serialize)]
struct ItemLine {
    class: &'static str,
    class_id: u8,
    bbox: [u32; 4],
    source_index: usize,
}

#[derive(Serialize)]
struct Line<'a> {
    image: String,
    index: u64,
    caption: &'a str,
    phrases: Vec<PhraseLine<'a>>,
    items: Vec<ItemLine>,
    relations: &'a [Relation],
}

/// File name of mosaic `index`: zero-padded to five digits.
pub fn image_name(index: u64) -> String {
    format!("{index:05}.png")
}

/// The `data.jsonl` line of a mosaic (no trailing newline).
pub fn jsonl_line(m: &Mosaic) -> String {
    let line = Line {
        image: image_name(m.index),
        index: m.index,
        caption: &m.caption,
        phrases: m
            .phrases
            .iter()
            .map(|p| PhraseLine {
                span: p.span,
                noun: p.noun,
                text: &p.text,
                class: CLASS_KEYS[p.class as usize],
                class_id: p.class,
                boxes: &p.boxes,
            })
            .collect(),
        items: m
            .items
            .iter()
            .map(|i| ItemLine {
                class: CLASS_KEYS[i.class as usize],
                class_id: i.class,
                bbox: i.bbox,
                source_index: i.source_index,
            })
            .collect(),
        relations: &m.relations,
    };
    serde_json::to_string(&line).expect("plain data serialises")
}

/// An 8-bit grayscale PNG of a `side`×`side` image.
pub fn encode_png_gray(pixels: &[u8], side: usize) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut enc = png::Encoder::new(&mut out, side as u32, side as u32);
    enc.set_color(png::ColorType::Grayscale);
    enc.set_depth(png::BitDepth::Eight);
    let mut w = enc.write_header().map_err(std::io::Error::other)?;
    w.write_image_data(pixels).map_err(std::io::Error::other)?;
    w.finish().map_err(std::io::Error::other)?;
    Ok(out)
}

/// Write mosaics `range` of `gen` as `{out}/{index:05}.png` plus `{out}/data.jsonl`, creating
/// `out`. A non-empty `out` is refused unless `force` (then files of the same names are
/// overwritten and other files are left alone).
pub fn export(gen: &MosaicGenerator, range: Range<u64>, out: &Path, force: bool) -> Result<()> {
    if out.exists() {
        let mut entries = std::fs::read_dir(out).map_err(|e| Error::io(out, e))?;
        if !force && entries.next().is_some() {
            return Err(Error::InvalidArgument(format!(
                "{}: directory is not empty; use --force to write into it anyway",
                out.display()
            )));
        }
    } else {
        std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    }
    let jsonl = out.join("data.jsonl");
    let file = std::fs::File::create(&jsonl).map_err(|e| Error::io(&jsonl, e))?;
    let mut lines = std::io::BufWriter::new(file);
    for index in range {
        let m = gen.mosaic(index);
        let path = out.join(image_name(index));
        let png = encode_png_gray(&m.pixels, m.canvas).map_err(|e| Error::io(&path, e))?;
        std::fs::write(&path, png).map_err(|e| Error::io(&path, e))?;
        writeln!(lines, "{}", jsonl_line(&m)).map_err(|e| Error::io(&jsonl, e))?;
    }
    lines.flush().map_err(|e| Error::io(&jsonl, e))?;
    Ok(())
}

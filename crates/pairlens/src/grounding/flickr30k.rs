//! Flickr30k Entities (github.com/BryanPlummer/flickr30k_entities): `Sentences/<id>.txt`, five
//! captions a line each with phrases marked `[/EN#<chain>/<type>[/<type>…] word …]`, and
//! `Annotations/<id>.xml`, PASCAL-VOC-like `<object>`s with one or more `<name>` (chain ids) and
//! either a `<bndbox>` or `<nobndbox>`/`<scene>` flags. Images are `<images>/<id>.jpg`.
//!
//! The plain caption is the words joined by single spaces (as the dataset's own
//! `get_sentence_data` does); a phrase's boxes are all boxes of its chain; class = its first
//! type. VOC boxes are 1-based with inclusive ends, so `xmin..=xmax` becomes `[xmin − 1, xmax)`
//! in 0-based pixels with exclusive ends. An object's box belongs to every chain it names (the
//! README's reading; the dataset's Python helper keeps only the first name). Phrases with no
//! box (not visual, `nobndbox`, `scene`) and captions left without a phrase are counted.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use super::align::{skip, CaptionItem, Skipped, TextPhrase};
use super::xml;
use crate::{Error, Result};

/// One marked phrase of a caption: its byte range in the plain caption, chain id and types.
#[derive(Clone, Debug, PartialEq)]
pub struct SentencePhrase {
    /// Byte range `[start, end)` in the plain caption.
    pub range: (usize, usize),
    /// Coreference chain id (`EN#<chain>`); `0` marks a phrase that is not visual.
    pub chain: String,
    /// Entity types in file order (`people`, `clothing`, …); never empty.
    pub types: Vec<String>,
}

/// Parse one line of a Sentences file into the plain caption (words joined by single spaces)
/// and its phrases. The error says what is malformed: an unclosed or empty phrase, a phrase
/// without a type, a bracket that does not open a phrase as `[/EN#<chain>/<type>`.
pub fn parse_sentence(line: &str) -> std::result::Result<(String, Vec<SentencePhrase>), String> {
    let mut plain = String::new();
    let mut phrases = Vec::new();
    // (start byte, chain, types) of the phrase being read.
    let mut open: Option<(usize, String, Vec<String>)> = None;
    let push_word = |plain: &mut String, w: &str| {
        if !plain.is_empty() {
            plain.push(' ');
        }
        plain.push_str(w);
    };
    for token in line.split_whitespace() {
        if open.is_none() && token.starts_with('[') {
            let parts: Vec<&str> = token.split('/').collect();
            let chain = parts
                .get(1)
                .and_then(|p| p.strip_prefix("EN#"))
                .filter(|c| !c.is_empty() && parts[0] == "[");
            let Some(chain) = chain else {
                return Err(format!(
                    "{token:?} does not open a phrase as `[/EN#<chain id>/<type>`"
                ));
            };
            if token.ends_with(']') {
                return Err(format!("phrase {token:?} has no words"));
            }
            let types: Vec<String> = parts[2..].iter().map(|t| t.to_string()).collect();
            if types.is_empty() || types.iter().any(String::is_empty) {
                return Err(format!("phrase {token:?} has no type"));
            }
            let start = if plain.is_empty() { 0 } else { plain.len() + 1 };
            open = Some((start, chain.to_string(), types));
            continue;
        }
        match token.strip_suffix(']').filter(|_| open.is_some()) {
            Some(word) => {
                if !word.is_empty() {
                    push_word(&mut plain, word);
                }
                let (start, chain, types) = open.take().expect("checked");
                if plain.len() <= start {
                    return Err(format!("phrase /EN#{chain} has no words"));
                }
                phrases.push(SentencePhrase {
                    range: (start, plain.len()),
                    chain,
                    types,
                });
            }
            None => push_word(&mut plain, token),
        }
    }
    if let Some((_, chain, _)) = open {
        return Err(format!("phrase /EN#{chain} is not closed with `]`"));
    }
    Ok((plain, phrases))
}

/// Boxes per chain id and the chains flagged `nobndbox` / `scene`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Annotation {
    /// Boxes per chain id, 0-based pixels `[x0, y0, x1, y1]` with exclusive ends, in file
    /// order.
    pub boxes: HashMap<String, Vec<[f32; 4]>>,
    /// Chains of objects flagged `<nobndbox>`.
    pub nobox: HashSet<String>,
    /// Chains of objects flagged `<scene>`.
    pub scene: HashSet<String>,
}

/// Parse an Annotations XML document (errors say the line).
pub fn parse_annotation(text: &str) -> std::result::Result<Annotation, String> {
    let root = xml::parse(text)?;
    let mut ann = Annotation::default();
    for obj in root.children_named("object") {
        let names: Vec<String> = obj.children_named("name").map(|n| n.text.clone()).collect();
        if names.is_empty() || names.iter().any(String::is_empty) {
            return Err(format!(
                "line {}: <object> without a chain id in <name>",
                obj.line
            ));
        }
        if let Some(b) = obj.child("bndbox") {
            let coord = |tag: &str| -> std::result::Result<f32, String> {
                let el = b
                    .child(tag)
                    .ok_or_else(|| format!("line {}: <bndbox> without <{tag}>", b.line))?;
                el.text
                    .parse::<f32>()
                    .ok()
                    .filter(|v| v.is_finite())
                    .ok_or_else(|| {
                        format!("line {}: <{tag}> {:?} is not a number", el.line, el.text)
                    })
            };
            let (x0, y0, x1, y1) = (
                coord("xmin")?,
                coord("ymin")?,
                coord("xmax")?,
                coord("ymax")?,
            );
            // 1-based inclusive → 0-based, exclusive end.
            let bx = [x0 - 1.0, y0 - 1.0, x1, y1];
            if !(bx[0] < bx[2] && bx[1] < bx[3]) {
                return Err(format!(
                    "line {}: box xmin {x0} ymin {y0} xmax {x1} ymax {y1} is empty",
                    b.line
                ));
            }
            for n in &names {
                ann.boxes.entry(n.clone()).or_default().push(bx);
            }
        } else {
            let flag = |tag: &str| {
                obj.child(tag)
                    .is_some_and(|e| e.text.trim() != "0" && !e.text.trim().is_empty())
            };
            for n in &names {
                if flag("nobndbox") {
                    ann.nobox.insert(n.clone());
                }
                if flag("scene") {
                    ann.scene.insert(n.clone());
                }
            }
        }
    }
    Ok(ann)
}

/// The image ids to read: the lines of `ids` (e.g. the dataset's test.txt; a `.jpg` suffix is
/// dropped), else every `<id>.txt` in `sentences`, sorted.
fn image_ids(sentences: &Path, ids: Option<&Path>) -> Result<Vec<String>> {
    if let Some(path) = ids {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        return Ok(text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(|l| l.strip_suffix(".jpg").unwrap_or(l).to_string())
            .collect());
    }
    let mut out = Vec::new();
    for entry in std::fs::read_dir(sentences).map_err(|e| Error::io(sentences, e))? {
        let p = entry.map_err(|e| Error::io(sentences, e))?.path();
        if p.extension().is_some_and(|e| e == "txt") {
            if let Some(stem) = p.file_stem().and_then(|s| s.to_str()) {
                out.push(stem.to_string());
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Read the captions of the chosen images: the lines of `ids` (e.g. the dataset's test.txt; a
/// `.jpg` suffix is dropped), else every `<id>.txt` in `sentences`, sorted. Item ids are
/// `<id>#<k>` with k the caption's 0-based line among the non-empty ones. What is left out is counted in
/// `skipped`.
pub fn read_flickr30k(
    sentences: &Path,
    annotations: &Path,
    images: &Path,
    ids: Option<&Path>,
    skipped: &mut Skipped,
) -> Result<Vec<CaptionItem>> {
    let mut items = Vec::new();
    for id in image_ids(sentences, ids)? {
        let spath: PathBuf = sentences.join(format!("{id}.txt"));
        let apath: PathBuf = annotations.join(format!("{id}.xml"));
        let stext = std::fs::read_to_string(&spath).map_err(|e| Error::io(&spath, e))?;
        let atext = std::fs::read_to_string(&apath).map_err(|e| Error::io(&apath, e))?;
        let ann = parse_annotation(&atext).map_err(|msg| Error::Dataset {
            path: apath.clone(),
            msg,
        })?;
        let image = format!("{id}.jpg");
        let mut k = 0;
        for (n, line) in stext.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let (caption, marked) = parse_sentence(line).map_err(|msg| Error::Dataset {
                path: spath.clone(),
                msg: format!("line {}: {msg}", n + 1),
            })?;
            let mut phrases = Vec::new();
            for p in marked {
                match ann.boxes.get(&p.chain) {
                    Some(b) => phrases.push(TextPhrase {
                        range: p.range,
                        class: p.types[0].clone(),
                        boxes: b.clone(),
                    }),
                    None if p.chain == "0" || p.types.iter().any(|t| t == "notvisual") => {
                        skip(skipped, "phrases not visual (chain 0)")
                    }
                    None if ann.scene.contains(&p.chain) => {
                        skip(skipped, "phrases of the whole scene (no box)")
                    }
                    None if ann.nobox.contains(&p.chain) => {
                        skip(skipped, "phrases marked nobndbox (no box)")
                    }
                    None => skip(
                        skipped,
                        "phrases whose chain has no object in the annotation",
                    ),
                }
            }
            let origin = format!("{} line {}", spath.display(), n + 1);
            if phrases.is_empty() {
                skip(skipped, "captions with no boxed phrase");
            } else {
                items.push(CaptionItem {
                    id: format!("{id}#{k}"),
                    image: image.clone(),
                    image_path: images.join(&image),
                    caption,
                    phrases,
                    origin,
                });
            }
            k += 1;
        }
    }
    Ok(items)
}

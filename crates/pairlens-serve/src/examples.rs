//! The example images offered on the page: a mosaics-format directory (`data.jsonl`, one
//! object per image with at least `image` and `caption`, plus the image files) or the copy of
//! the repository's `examples/mosaics` embedded in the binary.

use std::path::Path;

use anyhow::{bail, Context, Result};

use crate::assets;

/// One example before it is decoded and registered.
pub struct ExampleFile {
    /// The file name `data.jsonl` gives (shown on the page).
    pub name: String,
    pub caption: String,
    pub bytes: Vec<u8>,
}

/// The embedded `examples/mosaics`.
pub fn embedded() -> Result<Vec<ExampleFile>> {
    parse(
        assets::EXAMPLES_JSONL,
        Path::new("<embedded examples>/data.jsonl"),
        |name| {
            assets::EXAMPLE_FILES
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, b)| b.to_vec())
                .with_context(|| format!("no embedded example file {name:?}"))
        },
    )
}

/// `DIR/data.jsonl` and the files it names (relative to `DIR`).
pub fn from_dir(dir: &Path) -> Result<Vec<ExampleFile>> {
    let jsonl = dir.join("data.jsonl");
    let text =
        std::fs::read_to_string(&jsonl).with_context(|| format!("reading {}", jsonl.display()))?;
    parse(&text, &jsonl, |name| {
        let path = dir.join(name);
        Ok(pairlens::io::image::read_image_file(
            &path,
            pairlens::io::image::DEFAULT_MAX_PIXELS,
        )?)
    })
}

fn parse(
    text: &str,
    source: &Path,
    mut read: impl FnMut(&str) -> Result<Vec<u8>>,
) -> Result<Vec<ExampleFile>> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let at = || format!("{} line {}", source.display(), i + 1);
        let v: serde_json::Value =
            serde_json::from_str(line).with_context(|| format!("{}: not JSON", at()))?;
        let field = |k: &str| -> Result<String> {
            match v.get(k).and_then(|s| s.as_str()) {
                Some(s) => Ok(s.to_string()),
                None => bail!("{}: no string field {k:?}", at()),
            }
        };
        let (name, caption) = (field("image")?, field("caption")?);
        let bytes = read(&name).with_context(at)?;
        out.push(ExampleFile {
            name,
            caption,
            bytes,
        });
    }
    if out.is_empty() {
        bail!("{}: no examples", source.display());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn embedded_examples_parse() {
        let ex = super::embedded().unwrap();
        assert_eq!(ex.len(), 4);
        assert_eq!(ex[1].name, "00001.png");
        assert_eq!(ex[1].caption, "a bag");
    }
}

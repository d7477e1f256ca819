//! Explanations as a safetensors file, readable from Python with `safetensors.numpy.load_file`.
//!
//! One caption: tensors `interactions` `[tokens, image_tokens]` (CLS column first, if the image
//! tower has a class token: the settings' `class_token` says), `score`
//! `[1]`, `residual` `[1]`, and one `[1]` tensor per reference term, named as in the JSON
//! output so that no position has to be remembered: `reference_terms/text_vs_image_reference`
//! (f(x)·g(r_y)), `reference_terms/text_reference_vs_image` (f̃(r_x)·g(y)),
//! `reference_terms/reference_vs_reference` (f̃(r_x)·g(r_y)), and exclip's cosines
//! `exclip_terms/score`, `exclip_terms/text_vs_image_reference`,
//! `exclip_terms/text_reference_vs_image`, `exclip_terms/reference_vs_reference`. Several
//! captions: the same names prefixed `caption{k}/`, k counting from 1 like the HTML report and
//! the PNG files. The metadata holds the tokens and settings (with the text reference's ids and
//! the image reference, to reproduce the run) as JSON strings.

use super::Explanation;
use crate::{Error, Result};
use safetensors::tensor::{Dtype, TensorView};
use std::collections::HashMap;
use std::path::Path;

/// Writes `explanations` to `path` in the layout above, `metadata` added to the file's own.
pub fn save(
    explanations: &[Explanation],
    path: &Path,
    extra: HashMap<String, String>,
) -> Result<()> {
    let mut named: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    let mut metadata = extra;
    for (c, e) in explanations.iter().enumerate() {
        let prefix = if explanations.len() == 1 {
            String::new()
        } else {
            format!("caption{}/", c + 1)
        };
        let dims = e.interactions.dims().to_vec();
        let values: Vec<f32> = e.interactions.flatten_all()?.to_vec1()?;
        let r = e.reference_terms;
        let x = e.exclip_terms;
        let mut push = |name: &str, dims: Vec<usize>, v: &[f32]| {
            let bytes = v.iter().flat_map(|f| f.to_le_bytes()).collect();
            named.push((format!("{prefix}{name}"), dims, bytes));
        };
        push("interactions", dims, &values);
        push("score", vec![1], &[e.score]);
        push("residual", vec![1], &[e.residual]);
        for (name, v) in [
            ("text_vs_image_reference", r.text_vs_image_reference),
            ("text_reference_vs_image", r.text_reference_vs_image),
            ("reference_vs_reference", r.reference_vs_reference),
        ] {
            push(&format!("reference_terms/{name}"), vec![1], &[v]);
        }
        for (name, v) in [
            ("score", x.score),
            ("text_vs_image_reference", x.text_vs_image_reference),
            ("text_reference_vs_image", x.text_reference_vs_image),
            ("reference_vs_reference", x.reference_vs_reference),
        ] {
            push(&format!("exclip_terms/{name}"), vec![1], &[v]);
        }
        metadata.insert(
            format!("{prefix}tokens"),
            serde_json::to_string(&e.tokens).unwrap_or_default(),
        );
        metadata.insert(
            format!("{prefix}settings"),
            serde_json::json!({
                "mode": e.mode, "text_layer": e.text_layer, "image_layer": e.image_layer,
                "steps": e.steps, "grid": [e.grid.0, e.grid.1],
                "class_token": e.class_token,
                "text_reference_ids": e.text_reference, "image_reference": e.image_reference,
            })
            .to_string(),
        );
    }
    let views = named
        .iter()
        .map(|(n, d, b)| {
            TensorView::new(Dtype::F32, d.clone(), b)
                .map(|v| (n.clone(), v))
                .map_err(|e| Error::InvalidArgument(format!("{}: {e}", path.display())))
        })
        .collect::<Result<Vec<_>>>()?;
    safetensors::serialize_to_file(views, Some(metadata), path)
        .map_err(|e| Error::InvalidArgument(format!("{}: cannot write: {e}", path.display())))
}

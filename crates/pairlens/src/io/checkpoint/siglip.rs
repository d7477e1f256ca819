//! Hugging Face `SiglipModel` directories (`model_type: "siglip"`, which SigLIP 2's fixed-
//! resolution checkpoints use too): `config.json`, `model.safetensors`, the tokenizer files,
//! optional `preprocessor_config.json`. Defaults follow transformers' `SiglipTextConfig` and
//! `SiglipVisionConfig` (5.x); the state dict is `CLIPModel`'s but for the text `head`, the
//! patch embedding's bias and the vision pooling head.

use std::path::Path;

use super::hf::{self, check_model_type, merged, patches, transformer};
use super::json::{read_json, Section};
use super::tensors::Source;
use crate::model::params::{BlockLayer, Param, Tower};
use crate::model::{ClipConfig, TextConfig, TextPooling, VisionConfig, VisionPooling};
use crate::Result;

/// Parsed `config.json`. The text tower pools at the last position of the padded sequence,
/// whatever id is there, so no token id matters to the model.
pub(crate) fn read_config(dir: &Path) -> Result<ClipConfig> {
    let path = dir.join(hf::CONFIG);
    let json = read_json(&path)?;
    let root = Section::new(&json, &path, "")?;
    check_model_type(dir, &root, "siglip")?;
    let text_json = merged(&root, "text_config", "text_config_dict")?;
    let vision_json = merged(&root, "vision_config", "vision_config_dict")?;
    let ts = Section::new(&text_json, &path, "text_config.")?;
    let vs = Section::new(&vision_json, &path, "vision_config.")?;
    let family = ("gelu_pytorch_tanh", 1e-6);

    let text_t = transformer(&ts, [768, 3072, 12, 12], family.0, family.1)?;
    let width = text_t.width;
    let text = TextConfig {
        transformer: text_t,
        context_length: ts.positive("max_position_embeddings", Some(64))?,
        vocab_size: ts.positive("vocab_size", Some(32000))?,
        pooling: TextPooling::Last,
        causal: false,
        projection_bias: true,
    };
    let projection_dim = ts.positive("projection_size", Some(width))?;

    let vision_t = transformer(&vs, [768, 3072, 12, 12], family.0, family.1)?;
    if !vs.bool("vision_use_head", true)? {
        return Err(vs.err(
            "vision_use_head",
            "is false: the tower has no pooling head, so it makes no image embedding to explain",
        ));
    }
    if projection_dim != vision_t.width {
        return Err(ts.err(
            "projection_size",
            format!(
                "{projection_dim} differs from vision_config.hidden_size {}: the two embeddings \
                 must share one space",
                vision_t.width
            ),
        ));
    }
    let (patch_size, image_size) = patches(&vs, 16, 224)?;
    let vision = VisionConfig {
        transformer: vision_t,
        patch_size,
        image_size,
        pooling: VisionPooling::AttentionHead,
    };
    Ok(ClipConfig {
        text,
        vision,
        projection_dim,
    })
}

/// Where every parameter lives in a transformers `SiglipModel` state dict.
pub(crate) fn source(param: Param) -> Source {
    match param {
        Param::Projection(Tower::Text) => Source::Tensor("text_model.head.weight".into()),
        Param::Probe => Source::UnitAxes(hf::name(param), 2),
        Param::Head(part @ (BlockLayer::Q | BlockLayer::K | BlockLayer::V), _) => {
            let index = match part {
                BlockLayer::Q => 0,
                BlockLayer::K => 1,
                _ => 2,
            };
            Source::Packed(hf::name(param), index)
        }
        _ => hf::source(param),
    }
}

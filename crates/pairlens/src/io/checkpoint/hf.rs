//! Hugging Face `CLIPModel` directories: `config.json`, `model.safetensors` (or a sharded index),
//! `tokenizer.json`, optional `preprocessor_config.json`.
//! Defaults and pooling follow transformers' `CLIPConfig` / `CLIPTextTransformer` (5.x).

use std::path::Path;

use super::json::{read_json, Section};
use super::tensors::{Source, TensorStore};
use crate::model::params::{BlockLayer, Param, Tower};
use crate::model::{
    Activation, ClipConfig, TextConfig, TextPooling, TransformerConfig, VisionConfig, VisionPooling,
};
use crate::{Error, Result};

pub(crate) const CONFIG: &str = "config.json";

fn activation(sec: &Section, default: &str) -> Result<Activation> {
    match sec.str("hidden_act", default)? {
        "quick_gelu" => Ok(Activation::QuickGelu),
        "gelu" => Ok(Activation::Gelu),
        "gelu_pytorch_tanh" | "gelu_new" => Ok(Activation::GeluTanh),
        other => Err(sec.err(
            "hidden_act",
            format!(
                "{other:?} is not supported (pairlens implements \"quick_gelu\", \"gelu\" and \
                 \"gelu_pytorch_tanh\")"
            ),
        )),
    }
}

/// A tower's transformer geometry from a transformers config section, with that model family's
/// defaults: `d` = [hidden_size, intermediate_size, num_hidden_layers, num_attention_heads],
/// then `hidden_act` and `layer_norm_eps`.
pub(super) fn transformer(
    sec: &Section,
    d: [usize; 4],
    act: &str,
    eps: f64,
) -> Result<TransformerConfig> {
    let [width, inter, layers, heads] = d;
    let t = TransformerConfig {
        width: sec.positive("hidden_size", Some(width))?,
        mlp_dim: sec.positive("intermediate_size", Some(inter))?,
        layers: sec.positive("num_hidden_layers", Some(layers))?,
        heads: sec.positive("num_attention_heads", Some(heads))?,
        activation: activation(sec, act)?,
        layer_norm_eps: sec.positive_f64("layer_norm_eps", eps)?,
    };
    if !t.width.is_multiple_of(t.heads) {
        return Err(sec.err(
            "num_attention_heads",
            format!(
                "hidden_size {} is not a multiple of {} heads",
                t.width, t.heads
            ),
        ));
    }
    Ok(t)
}

/// `text_config` with the legacy `text_config_dict` laid over it (transformers does the same).
pub(super) fn merged(root: &Section, key: &str, legacy: &str) -> Result<serde_json::Value> {
    let mut out = serde_json::Map::new();
    for k in [key, legacy] {
        if let Some(v) = root.get(k) {
            let obj = v.as_object().ok_or_else(|| {
                root.err(
                    k,
                    format!("expected a JSON object, got {}", super::json::short(v)),
                )
            })?;
            out.extend(obj.clone());
        }
    }
    Ok(serde_json::Value::Object(out))
}

/// Parsed `config.json`. Of the token ids only the end id matters to the model (where it pools);
/// the others belong to the tokenizer.
pub(crate) fn read_config(dir: &Path) -> Result<ClipConfig> {
    let path = dir.join(CONFIG);
    let json = read_json(&path)?;
    let root = Section::new(&json, &path, "")?;
    check_model_type(dir, &root, "clip")?;
    let text_json = merged(&root, "text_config", "text_config_dict")?;
    let vision_json = merged(&root, "vision_config", "vision_config_dict")?;
    let ts = Section::new(&text_json, &path, "text_config.")?;
    let vs = Section::new(&vision_json, &path, "vision_config.")?;

    let text_t = transformer(&ts, [512, 2048, 12, 8], "quick_gelu", 1e-5)?;
    let vocab_size = ts.positive("vocab_size", Some(49408))?;
    let id = |key: &str, default: usize| -> Result<u32> {
        let v = ts.usize(key, Some(default))?;
        u32::try_from(v).map_err(|_| ts.err(key, "does not fit in u32"))
    };
    if ts.get("eos_token_id").is_some_and(|v| v.is_array()) {
        return Err(ts.err("eos_token_id", "a list of end ids is not supported"));
    }
    let eos = id("eos_token_id", 49407)?;
    // transformers: `eos_token_id == 2` is the pre-#24773 legacy value meaning "argmax of ids".
    let pooling = match eos {
        2 => TextPooling::ArgmaxId,
        _ => TextPooling::FirstId(eos),
    };
    let text = TextConfig {
        transformer: text_t,
        context_length: ts.positive("max_position_embeddings", Some(77))?,
        vocab_size,
        pooling,
        causal: true,
        projection_bias: false,
    };
    let vision_t = transformer(&vs, [768, 3072, 12, 12], "quick_gelu", 1e-5)?;
    let (patch_size, image_size) = patches(&vs, 32, 224)?;
    let vision = VisionConfig {
        transformer: vision_t,
        patch_size,
        image_size,
        pooling: VisionPooling::ClassToken,
    };
    Ok(ClipConfig {
        text,
        vision,
        projection_dim: root.positive("projection_dim", Some(512))?,
    })
}

/// `model_type` must be `want`; otherwise an error that says what pairlens reads.
pub(super) fn check_model_type(dir: &Path, root: &Section, want: &str) -> Result<()> {
    match root.get("model_type").and_then(|v| v.as_str()) {
        Some(t) if t == want => Ok(()),
        Some("siglip2") => Err(Error::UnknownCheckpoint {
            dir: dir.to_path_buf(),
            msg: "config.json has model_type \"siglip2\": SigLIP 2's NaFlex models (variable \
                  resolution) are not supported yet; its fixed-resolution checkpoints \
                  (model_type \"siglip\") are"
                .into(),
        }),
        Some(other) => Err(Error::UnknownCheckpoint {
            dir: dir.to_path_buf(),
            msg: format!(
                "config.json has model_type {other:?}; pairlens reads \"clip\" and \"siglip\" models"
            ),
        }),
        None => Err(root.err("model_type", format!("missing (expected {want:?})"))),
    }
}

/// A vision section's square patch size and `image_size`, checked to make a patch grid.
pub(super) fn patches(vs: &Section, patch: usize, image: usize) -> Result<(usize, (usize, usize))> {
    if vs.usize("num_channels", Some(3))? != 3 {
        return Err(vs.err(
            "num_channels",
            "only 3-channel (RGB) vision towers are supported",
        ));
    }
    let (ph, pw) = vs.pair("patch_size", patch)?;
    let image_size = vs.pair("image_size", image)?;
    if ph != pw || ph == 0 {
        return Err(vs.err(
            "patch_size",
            format!("patches must be square and non-empty, got {ph}x{pw}"),
        ));
    }
    if image_size.0 < ph || image_size.1 < ph {
        return Err(vs.err(
            "image_size",
            format!("{image_size:?} is smaller than one {ph}-pixel patch"),
        ));
    }
    super::check_input_size(vs, image_size)?;
    Ok((ph, image_size))
}

/// `model.safetensors`, else a sharded `model.safetensors.index.json`.
pub(crate) fn open_weights(dir: &Path) -> Result<TensorStore> {
    let single = dir.join("model.safetensors");
    if single.is_file() {
        return TensorStore::open(&single);
    }
    let index = dir.join("model.safetensors.index.json");
    if index.is_file() {
        return TensorStore::open_sharded(&index);
    }
    let what = if dir.join("pytorch_model.bin").exists() {
        "model weights; only pytorch_model.bin is present and pairlens reads safetensors only (convert \
         with `safetensors.torch.save_file(torch.load(...), 'model.safetensors')`)"
    } else {
        "model weights"
    };
    Err(Error::MissingFile {
        path: single,
        what: what.into(),
    })
}

/// Where every parameter lives in a transformers `CLIPModel` state dict: the one table that
/// [`read_weights`], the writer ([`super::save`]) and the trainer's parameter names share.
pub(crate) fn name(param: Param) -> String {
    let tower = |t| match t {
        Tower::Text => "text_model",
        Tower::Vision => "vision_model",
    };
    match param {
        Param::TokenEmbedding => "text_model.embeddings.token_embedding.weight".into(),
        Param::PositionEmbedding(t) => format!("{}.embeddings.position_embedding.weight", tower(t)),
        Param::PatchEmbedding => "vision_model.embeddings.patch_embedding.weight".into(),
        Param::ClassEmbedding => "vision_model.embeddings.class_embedding".into(),
        Param::PreNorm(a) => format!("vision_model.pre_layrnorm.{}", a.as_str()),
        Param::Block(b) => {
            let part = match b.part {
                BlockLayer::Ln1 => "layer_norm1",
                BlockLayer::Q => "self_attn.q_proj",
                BlockLayer::K => "self_attn.k_proj",
                BlockLayer::V => "self_attn.v_proj",
                BlockLayer::Out => "self_attn.out_proj",
                BlockLayer::Ln2 => "layer_norm2",
                BlockLayer::Fc1 => "mlp.fc1",
                BlockLayer::Fc2 => "mlp.fc2",
            };
            let (t, layer, a) = (tower(b.tower), b.layer, b.affine.as_str());
            format!("{t}.encoder.layers.{layer}.{part}.{a}")
        }
        Param::FinalNorm(Tower::Text, a) => format!("text_model.final_layer_norm.{}", a.as_str()),
        Param::FinalNorm(Tower::Vision, a) => {
            format!("vision_model.post_layernorm.{}", a.as_str())
        }
        Param::Projection(Tower::Text) => "text_projection.weight".into(),
        Param::Projection(Tower::Vision) => "visual_projection.weight".into(),
        // SigLIP's own parameters (`super::siglip::source` says where the packed and reshaped
        // ones are).
        Param::ProjectionBias(Tower::Text) => "text_model.head.bias".into(),
        Param::ProjectionBias(Tower::Vision) => "visual_projection.bias".into(),
        Param::PatchBias => "vision_model.embeddings.patch_embedding.bias".into(),
        Param::Probe => "vision_model.head.probe".into(),
        Param::Head(part, a) => {
            let part = match part {
                BlockLayer::Ln1 | BlockLayer::Ln2 => "layernorm",
                BlockLayer::Q | BlockLayer::K | BlockLayer::V => {
                    return format!("vision_model.head.attention.in_proj_{}", a.as_str())
                }
                BlockLayer::Out => "attention.out_proj",
                BlockLayer::Fc1 => "mlp.fc1",
                BlockLayer::Fc2 => "mlp.fc2",
            };
            format!("vision_model.head.{part}.{}", a.as_str())
        }
    }
}

/// [`name`] as the reader takes it: every HF tensor is stored as the parameter itself.
pub(crate) fn source(param: Param) -> Source {
    Source::Tensor(name(param))
}

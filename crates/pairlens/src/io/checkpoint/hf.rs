//! Hugging Face `CLIPModel` directories: `config.json`, `model.safetensors` (or a sharded index),
//! `tokenizer.json`, optional `preprocessor_config.json`.
//! Defaults and pooling follow transformers' `CLIPConfig` / `CLIPTextTransformer` (5.x).

use std::path::Path;

use super::json::{read_json, Section};
use super::tensors::{Source, TensorStore};
use crate::model::params::{BlockLayer, Param, Tower};
use crate::model::{
    Activation, ClipConfig, TextConfig, TextPooling, TransformerConfig, VisionConfig,
};
use crate::{Error, Result};

pub(crate) const CONFIG: &str = "config.json";

fn activation(sec: &Section) -> Result<Activation> {
    match sec.str("hidden_act", "quick_gelu")? {
        "quick_gelu" => Ok(Activation::QuickGelu),
        "gelu" => Ok(Activation::Gelu),
        other => Err(sec.err(
            "hidden_act",
            format!("{other:?} is not supported (pairlens implements \"quick_gelu\" and \"gelu\")"),
        )),
    }
}

fn transformer(sec: &Section, d: [usize; 4]) -> Result<TransformerConfig> {
    let [width, inter, layers, heads] = d;
    let t = TransformerConfig {
        width: sec.positive("hidden_size", Some(width))?,
        mlp_dim: sec.positive("intermediate_size", Some(inter))?,
        layers: sec.positive("num_hidden_layers", Some(layers))?,
        heads: sec.positive("num_attention_heads", Some(heads))?,
        activation: activation(sec)?,
        layer_norm_eps: sec.positive_f64("layer_norm_eps", 1e-5)?,
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
fn merged(root: &Section, key: &str, legacy: &str) -> Result<serde_json::Value> {
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
    match root.get("model_type").and_then(|v| v.as_str()) {
        Some("clip") => {}
        Some(other) => {
            return Err(Error::UnknownCheckpoint {
                dir: dir.to_path_buf(),
                msg: format!(
                    "config.json has model_type {other:?}; pairlens reads \"clip\" models"
                ),
            })
        }
        None => return Err(root.err("model_type", "missing (expected \"clip\")")),
    }
    let text_json = merged(&root, "text_config", "text_config_dict")?;
    let vision_json = merged(&root, "vision_config", "vision_config_dict")?;
    let ts = Section::new(&text_json, &path, "text_config.")?;
    let vs = Section::new(&vision_json, &path, "vision_config.")?;

    let text_t = transformer(&ts, [512, 2048, 12, 8])?;
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
    };

    let vision_t = transformer(&vs, [768, 3072, 12, 12])?;
    if vs.usize("num_channels", Some(3))? != 3 {
        return Err(vs.err(
            "num_channels",
            "only 3-channel (RGB) vision towers are supported",
        ));
    }
    let (ph, pw) = vs.pair("patch_size", 32)?;
    let image_size = vs.pair("image_size", 224)?;
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
    super::check_input_size(&vs, image_size)?;
    let vision = VisionConfig {
        transformer: vision_t,
        patch_size: ph,
        image_size,
    };
    Ok(ClipConfig {
        text,
        vision,
        projection_dim: root.positive("projection_dim", Some(512))?,
    })
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
    }
}

/// [`name`] as the reader takes it: every HF tensor is stored as the parameter itself.
pub(crate) fn source(param: Param) -> Source {
    Source::Tensor(name(param))
}

//! open_clip hub directories: `open_clip_config.json` (`model_cfg`, `preprocess_cfg`) and
//! `open_clip_model.safetensors`, as written by `open_clip.push_to_hf_hub`.
//! Only the plain ViT + text-transformer `CLIP` is read; every option that changes the math and is
//! not implemented is refused by name (see open_clip/model.py `CLIPVisionCfg`/`CLIPTextCfg`).

use std::path::Path;

use super::json::{read_json, Section};
use super::tensors::{Source, TensorStore};
use crate::model::params::{BlockLayer, Param, Tower};
use crate::model::{
    Activation, ClipConfig, TextConfig, TextPooling, TransformerConfig, VisionConfig, VisionPooling,
};
use crate::{Error, Result};

pub(crate) const CONFIG: &str = "open_clip_config.json";

/// What `load` needs besides the `ClipConfig`.
pub(crate) struct OpenClipExtra {
    pub preprocess_cfg: serde_json::Value,
    /// `custom_text: true` (`CustomTextCLIP`) keeps the text tower under `text.`.
    pub text_prefix: &'static str,
    pub pad_id: u32,
}

const MODEL_KEYS: &[&str] = &[
    "embed_dim",
    "vision_cfg",
    "text_cfg",
    "quick_gelu",
    "custom_text",
    "nonscalar_logit_scale",
    "init_logit_scale",
    "init_logit_bias",
    "cast_dtype",
    "output_dict",
];
const VISION_KEYS: &[&str] = &[
    "layers",
    "width",
    "head_width",
    "mlp_ratio",
    "patch_size",
    "image_size",
    "ls_init_value",
    "patch_dropout",
    "attentional_pool",
    "attn_pooler_queries",
    "attn_pooler_heads",
    "no_ln_pre",
    "pos_embed_type",
    "final_ln_after_pool",
    "pool_type",
    "output_tokens",
    "act_kwargs",
    "norm_kwargs",
    "block_type",
    "qk_norm",
    "scaled_cosine_attn",
    "scale_heads",
    "scale_attn_inner",
    "scale_attn",
    "scale_fc",
    "timm_model_name",
    "timm_model_pretrained",
    "timm_pool",
    "timm_proj",
    "timm_proj_bias",
    "timm_drop",
    "timm_drop_path",
];
const TEXT_KEYS: &[&str] = &[
    "context_length",
    "vocab_size",
    "hf_tokenizer_name",
    "tokenizer_mode",
    "tokenizer_kwargs",
    "width",
    "heads",
    "layers",
    "mlp_ratio",
    "ls_init_value",
    "embed_cls",
    "pad_id",
    "eos_id",
    "no_causal_mask",
    "final_ln_after_pool",
    "pool_type",
    "proj_bias",
    "proj_type",
    "output_tokens",
    "act_kwargs",
    "norm_kwargs",
    "block_type",
    "qk_norm",
    "scaled_cosine_attn",
    "scale_heads",
    "scale_attn_inner",
    "scale_attn",
    "scale_fc",
    "hf_model_name",
    "hf_model_pretrained",
    "hf_proj_type",
    "hf_pooler_type",
];

/// Refuse `key` unless it is absent/null or equals one of `ok` (JSON literals).
fn refuse_unless(sec: &Section, key: &str, ok: &[serde_json::Value], why: &str) -> Result<()> {
    match sec.get(key) {
        None => Ok(()),
        Some(v) if ok.contains(v) => Ok(()),
        Some(v) => Err(sec.err(
            key,
            format!("= {} is not supported ({why})", super::json::short(v)),
        )),
    }
}

/// Options shared by both towers' configs that pairlens does not implement.
fn refuse_common(sec: &Section) -> Result<()> {
    use serde_json::json;
    refuse_unless(sec, "ls_init_value", &[], "LayerScale")?;
    refuse_unless(
        sec,
        "act_kwargs",
        &[json!({})],
        "custom activation arguments",
    )?;
    refuse_unless(
        sec,
        "block_type",
        &[json!("default")],
        "custom attention blocks",
    )?;
    for k in [
        "qk_norm",
        "scaled_cosine_attn",
        "scale_heads",
        "scale_attn_inner",
        "scale_attn",
        "scale_fc",
    ] {
        refuse_unless(sec, k, &[json!(false)], "custom attention block feature")?;
    }
    refuse_unless(
        sec,
        "final_ln_after_pool",
        &[json!(false)],
        "LayerNorm after pooling",
    )?;
    Ok(())
}

/// LayerNorm eps from `norm_kwargs` (only `{"eps": x}` is understood).
fn norm_eps(sec: &Section) -> Result<f64> {
    let nk = sec.sub("norm_kwargs", "")?;
    for k in nk.map.keys() {
        if k != "eps" {
            return Err(sec.err(
                "norm_kwargs",
                format!("key {k:?} is not supported (only \"eps\")"),
            ));
        }
    }
    match nk.get("eps").map(|v| v.as_f64()) {
        None => Ok(1e-5),
        Some(Some(eps)) if eps.is_finite() && eps > 0.0 => Ok(eps),
        Some(_) => Err(sec.err("norm_kwargs", "eps must be a positive number")),
    }
}

fn mlp_dim(sec: &Section, width: usize) -> Result<usize> {
    let r = sec.f64("mlp_ratio", 4.0)?;
    let m = (width as f64 * r) as usize; // Python int(d_model * mlp_ratio)
    if m == 0 {
        return Err(sec.err("mlp_ratio", "gives an empty MLP"));
    }
    Ok(m)
}

pub(crate) fn read_config(dir: &Path) -> Result<(ClipConfig, OpenClipExtra)> {
    use serde_json::json;
    let path = dir.join(CONFIG);
    let json = read_json(&path)?;
    let root = Section::new(&json, &path, "")?;
    let mc = root.sub("model_cfg", "model_cfg.")?;
    if root.get("model_cfg").is_none() {
        return Err(root.err("model_cfg", "missing"));
    }
    mc.only_known(MODEL_KEYS)?;
    refuse_unless(
        &mc,
        "init_logit_bias",
        &[],
        "sigmoid-loss (SigLIP-style) models",
    )?;
    let act = if mc.bool("quick_gelu", false)? {
        Activation::QuickGelu
    } else {
        Activation::Gelu
    };
    let custom_text = mc.bool("custom_text", false)?;
    let embed_dim = mc.positive("embed_dim", None)?;

    // Vision tower.
    let vs = mc.sub("vision_cfg", "model_cfg.vision_cfg.")?;
    vs.only_known(VISION_KEYS)?;
    if vs.get("layers").is_some_and(|v| v.is_array()) {
        return Err(vs.err(
            "layers",
            "is a list: ModifiedResNet image towers are not supported",
        ));
    }
    refuse_unless(&vs, "timm_model_name", &[], "timm image towers")?;
    refuse_common(&vs)?;
    refuse_unless(
        &vs,
        "attentional_pool",
        &[json!(false)],
        "attentional pooling",
    )?;
    refuse_unless(&vs, "no_ln_pre", &[json!(false)], "towers without ln_pre")?;
    refuse_unless(
        &vs,
        "pool_type",
        &[json!("tok")],
        "only CLS-token pooling \"tok\"",
    )?;
    // Sin-cos position embeddings are stored in the state dict like learnable ones.
    refuse_unless(
        &vs,
        "pos_embed_type",
        &[json!("learnable"), json!("sin_cos_2d")],
        "position embedding",
    )?;
    let width = vs.positive("width", Some(768))?;
    let head_width = vs.positive("head_width", Some(64))?;
    let heads = width / head_width;
    if heads == 0 || !width.is_multiple_of(heads) {
        return Err(vs.err(
            "head_width",
            format!("width {width} does not split into heads of {head_width}"),
        ));
    }
    let (ph, pw) = vs.pair("patch_size", 16)?;
    if ph != pw || ph == 0 {
        return Err(vs.err(
            "patch_size",
            format!("patches must be square and non-empty, got {ph}x{pw}"),
        ));
    }
    let image_size = vs.pair("image_size", 224)?;
    if image_size.0 < ph || image_size.1 < ph {
        return Err(vs.err(
            "image_size",
            format!("{image_size:?} is smaller than one {ph}-pixel patch"),
        ));
    }
    super::check_input_size(&vs, image_size)?;
    let vision = VisionConfig {
        transformer: TransformerConfig {
            width,
            layers: vs.positive("layers", Some(12))?,
            heads,
            mlp_dim: mlp_dim(&vs, width)?,
            activation: act,
            layer_norm_eps: norm_eps(&vs)?,
        },
        patch_size: ph,
        image_size,
        pooling: VisionPooling::ClassToken,
    };

    // Text tower.
    let ts = mc.sub("text_cfg", "model_cfg.text_cfg.")?;
    ts.only_known(TEXT_KEYS)?;
    refuse_unless(&ts, "hf_model_name", &[], "Hugging Face text towers")?;
    refuse_common(&ts)?;
    refuse_unless(
        &ts,
        "embed_cls",
        &[json!(false)],
        "CLS text embedding (CoCa)",
    )?;
    refuse_unless(
        &ts,
        "no_causal_mask",
        &[json!(false)],
        "bidirectional text attention",
    )?;
    refuse_unless(
        &ts,
        "pool_type",
        &[json!("argmax")],
        "only argmax (EOT) text pooling",
    )?;
    refuse_unless(
        &ts,
        "proj_bias",
        &[json!(false)],
        "text projection with bias",
    )?;
    refuse_unless(
        &ts,
        "proj_type",
        &[json!("linear")],
        "only a linear text projection",
    )?;
    refuse_unless(&ts, "tokenizer_mode", &[], "custom tokenizer mode")?;
    refuse_unless(
        &ts,
        "tokenizer_kwargs",
        &[json!({}), json!({"clean": "lower"})],
        "custom tokenizer cleaning",
    )?;
    if ts.get("hf_tokenizer_name").is_some() && !dir.join("tokenizer.json").is_file() {
        return Err(ts.err(
            "hf_tokenizer_name",
            "names a Hugging Face tokenizer but the directory has no tokenizer.json",
        ));
    }
    let twidth = ts.positive("width", Some(512))?;
    let theads = ts.positive("heads", Some(8))?;
    if !twidth.is_multiple_of(theads) {
        return Err(ts.err(
            "heads",
            format!("width {twidth} is not a multiple of {theads} heads"),
        ));
    }
    let pad_id = ts.usize("pad_id", Some(0))?;
    let text = TextConfig {
        transformer: TransformerConfig {
            width: twidth,
            layers: ts.positive("layers", Some(12))?,
            heads: theads,
            mlp_dim: mlp_dim(&ts, twidth)?,
            activation: act,
            layer_norm_eps: norm_eps(&ts)?,
        },
        context_length: ts.positive("context_length", Some(77))?,
        vocab_size: ts.positive("vocab_size", Some(49408))?,
        pooling: TextPooling::ArgmaxId,
        causal: true,
        projection_bias: false,
    };
    let extra = OpenClipExtra {
        preprocess_cfg: root.get("preprocess_cfg").cloned().unwrap_or(json!({})),
        text_prefix: if custom_text { "text." } else { "" },
        pad_id: pad_id as u32,
    };
    Ok((
        ClipConfig {
            text,
            vision,
            projection_dim: embed_dim,
        },
        extra,
    ))
}

/// The weight file, in open_clip's own order of preference.
pub(crate) fn open_weights(dir: &Path) -> Result<TensorStore> {
    for name in [
        "open_clip_model.safetensors",
        "open_clip_pytorch_model.safetensors",
        "model.safetensors",
    ] {
        let p = dir.join(name);
        if p.is_file() {
            return TensorStore::open(&p);
        }
    }
    let main = dir.join("open_clip_model.safetensors");
    let what = if dir.join("open_clip_model.safetensors.gz").exists() {
        "model weights; found open_clip_model.safetensors.gz: decompress it first (gunzip -k)"
    } else if dir.join("open_clip_pytorch_model.bin").exists() {
        "model weights; only open_clip_pytorch_model.bin is present and pairlens reads safetensors only \
         (convert with `safetensors.torch.save_file(torch.load(...), 'open_clip_model.safetensors')`)"
    } else {
        "model weights"
    };
    Err(Error::MissingFile {
        path: main,
        what: what.into(),
    })
}

/// Where every parameter lives in an open_clip `CLIP` state dict (`text_prefix` is `"text."` for
/// `CustomTextCLIP`); `has` tells which of two layouts a converted checkpoint uses.
pub(crate) fn source(param: Param, text_prefix: &str, has: impl Fn(&str) -> bool) -> Source {
    let tower = |t| match t {
        Tower::Text => text_prefix.to_string(),
        Tower::Vision => "visual.".to_string(),
    };
    let tensor = |name: String| Source::Tensor(name);
    match param {
        Param::TokenEmbedding => tensor(format!("{text_prefix}token_embedding.weight")),
        Param::PositionEmbedding(t) => tensor(format!("{}positional_embedding", tower(t))),
        Param::PatchEmbedding => tensor("visual.conv1.weight".into()),
        Param::ClassEmbedding => tensor("visual.class_embedding".into()),
        Param::PreNorm(a) => tensor(format!("visual.ln_pre.{}", a.as_str())),
        Param::Block(b) => {
            let p = format!("{}transformer.resblocks.{}.", tower(b.tower), b.layer);
            let a = b.affine.as_str();
            let packed = |i| Source::Packed(format!("{p}attn.in_proj_{a}"), i);
            match b.part {
                BlockLayer::Ln1 => tensor(format!("{p}ln_1.{a}")),
                BlockLayer::Q => packed(0),
                BlockLayer::K => packed(1),
                BlockLayer::V => packed(2),
                BlockLayer::Out => tensor(format!("{p}attn.out_proj.{a}")),
                BlockLayer::Ln2 => tensor(format!("{p}ln_2.{a}")),
                BlockLayer::Fc1 => tensor(format!("{p}mlp.c_fc.{a}")),
                BlockLayer::Fc2 => tensor(format!("{p}mlp.c_proj.{a}")),
            }
        }
        Param::FinalNorm(Tower::Text, a) => tensor(format!("{text_prefix}ln_final.{}", a.as_str())),
        Param::FinalNorm(Tower::Vision, a) => tensor(format!("visual.ln_post.{}", a.as_str())),
        // Converted checkpoints may carry the text projection as an `nn.Linear` weight.
        Param::Projection(Tower::Text) => {
            let linear = format!("{text_prefix}text_projection.weight");
            match has(&linear) {
                true => tensor(linear),
                false => Source::Transposed(format!("{text_prefix}text_projection")),
            }
        }
        Param::Projection(Tower::Vision) => Source::Transposed("visual.proj".into()),
        // SigLIP's own parameters, which this format's CLIP models lack (never asked for).
        Param::ProjectionBias(_) | Param::PatchBias | Param::Probe | Param::Head(..) => {
            super::hf::source(param)
        }
    }
}

//! Writes a Hugging Face `CLIPModel` directory (config.json, model.safetensors, tokenizer.json,
//! preprocessor_config.json) that both [`super::load`] and `transformers.CLIPModel.from_pretrained`
//! read. Tensor names are transformers' own, so the same map serves the reader, this writer and
//! the trainer (which names its parameters with it).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Tensor};
use serde_json::{json, Value};

use crate::io::tokenizer::{ClipTokenizer, TextCleaning};
use crate::model::{Activation, ClipConfig, ClipWeights, TextPooling, TransformerConfig};
use crate::{Error, Result};

/// Files a checkpoint directory written by [`save_hf`] holds.
pub const HF_FILES: [&str; 4] = [
    "config.json",
    "model.safetensors",
    "tokenizer.json",
    "preprocessor_config.json",
];

/// Rebuilds `weights` with every tensor replaced by `f(hf_name, tensor)`, visiting them in one
/// fixed order (the order of [`hf_tensors`]). `logit_scale` is a plain f32 and is not visited.
pub fn map_hf_tensors(
    weights: &ClipWeights,
    mut f: impl FnMut(&str, &Tensor) -> Result<Tensor>,
) -> Result<ClipWeights> {
    weights.map_params(|param, t| f(&super::hf::name(param), t))
}

/// Every tensor of `weights` under its transformers name (without `logit_scale`).
pub fn hf_tensors(weights: &ClipWeights) -> Result<Vec<(String, Tensor)>> {
    let mut out = Vec::new();
    map_hf_tensors(weights, |name, t| {
        out.push((name.to_string(), t.clone()));
        Ok(t.clone())
    })?;
    Ok(out)
}

fn act_name(a: Activation) -> &'static str {
    match a {
        Activation::QuickGelu => "quick_gelu",
        Activation::Gelu => "gelu",
        Activation::GeluTanh => "gelu_pytorch_tanh",
    }
}

fn tower_json(t: &TransformerConfig, projection_dim: usize) -> serde_json::Map<String, Value> {
    let v = json!({
        "hidden_size": t.width,
        "intermediate_size": t.mlp_dim,
        "num_hidden_layers": t.layers,
        "num_attention_heads": t.heads,
        "hidden_act": act_name(t.activation),
        "layer_norm_eps": t.layer_norm_eps,
        "projection_dim": projection_dim,
        "attention_dropout": 0.0,
        "dropout": 0.0,
        "initializer_factor": 1.0,
        "initializer_range": 0.02,
    });
    match v {
        Value::Object(m) => m,
        _ => unreachable!("json! object"),
    }
}

/// `config.json` for `config`. Pooling maps onto transformers' rule: `eos_token_id == 2` means
/// "argmax of the ids", anything else "first position of eos_token_id".
/// The start and padding ids are the tokenizer's, which the model itself never reads.
fn hf_config_json(
    config: &ClipConfig,
    logit_scale: f32,
    tokenizer: &ClipTokenizer,
) -> Result<Value> {
    let (t, v) = (&config.text, &config.vision);
    let eos = match t.pooling {
        TextPooling::ArgmaxId => 2,
        TextPooling::FirstId(2) => return Err(Error::InvalidArgument(
            "cannot save as a Hugging Face checkpoint: text pooling at the first id 2 reads, in \
                 transformers, as the legacy \"argmax of the ids\" rule"
                .into(),
        )),
        TextPooling::FirstId(id) => id,
        TextPooling::Last => {
            return Err(Error::InvalidArgument(
                "cannot save as a Hugging Face CLIP checkpoint: the text tower pools at the last \
                 position (SigLIP); saving is implemented for CLIP models"
                    .into(),
            ))
        }
    };
    let mut text = tower_json(&t.transformer, config.projection_dim);
    text.insert("vocab_size".into(), json!(t.vocab_size));
    text.insert("max_position_embeddings".into(), json!(t.context_length));
    text.insert("bos_token_id".into(), json!(tokenizer.sot_id()));
    text.insert("eos_token_id".into(), json!(eos));
    text.insert("pad_token_id".into(), json!(tokenizer.pad_id()));
    text.insert("model_type".into(), json!("clip_text_model"));
    let mut vision = tower_json(&v.transformer, config.projection_dim);
    let (h, w) = v.image_size;
    // transformers takes a single int (square inputs); pairlens also reads [h, w].
    let size = if h == w { json!(h) } else { json!([h, w]) };
    vision.insert("image_size".into(), size);
    vision.insert("patch_size".into(), json!(v.patch_size));
    vision.insert("num_channels".into(), json!(3));
    vision.insert("model_type".into(), json!("clip_vision_model"));
    Ok(json!({
        "architectures": ["CLIPModel"],
        "model_type": "clip",
        "projection_dim": config.projection_dim,
        "logit_scale_init_value": logit_scale,
        "initializer_factor": 1.0,
        "torch_dtype": "float32",
        "text_config": text,
        "vision_config": vision,
    }))
}

/// A `preprocessor_config.json` equal to the loader's default for this image size
/// ([`crate::io::preprocess::PreprocessConfig::hf_default`]): resize the shortest edge, centre
/// crop, bicubic, OpenAI mean/std.
fn default_preprocessor_json(image_size: (usize, usize)) -> Value {
    let (h, w) = image_size;
    json!({
        "image_processor_type": "CLIPImageProcessor",
        "do_resize": true,
        "size": {"shortest_edge": h.max(w)},
        "resample": 3,
        "do_center_crop": true,
        "crop_size": {"height": h, "width": w},
        "do_rescale": true,
        "rescale_factor": 1.0 / 255.0,
        "do_normalize": true,
        "image_mean": [0.48145466, 0.4578275, 0.40821073],
        "image_std": [0.26862954, 0.26130258, 0.27577711],
        "do_convert_rgb": true,
    })
}

/// `model.safetensors` bytes: every tensor as f32 under its transformers name, `logit_scale`
/// as a 0-d tensor, metadata `{"format": "pt"}` (transformers refuses files without it).
fn safetensors_bytes(weights: &ClipWeights) -> Result<Vec<u8>> {
    let mut named: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    for (name, t) in hf_tensors(weights)? {
        let data: Vec<f32> = t.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
        if let Some(i) = data.iter().position(|x| !x.is_finite()) {
            return Err(Error::InvalidArgument(format!(
                "cannot save tensor `{name}`: non-finite value {} at flat index {i}",
                data[i]
            )));
        }
        named.push((name, t.dims().to_vec(), f32_bytes(&data)));
    }
    if !weights.logit_scale.is_finite() {
        return Err(Error::InvalidArgument(format!(
            "cannot save logit_scale {}",
            weights.logit_scale
        )));
    }
    named.push((
        "logit_scale".into(),
        vec![],
        f32_bytes(&[weights.logit_scale]),
    ));
    let views = named
        .iter()
        .map(|(n, shape, bytes)| {
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), bytes)
                .map(|v| (n.clone(), v))
        })
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| Error::InvalidArgument(format!("safetensors: {e}")))?;
    let meta = HashMap::from([("format".to_string(), "pt".to_string())]);
    safetensors::serialize(views, Some(meta))
        .map_err(|e| Error::InvalidArgument(format!("safetensors: {e}")))
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".pairlens-tmp");
    path.with_file_name(name)
}

fn write(path: &Path, bytes: &[u8]) -> Result<()> {
    std::fs::write(path, bytes).map_err(|e| Error::io(path, e))
}

/// Writes a HF CLIP checkpoint into `dir` (created if needed). Refuses when any of [`HF_FILES`]
/// is already there unless `force`. `tokenizer_json` must fit the token embedding and end texts
/// where the model pools (checked by loading it, so the saved directory loads back).
/// `preprocess` defaults to the loader's own default for the model's image size
/// ([`crate::io::preprocess::PreprocessConfig::hf_default`]). Files are written beside their
/// final names and renamed last, so a failure leaves no half-written checkpoint behind.
pub fn save_hf(
    dir: &Path,
    config: &ClipConfig,
    weights: &ClipWeights,
    tokenizer_json: &str,
    preprocess: Option<&Value>,
    force: bool,
) -> Result<()> {
    if dir.exists() && !dir.is_dir() {
        return Err(Error::io(
            dir,
            std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                "exists and is not a directory",
            ),
        ));
    }
    if !force {
        if let Some(f) = HF_FILES.iter().map(|f| dir.join(f)).find(|p| p.exists()) {
            return Err(Error::io(
                f,
                std::io::Error::new(
                    std::io::ErrorKind::AlreadyExists,
                    "a checkpoint already exists here; refusing to overwrite it (use force)",
                ),
            ));
        }
    }
    // Shapes are checked against the config before anything is written.
    crate::model::ClipModel::new(config.clone(), weights.to_dtype(DType::F32)?)?;
    let pp = preprocess
        .cloned()
        .unwrap_or_else(|| default_preprocessor_json(config.vision.image_size));
    let st = safetensors_bytes(weights)?;
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;

    let pretty = |v: &Value| serde_json::to_string_pretty(v).expect("JSON values serialise");
    let tmps: Vec<(PathBuf, PathBuf)> = HF_FILES
        .iter()
        .map(|name| {
            let p = dir.join(name);
            (tmp_path(&p), p)
        })
        .collect();
    let cleanup = || {
        for (t, _) in &tmps {
            let _ = std::fs::remove_file(t);
        }
    };
    // The tokenizer first: config.json takes its start and padding ids.
    let staged = (|| -> Result<()> {
        write(&tmps[2].0, tokenizer_json.as_bytes())?;
        let tokenizer = check_tokenizer(&tmps[2].0, &dir.join(HF_FILES[2]), config)?;
        let cfg_json = hf_config_json(config, weights.logit_scale, &tokenizer)?;
        write(&tmps[0].0, pretty(&cfg_json).as_bytes())?;
        write(&tmps[1].0, &st)?;
        write(&tmps[3].0, pretty(&pp).as_bytes())?;
        crate::io::preprocess::PreprocessConfig::from_hf_json(&pp, &dir.join(HF_FILES[3]))?;
        Ok(())
    })();
    if let Err(e) = staged {
        cleanup();
        return Err(e);
    }
    for (tmp, dst) in &tmps {
        if let Err(e) = std::fs::rename(tmp, dst) {
            cleanup();
            return Err(Error::io(dst, e));
        }
    }
    Ok(())
}

/// The tokenizer must fit the token embedding and end its texts where the model pools, or the
/// saved directory would not load (or would pool elsewhere).
fn check_tokenizer(tmp: &Path, shown: &Path, config: &ClipConfig) -> Result<ClipTokenizer> {
    let t = &config.text;
    let tok =
        ClipTokenizer::from_file(tmp, TextCleaning::None, t.context_length, None).map_err(|e| {
            Error::bad_config(shown, format!("tokenizer to be saved does not load: {e}"))
        })?;
    let mut problems = Vec::new();
    if tok.vocab_size() > t.vocab_size {
        problems.push(format!(
            "it has {} tokens but the token embedding has {} rows",
            tok.vocab_size(),
            t.vocab_size
        ));
    }
    match t.pooling {
        TextPooling::FirstId(id) if id != tok.eot_id() => problems.push(format!(
            "its end id is {} but the model pools at id {id}",
            tok.eot_id()
        )),
        TextPooling::ArgmaxId if tok.eot_id() as usize + 1 != tok.vocab_size() => {
            problems.push(format!(
                "its end id {} is not its largest id, where the model pools",
                tok.eot_id()
            ))
        }
        _ => {}
    }
    if problems.is_empty() {
        Ok(tok)
    } else {
        Err(Error::bad_config(
            shown,
            format!(
                "tokenizer does not match the model: {}",
                problems.join("; ")
            ),
        ))
    }
}

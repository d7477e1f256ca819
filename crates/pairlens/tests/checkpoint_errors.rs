//! Broken checkpoint directories give one clear error naming the file and the problem, never a
//! panic. Each case copies the tiny HF (or open_clip) fixture into a temporary directory and
//! breaks one thing.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use pairlens::io::checkpoint;

mod support;

fn fixtures() -> PathBuf {
    support::fixtures().join("models")
}

/// A scratch copy of a fixture directory, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn empty(tag: &str) -> Self {
        let p =
            std::env::temp_dir().join(format!("pairlens-ckpt-err-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Scratch(p)
    }
    /// Copy of `fixture` (config/tokenizer files; `.gz` files are expanded).
    fn copy(tag: &str, fixture: &str) -> Self {
        let s = Scratch::empty(tag);
        support::copy_expanding(&fixtures().join(fixture), &s.0);
        s
    }
    fn path(&self, f: &str) -> PathBuf {
        self.0.join(f)
    }
    /// Rewrite the weights through `edit`.
    fn edit_weights(&self, file: &str, edit: impl FnOnce(&mut HashMap<String, Tensor>)) {
        let mut t = candle_core::safetensors::load(self.path(file), &Device::Cpu).unwrap();
        edit(&mut t);
        candle_core::safetensors::save(&t, self.path(file)).unwrap();
    }
    /// Rewrite a JSON file through `edit`.
    fn edit_json(&self, file: &str, edit: impl FnOnce(&mut serde_json::Value)) {
        let mut v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(self.path(file)).unwrap()).unwrap();
        edit(&mut v);
        std::fs::write(self.path(file), serde_json::to_string_pretty(&v).unwrap()).unwrap();
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `load` fails and its message contains every piece of `want`.
fn expect_err(dir: &Path, want: &[&str]) -> String {
    let msg = match checkpoint::load(dir, &Device::Cpu) {
        Ok(_) => panic!(
            "{}: loaded, expected an error containing {want:?}",
            dir.display()
        ),
        Err(e) => e.to_string(),
    };
    for w in want {
        assert!(msg.contains(w), "error {msg:?} lacks {w:?}");
    }
    msg
}

const HF: &str = "hf-tiny-quickgelu";
const OC: &str = "openclip-a-quickgelu";

fn model_file(fixture: &str) -> &'static str {
    if fixture == OC {
        "open_clip_model.safetensors"
    } else {
        "model.safetensors"
    }
}

#[test]
fn missing_dir() {
    let p = std::env::temp_dir().join("pairlens-no-such-dir-xyz");
    expect_err(&p, &["pairlens-no-such-dir-xyz", "no such directory"]);
    assert!(checkpoint::read_config(&p).is_err());
}

#[test]
fn file_instead_of_dir() {
    let s = Scratch::copy("file", HF);
    expect_err(
        &s.path("model.safetensors"),
        &["model.safetensors", "is a file"],
    );
}

#[test]
fn missing_config() {
    let s = Scratch::empty("noconfig");
    expect_err(&s.0, &["neither config.json", "open_clip_config.json"]);
}

#[test]
fn missing_weights() {
    let s = Scratch::copy("noweights", HF);
    std::fs::remove_file(s.path("model.safetensors")).unwrap();
    expect_err(&s.0, &["model.safetensors", "missing file"]);
    std::fs::write(s.path("pytorch_model.bin"), b"pickle").unwrap();
    expect_err(&s.0, &["pytorch_model.bin", "safetensors only"]);

    let s = Scratch::copy("noweights-oc", OC);
    std::fs::remove_file(s.path("open_clip_model.safetensors")).unwrap();
    expect_err(&s.0, &["open_clip_model.safetensors", "missing file"]);
}

#[test]
fn missing_tokenizer() {
    let s = Scratch::copy("notok", HF);
    std::fs::remove_file(s.path("tokenizer.json")).unwrap();
    expect_err(&s.0, &["tokenizer.json", "missing file"]);
}

#[test]
fn missing_tensor() {
    let s = Scratch::copy("notensor", HF);
    s.edit_weights("model.safetensors", |t| {
        t.remove("text_model.final_layer_norm.bias");
    });
    expect_err(
        &s.0,
        &[
            "model.safetensors",
            "missing tensor `text_model.final_layer_norm.bias`",
            "expected shape [32]",
        ],
    );

    let s = Scratch::copy("notensor-oc", OC);
    s.edit_weights("open_clip_model.safetensors", |t| {
        t.remove("visual.transformer.resblocks.1.attn.in_proj_bias");
    });
    expect_err(
        &s.0,
        &[
            "missing tensor `visual.transformer.resblocks.1.attn.in_proj_bias`",
            "[144]",
        ],
    );
}

#[test]
fn wrong_shape() {
    let s = Scratch::copy("shape", HF);
    s.edit_weights("model.safetensors", |t| {
        t.insert(
            "vision_model.embeddings.class_embedding".into(),
            Tensor::zeros(47, DType::F32, &Device::Cpu).unwrap(),
        );
    });
    expect_err(
        &s.0,
        &[
            "`vision_model.embeddings.class_embedding`",
            "shape [47], expected [48]",
        ],
    );

    // open_clip's visual.proj is [width, embed]; a transposed one is caught, not silently used.
    let s = Scratch::copy("shape-oc", OC);
    s.edit_weights("open_clip_model.safetensors", |t| {
        let p = t["visual.proj"].t().unwrap().contiguous().unwrap();
        t.insert("visual.proj".into(), p);
    });
    expect_err(
        &s.0,
        &["`visual.proj`", "shape [24, 48], expected [48, 24]"],
    );
}

#[test]
fn bad_values_and_dtypes() {
    let s = Scratch::copy("nan", HF);
    s.edit_weights("model.safetensors", |t| {
        let mut v: Vec<f32> = t["text_model.final_layer_norm.weight"].to_vec1().unwrap();
        v[3] = f32::NAN;
        t.insert(
            "text_model.final_layer_norm.weight".into(),
            Tensor::new(v, &Device::Cpu).unwrap(),
        );
    });
    expect_err(
        &s.0,
        &[
            "`text_model.final_layer_norm.weight`",
            "non-finite value NaN at flat index 3",
        ],
    );

    // A bad value in a linear weight is named by its position in the stored `[out, in]` order
    // (here row 1, column 2; for open_clip's packed Q/K/V, in the whole `in_proj_weight`, inside
    // the K rows, which are read on their own).
    type Shrink = fn(usize) -> usize;
    let cases: [(&str, &str, Shrink); 2] = [
        (HF, "vision_model.encoder.layers.0.mlp.fc1.weight", |_| 1),
        (
            OC,
            "visual.transformer.resblocks.0.attn.in_proj_weight",
            |rows| rows / 3 + 1,
        ),
    ];
    for (fixture, name, row) in cases {
        let s = Scratch::copy(&format!("nan-linear-{fixture}"), fixture);
        let mut at = 0;
        s.edit_weights(model_file(fixture), |t| {
            let (rows, cols) = t[name].dims2().unwrap();
            let mut v: Vec<f32> = t[name].flatten_all().unwrap().to_vec1().unwrap();
            at = row(rows) * cols + 2;
            v[at] = f32::NAN;
            t.insert(
                name.into(),
                Tensor::from_vec(v, (rows, cols), &Device::Cpu).unwrap(),
            );
        });
        expect_err(
            &s.0,
            &[
                &format!("`{name}`"),
                &format!("non-finite value NaN at flat index {at}"),
            ],
        );
    }

    let s = Scratch::copy("int", HF);
    s.edit_weights("model.safetensors", |t| {
        let v = t["logit_scale"].to_dtype(DType::I64).unwrap();
        t.insert("logit_scale".into(), v);
    });
    expect_err(&s.0, &["`logit_scale`", "not a floating-point type"]);

    let s = Scratch::copy("trunc", HF);
    let bytes = std::fs::read(s.path("model.safetensors")).unwrap();
    std::fs::write(s.path("model.safetensors"), &bytes[..bytes.len() / 2]).unwrap();
    expect_err(&s.0, &["model.safetensors", "not a valid safetensors file"]);
}

/// f16 / bf16 weights are widened to f32 on load.
#[test]
fn half_precision_weights_load() {
    for (tag, dt) in [("f16", DType::F16), ("bf16", DType::BF16)] {
        let s = Scratch::copy(tag, HF);
        s.edit_weights("model.safetensors", |t| {
            for v in t.values_mut() {
                *v = v.to_dtype(dt).unwrap();
            }
        });
        let m = checkpoint::load(&s.0, &Device::Cpu).unwrap();
        let exp = candle_core::safetensors::load(
            fixtures().join(format!("{HF}.expected.safetensors")),
            &Device::Cpu,
        )
        .unwrap();
        let e = m.model.vision.forward(&exp["image_pixels"]).unwrap();
        let d: f32 = e
            .sub(&exp["image_embeds"])
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar()
            .unwrap();
        assert!(d < 0.1, "{tag}: image embeddings off by {d}");
    }
}

#[test]
fn unsupported_activation() {
    let s = Scratch::copy("act", HF);
    s.edit_json("config.json", |v| {
        v["text_config"]["hidden_act"] = "silu".into()
    });
    expect_err(
        &s.0,
        &[
            "config.json",
            "text_config.hidden_act",
            "\"silu\" is not supported",
        ],
    );
    assert!(checkpoint::read_config(&s.0).is_err());
}

#[test]
fn garbage_json() {
    let s = Scratch::copy("garbage", HF);
    std::fs::write(s.path("config.json"), "{ this is not json").unwrap();
    expect_err(&s.0, &["config.json", "bad config: not valid JSON"]);

    let s = Scratch::copy("garbage-oc", OC);
    std::fs::write(s.path("open_clip_config.json"), "[1, 2,").unwrap();
    expect_err(&s.0, &["open_clip_config.json", "not valid JSON"]);

    let s = Scratch::copy("wrongtype", HF);
    s.edit_json("config.json", |v| {
        v["vision_config"]["hidden_size"] = "big".into()
    });
    expect_err(
        &s.0,
        &[
            "vision_config.hidden_size",
            "expected a non-negative integer, got \"big\"",
        ],
    );
}

#[test]
fn other_model_types() {
    let s = Scratch::copy("blip", HF);
    s.edit_json("config.json", |v| v["model_type"] = "blip".into());
    expect_err(&s.0, &["model_type \"blip\"", "\"clip\" and \"siglip\""]);
    let s = Scratch::copy("siglip2", HF);
    s.edit_json("config.json", |v| v["model_type"] = "siglip2".into());
    expect_err(
        &s.0,
        &["model_type \"siglip2\"", "NaFlex", "not supported yet"],
    );
}

/// A SigLIP directory without its SentencePiece file names it.
#[test]
fn siglip_without_its_tokenizer() {
    let s = Scratch::copy("siglip-spm", "siglip-a");
    std::fs::remove_file(s.0.join("spiece.model")).unwrap();
    expect_err(&s.0, &["spiece.model", "SentencePiece"]);
}

/// open_clip options that change the math and are not implemented are refused by name.
#[test]
fn unsupported_open_clip_options() {
    let cases: [(&str, &str, serde_json::Value, &str); 5] = [
        (
            "vision_cfg",
            "ls_init_value",
            1e-5.into(),
            "model_cfg.vision_cfg.ls_init_value",
        ),
        (
            "vision_cfg",
            "attentional_pool",
            true.into(),
            "model_cfg.vision_cfg.attentional_pool",
        ),
        (
            "text_cfg",
            "pool_type",
            "first".into(),
            "model_cfg.text_cfg.pool_type",
        ),
        (
            "text_cfg",
            "hf_model_name",
            "roberta-base".into(),
            "model_cfg.text_cfg.hf_model_name",
        ),
        (
            "text_cfg",
            "some_new_option",
            1.into(),
            "model_cfg.text_cfg.some_new_option: unknown option",
        ),
    ];
    for (i, (tower, key, value, want)) in cases.into_iter().enumerate() {
        let s = Scratch::copy(&format!("oc-opt-{i}"), OC);
        s.edit_json("open_clip_config.json", |v| {
            v["model_cfg"][tower][key] = value
        });
        expect_err(&s.0, &["open_clip_config.json", want]);
    }
    let s = Scratch::copy("oc-resnet", OC);
    s.edit_json("open_clip_config.json", |v| {
        v["model_cfg"]["vision_cfg"]["layers"] = serde_json::json!([3, 4, 6, 3])
    });
    expect_err(&s.0, &["ModifiedResNet"]);
}

/// A model whose token table is smaller than the tokenizer's vocabulary is refused up front.
#[test]
fn vocab_mismatch() {
    let s = Scratch::copy("vocab", HF);
    s.edit_json("config.json", |v| {
        v["text_config"]["vocab_size"] = 100.into()
    });
    s.edit_weights("model.safetensors", |t| {
        let e = t["text_model.embeddings.token_embedding.weight"]
            .narrow(0, 0, 100)
            .unwrap()
            .contiguous()
            .unwrap();
        t.insert("text_model.embeddings.token_embedding.weight".into(), e);
    });
    expect_err(
        &s.0,
        &[
            "tokenizer.json",
            "tokens but the model's token embedding has only 100 rows",
        ],
    );
}

// Layout variants that must load (and their own failure modes).

fn image_embeds_match(dir: &Path) {
    let m = checkpoint::load(dir, &Device::Cpu).unwrap();
    let exp = candle_core::safetensors::load(
        fixtures().join(format!("{HF}.expected.safetensors")),
        &Device::Cpu,
    )
    .unwrap();
    let e = m.model.vision.forward(&exp["image_pixels"]).unwrap();
    let d: f32 = e
        .sub(&exp["image_embeds"])
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar()
        .unwrap();
    assert!(d <= 1e-5, "image embeddings off by {d}");
}

/// `model.safetensors.index.json` + shards, as transformers writes for large models.
#[test]
fn sharded_hf_weights() {
    let s = Scratch::copy("sharded", HF);
    let all = candle_core::safetensors::load(s.path("model.safetensors"), &Device::Cpu).unwrap();
    std::fs::remove_file(s.path("model.safetensors")).unwrap();
    let mut names: Vec<&String> = all.keys().collect();
    names.sort();
    let mut map = serde_json::Map::new();
    for (i, chunk) in names.chunks(names.len() / 2 + 1).enumerate() {
        let file = format!("model-0000{}-of-00002.safetensors", i + 1);
        let part: HashMap<String, Tensor> = chunk
            .iter()
            .map(|n| ((*n).clone(), all[*n].clone()))
            .collect();
        candle_core::safetensors::save(&part, s.path(&file)).unwrap();
        for n in chunk {
            map.insert((*n).clone(), file.clone().into());
        }
    }
    let index = serde_json::json!({"metadata": {}, "weight_map": map});
    std::fs::write(s.path("model.safetensors.index.json"), index.to_string()).unwrap();
    image_embeds_match(&s.0);

    std::fs::remove_file(s.path("model-00002-of-00002.safetensors")).unwrap();
    expect_err(
        &s.0,
        &[
            "model-00002-of-00002.safetensors",
            "missing file",
            "model.safetensors.index.json",
        ],
    );
}

/// Old HF configs carry `text_config_dict`/`vision_config_dict`; like transformers, they win.
#[test]
fn legacy_config_dicts() {
    let s = Scratch::copy("legacy", HF);
    s.edit_json("config.json", |v| {
        v["vision_config"]["hidden_act"] = "gelu_new".into();
        v["vision_config_dict"] = serde_json::json!({"hidden_act": "quick_gelu"});
    });
    image_embeds_match(&s.0);
}

/// A preprocessor that crops to another size than the vision tower takes is refused at load.
#[test]
fn preprocess_size_mismatch() {
    let s = Scratch::copy("ppsize", HF);
    s.edit_json("preprocessor_config.json", |v| {
        v["crop_size"] = serde_json::json!({"height": 40, "width": 40})
    });
    expect_err(
        &s.0,
        &["preprocessor_config.json", "produces 40x40", "takes 32x32"],
    );
}

//! SigLIP parity with transformers' `SiglipModel` on the random-weight checkpoints
//! fixtures/models/siglip-{a,b} (two geometries), and of the attribution engine with an
//! independent float64 autograd computation of the same integrated Jacobians. Fixtures:
//! fixtures/siglip (scripts/fixtures/siglip.py).
//!
//! What is fed is what transformers' own processor makes: the tokenizer's ids (every caption
//! padded to the context; the model reads them without an attention mask, as SigLIP was
//! trained) and the Pillow-backend image processor's pixels from the committed PNGs.

mod support;

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};
use pairlens::attribution::{image_side, text_side, Mode, Settings};
use pairlens::io::checkpoint::CheckpointFormat;
use pairlens::io::image::decode_file;
use pairlens::io::tokenizer::Encoded;
use pairlens::model::ClipModel;
use pairlens::{Explainer, ModelSource, NoProgress};
use support::fixtures;

const MODELS: [&str; 2] = ["siglip-a", "siglip-b"];

struct Fixture {
    name: &'static str,
    explainer: Explainer,
    tensors: HashMap<String, Tensor>,
    meta: serde_json::Value,
}

fn fixture(name: &'static str) -> Fixture {
    let dir = fixtures().join("models").join(name);
    let explainer = Explainer::open(ModelSource::Dir(dir), &Device::Cpu)
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    let base = fixtures().join("siglip");
    let tensors =
        candle_core::safetensors::load(base.join(format!("{name}.safetensors")), &Device::Cpu)
            .unwrap();
    let meta =
        serde_json::from_str(&std::fs::read_to_string(base.join(format!("{name}.json"))).unwrap())
            .unwrap();
    Fixture {
        name,
        explainer,
        tensors,
        meta,
    }
}

impl Fixture {
    fn model(&self) -> &ClipModel {
        self.explainer.model()
    }

    fn get(&self, key: &str) -> &Tensor {
        self.tensors
            .get(key)
            .unwrap_or_else(|| panic!("{}: fixture lacks {key}", self.name))
    }

    fn ids(&self, key: &str) -> Vec<u32> {
        let ids = self.get(key).to_vec1::<i64>().unwrap();
        ids.into_iter().map(|i| i as u32).collect()
    }

    fn captions(&self) -> Vec<String> {
        let list = self.meta["captions"].as_array().unwrap();
        list.iter()
            .map(|c| c["text"].as_str().unwrap().to_string())
            .collect()
    }

    fn encoded(&self, key: &str) -> Encoded {
        let ids = self.ids(key);
        Encoded {
            len: ids.len(),
            tokens: ids.iter().map(|i| i.to_string()).collect(),
            ids,
        }
    }

    fn layers(&self, tower: &str) -> Vec<usize> {
        let l = self.meta["layers"][tower].as_array().unwrap();
        l.iter().map(|v| v.as_u64().unwrap() as usize).collect()
    }
}

fn max_abs(t: &Tensor) -> f32 {
    let t = t.to_dtype(DType::F32).unwrap();
    t.abs().unwrap().max_all().unwrap().to_scalar().unwrap()
}

/// Largest difference over the reference's largest value (at least 1).
fn rel(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims());
    let d = (a.to_dtype(DType::F32).unwrap() - b.to_dtype(DType::F32).unwrap()).unwrap();
    max_abs(&d) / max_abs(b).max(1.0)
}

/// Largest difference over the reference's largest value (the attribution bar).
fn rel_to_max(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims());
    let d = (a.to_dtype(DType::F32).unwrap() - b.to_dtype(DType::F32).unwrap()).unwrap();
    max_abs(&d) / max_abs(b).max(1e-30)
}

/// The directory loads as a SigLIP model, its tokenizer makes the processor's ids, and its
/// preprocessing the Pillow backend's pixels.
#[test]
fn inputs_equal_the_processors() {
    for name in MODELS {
        let f = fixture(name);
        assert_eq!(f.explainer.format(), CheckpointFormat::HfSiglip, "{name}");
        for (c, caption) in f.captions().iter().enumerate() {
            let ours = f.explainer.encode(caption, false).unwrap();
            assert_eq!(
                ours.ids,
                f.ids(&format!("cap{c}_ids")),
                "{name}: {caption:?}"
            );
        }
        let reference = f.explainer.tokenizer().unwrap().reference(1);
        assert_eq!(
            reference.ids,
            f.ids("txt_ref_ids"),
            "{name}: text reference"
        );
        for (i, image) in f.meta["images"].as_array().unwrap().iter().enumerate() {
            let path = fixtures()
                .join("siglip")
                .join(image["file"].as_str().unwrap());
            let decoded = decode_file(&path).unwrap();
            let ours = f.explainer.preprocess(&decoded).unwrap().pixels;
            let want = f.get(&format!("img{i}_pixels"));
            let d = max_abs(&(ours - want).unwrap());
            assert!(d < 1e-6, "{name} image {i}: pixels differ by {d:e}");
        }
    }
}

/// Pooled embeddings (1e-5), the states entering every layer, and the model's logits.
#[test]
fn forward_equals_transformers() {
    for name in MODELS {
        let f = fixture(name);
        let m = f.model();
        let text_layers = m.text.config.transformer.layers;
        let image_layers = m.vision.config.transformer.layers;
        let mut worst = 0f32;
        let mut check = |what: String, ours: &Tensor, want: &Tensor| {
            let e = rel(ours, want);
            worst = worst.max(e);
            assert!(e < 1e-5, "{name} {what}: {e:e}");
        };
        let captions = f.captions().len();
        let images = f.meta["images"].as_array().unwrap().len();
        let mut text = Vec::new();
        for c in 0..captions {
            let ids = f.ids(&format!("cap{c}_ids"));
            let e = m.embed_text(&ids).unwrap();
            check(
                format!("caption {c} embedding"),
                &e,
                f.get(&format!("cap{c}_embedding")),
            );
            let batch = Tensor::from_slice(&ids, (1, ids.len()), &Device::Cpu).unwrap();
            for l in 0..=text_layers {
                let h = m.text.hidden_at(l, &batch).unwrap().squeeze(0).unwrap();
                check(
                    format!("caption {c} hidden {l}"),
                    &h,
                    f.get(&format!("cap{c}_hidden{l}")),
                );
            }
            text.push(e);
        }
        let mut vision = Vec::new();
        for i in 0..images {
            let pixels = f.get(&format!("img{i}_pixels"));
            let e = m.embed_image(pixels).unwrap();
            check(
                format!("image {i} embedding"),
                &e,
                f.get(&format!("img{i}_embedding")),
            );
            let batch = pixels.unsqueeze(0).unwrap();
            for l in 0..=image_layers {
                let h = m.vision.hidden_at(l, &batch).unwrap().squeeze(0).unwrap();
                check(
                    format!("image {i} hidden {l}"),
                    &h,
                    f.get(&format!("img{i}_hidden{l}")),
                );
            }
            vision.push(e);
        }
        let logits = f.get("logits_per_text").to_vec2::<f32>().unwrap();
        for (c, t) in text.iter().enumerate() {
            for (i, v) in vision.iter().enumerate() {
                let cos = pairlens::attribution::cosine(t, v).unwrap();
                let d = (m.logit(cos) - logits[c][i]).abs();
                assert!(d < 1e-4, "{name} logit {c},{i}: {d:e}");
            }
        }
        eprintln!("{name}: forward parity, worst {worst:.2e}");
    }
}

/// U and V of every caption, image, layer ({0, middle, last}, and the image tower's pooling
/// head), N ∈ {1, 10} and mode against the float64 autograd reference: within 1e-4 of the
/// reference's max-abs; the path ends too.
#[test]
fn tower_contractions_equal_autograd() {
    for name in MODELS {
        let f = fixture(name);
        let m = f.model();
        let reference = f.encoded("txt_ref_ids");
        let mut worst = 0f32;
        for mode in [Mode::Exclip, Mode::Cosine] {
            let tag = match mode {
                Mode::Exclip => "exclip",
                Mode::Cosine => "cosine",
            };
            for n in [1, 10] {
                for l in f.layers("text") {
                    let settings = Settings {
                        text_layer: l,
                        steps: n,
                        mode,
                        max_batch_elements: 3000,
                        ..Settings::default()
                    };
                    for c in 0..f.captions().len() {
                        let caption = f.encoded(&format!("cap{c}_ids"));
                        let side =
                            text_side(m, &caption, &reference, &settings, &mut NoProgress).unwrap();
                        let want = f.get(&format!("cap{c}_U_l{l}_n{n}_{tag}"));
                        let e = rel_to_max(&side.contributions, want);
                        worst = worst.max(e);
                        assert!(
                            e < 1e-4,
                            "{name} caption {c} layer {l} N={n} {tag}: U {e:e}"
                        );
                        let end = f.get(&format!("cap{c}_f_ref_l{l}"));
                        assert!(rel(&side.path_end, end) < 1e-5, "{name} caption {c} f(r)");
                    }
                }
                for l in f.layers("image") {
                    let settings = Settings {
                        image_layer: l,
                        steps: n,
                        mode,
                        max_batch_elements: 3000,
                        ..Settings::default()
                    };
                    for i in 0..f.meta["images"].as_array().unwrap().len() {
                        let pixels = f.get(&format!("img{i}_pixels"));
                        let side = image_side(m, pixels, &settings, &mut NoProgress).unwrap();
                        let want = f.get(&format!("img{i}_V_l{l}_n{n}_{tag}"));
                        let e = rel_to_max(&side.contributions, want);
                        worst = worst.max(e);
                        assert!(e < 1e-4, "{name} image {i} layer {l} N={n} {tag}: V {e:e}");
                        let end = f.get(&format!("img{i}_g_ref"));
                        assert!(rel(&side.path_end, end) < 1e-5, "{name} image {i} g(r)");
                    }
                }
            }
        }
        eprintln!("{name}: U, V vs float64 autograd, worst {worst:.2e} of max-abs");
    }
}

/// The interaction matrices A (rows: every text position; columns: every patch, no CLS) of the
/// committed (caption, image, text layer, image layer) pairs through the explainer, and the
/// conservation identity's residual, which shrinks with N as the reference's does.
#[test]
fn interactions_and_conservation_equal_autograd() {
    for name in MODELS {
        let f = fixture(name);
        let mut worst = 0f32;
        for pair in f.meta["pairs"].as_array().unwrap() {
            let p: Vec<usize> = pair
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap() as usize)
                .collect();
            let (c, i, tl, il) = (p[0], p[1], p[2], p[3]);
            for (mode, tag) in [(Mode::Exclip, "exclip"), (Mode::Cosine, "cosine")] {
                for n in [1, 10] {
                    let settings = Settings {
                        text_layer: tl,
                        image_layer: il,
                        steps: n,
                        mode,
                        ..f.explainer.default_settings()
                    };
                    let ex = &f.explainer;
                    let image = ex
                        .image(f.get(&format!("img{i}_pixels")), &settings)
                        .unwrap();
                    let caption = f.encoded(&format!("cap{c}_ids"));
                    let e = ex
                        .explain_encoded(&image, &[caption], &mut NoProgress)
                        .unwrap()
                        .remove(0);
                    assert!(!e.class_token, "{name}: SigLIP has no class token");
                    let key = format!("A_c{c}_i{i}_t{tl}_v{il}_n{n}_{tag}");
                    let err = rel_to_max(&e.interactions, f.get(&key));
                    worst = worst.max(err);
                    assert!(err < 1e-4, "{name} {key}: {err:e}");
                    let sweep = &f.meta["conservation"][format!("A_c{c}_i{i}_t{tl}_v{il}_{tag}")];
                    let ns: Vec<u64> = sweep["N"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|v| v.as_u64().unwrap())
                        .collect();
                    let k = ns.iter().position(|&x| x == n as u64).unwrap();
                    let want = sweep["residual"][k].as_f64().unwrap() as f32;
                    // The fixture's residual is ΣA minus the limit; ours the limit minus ΣA.
                    let d = (e.residual + want).abs();
                    assert!(
                        d < 1e-4,
                        "{name} {key}: residual {} vs {}",
                        e.residual,
                        -want
                    );
                }
            }
        }
        eprintln!("{name}: A vs float64 autograd, worst {worst:.2e} of max-abs");
    }
}

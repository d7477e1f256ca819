//! The first-order baselines of the grounding evaluation on a tiny random model:
//! - ig: the cheap route (unit text embedding · cosine-mode image side) equals a direct
//!   reverse-mode integrated gradients (candle autograd at every path point), and its sum over
//!   the image tokens tends to cos(t, g(y)) − cos(t, g(r_y)) as N grows (Riemann error O(1/N));
//! - similarity: unit rows, the span/region queries on a hand-made map, and at the top of both
//!   towers the (EOT, CLS) entry is the model's own cosine score.

use candle_core::{DType, Device, Tensor, Var};
use pairlens::attribution::{ImageReference, Settings};
use pairlens::grounding::baselines::{self, TokenPatchMap};
use pairlens::io::tokenizer::Encoded;
use pairlens::model::Rng;
use pairlens::model::{ClipConfig, ClipModel, ClipWeights};

fn model() -> ClipModel {
    let cfg = ClipConfig::tiny();
    let w = ClipWeights::random(&cfg, 7).unwrap();
    ClipModel::new(cfg, w).unwrap()
}

fn pixels() -> Tensor {
    Rng::new(11).tensor(&[3, 8, 12], 0.0, 1.0).unwrap()
}

fn unit(v: &Tensor) -> Tensor {
    let n = v.sqr().unwrap().sum_all().unwrap().sqrt().unwrap();
    v.broadcast_div(&n).unwrap()
}

fn dot(a: &Tensor, b: &Tensor) -> f32 {
    (a * b)
        .unwrap()
        .sum_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

fn caption() -> Encoded {
    // SOT(38) … EOT(39), context 8.
    let ids = vec![38, 5, 17, 9, 39, 0, 0, 0];
    Encoded {
        ids,
        len: 5,
        tokens: ["<sot>", "a", "b", "c", "<eot>"].map(String::from).to_vec(),
    }
}

/// Direct IG by reverse mode: (1/N) Σ_n ∇_h cos(t, g(h_n)) ⊙ (y − r), summed over the width.
fn reverse_mode_ig(
    model: &ClipModel,
    px: &Tensor,
    layer: usize,
    steps: usize,
    t: &Tensor,
) -> Vec<f32> {
    let v = &model.vision;
    let batch = Tensor::stack(&[px, &px.zeros_like().unwrap()], 0).unwrap();
    let hidden = v.hidden_at(layer, &batch).unwrap();
    let (y, r) = (hidden.get(0).unwrap(), hidden.get(1).unwrap());
    let delta = (&y - &r).unwrap();
    let alphas = Settings {
        steps,
        ..Settings::default()
    }
    .alphas();
    let mut total = Tensor::zeros(delta.dims(), DType::F32, &Device::Cpu).unwrap();
    for &a in &alphas {
        let h = ((&delta * a as f64).unwrap() + &r).unwrap();
        let var = Var::from_tensor(&h.unsqueeze(0).unwrap()).unwrap();
        let e = v
            .embed_from(layer, var.as_tensor())
            .unwrap()
            .squeeze(0)
            .unwrap();
        let n = e.sqr().unwrap().sum_all().unwrap().sqrt().unwrap();
        let cos = (&e * t)
            .unwrap()
            .sum_all()
            .unwrap()
            .broadcast_div(&n)
            .unwrap();
        let g = cos.backward().unwrap();
        let grad = g.get(var.as_tensor()).unwrap().squeeze(0).unwrap();
        total = (total + (grad * &delta).unwrap()).unwrap();
    }
    (total.sum(1).unwrap() / alphas.len() as f64)
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
}

#[test]
fn ig_matches_reverse_mode_and_completeness() {
    let m = model();
    let px = pixels();
    let t = unit(&Rng::new(5).tensor(&[12], 0.0, 1.0).unwrap());
    for layer in [0, 2] {
        let settings = Settings {
            image_layer: layer,
            steps: 8,
            ..Settings::for_model(&m)
        };
        let side = baselines::ig_image_side(&m, &px, &settings).unwrap();
        let ig = baselines::ig_attributions(&side, &t).unwrap();
        let direct = reverse_mode_ig(&m, &px, layer, 8, &t);
        assert_eq!(ig.len(), 1 + 6, "CLS + 2×3 patches");
        let scale = direct.iter().fold(0f32, |a, v| a.max(v.abs()));
        let err = ig
            .iter()
            .zip(&direct)
            .fold(0f32, |a, (x, y)| a.max((x - y).abs()))
            / scale;
        assert!(err < 1e-4, "layer {layer}: forward vs reverse IG {err:.2e}");

        // Completeness: Σ IG → cos(t, g(y)) − cos(t, g(r_y)) with error O(1/N).
        let gap = |steps: usize| {
            let s = Settings {
                image_layer: layer,
                steps,
                ..Settings::for_model(&m)
            };
            let side = baselines::ig_image_side(&m, &px, &s).unwrap();
            let sum: f32 = baselines::ig_attributions(&side, &t).unwrap().iter().sum();
            let want = dot(&t, &unit(&side.embedding)) - dot(&t, &unit(&side.path_end));
            ((sum - want).abs(), want.abs())
        };
        let (e64, want) = gap(64);
        let (e256, _) = gap(256);
        let (e1024, _) = gap(1024);
        eprintln!("layer {layer}: completeness residual {e64:.2e} (N=64) {e256:.2e} (N=256) {e1024:.2e} (N=1024) of {want:.3}");
        assert!(
            e1024 < 0.005 * want,
            "layer {layer}: residual {e1024} of {want}"
        );
        assert!(
            e256 < e64 / 2.5 && e1024 < e256 / 2.5,
            "layer {layer}: residual not O(1/N): {e64} at N=64, {e256} at N=256, {e1024} at N=1024"
        );
    }
    // A non-default image reference is honoured (the path ends there).
    let reference = Rng::new(9).tensor(&[3, 8, 12], 0.0, 1.0).unwrap();
    let s = Settings {
        image_reference: ImageReference::Tensor(reference),
        steps: 2,
        ..Settings::for_model(&m)
    };
    let a =
        baselines::ig_attributions(&baselines::ig_image_side(&m, &px, &s).unwrap(), &t).unwrap();
    let b = baselines::ig_attributions(
        &baselines::ig_image_side(
            &m,
            &px,
            &Settings {
                steps: 2,
                ..Settings::for_model(&m)
            },
        )
        .unwrap(),
        &t,
    )
    .unwrap();
    assert_ne!(a, b);
}

#[test]
fn token_patch_map_queries_by_hand() {
    // 3 tokens × (CLS + 2×2 patches).
    let values = Tensor::new(
        &[
            [9.0f32, 1.0, 2.0, 3.0, 4.0],
            [9.0, 0.5, -1.0, 0.0, 2.0],
            [9.0, 0.0, 0.0, 1.0, 0.0],
        ],
        &Device::Cpu,
    )
    .unwrap();
    let m = TokenPatchMap {
        values,
        grid: (2, 2),
    };
    assert_eq!(m.span_heatmap(0, 2).unwrap(), vec![1.5, 1.0, 3.0, 6.0]);
    assert_eq!(m.span_heatmap(2, 3).unwrap(), vec![0.0, 0.0, 1.0, 0.0]);
    assert!(m.span_heatmap(2, 4).is_err());
    // Region: all of patch 0, half of patch 2.
    assert_eq!(
        m.region_token_scores(&[1.0, 0.0, 0.5, 0.0]).unwrap(),
        vec![2.5, 0.5, 0.5]
    );
    assert!(m.region_token_scores(&[1.0]).is_err());
}

#[test]
fn similarity_is_a_cosine_map_and_the_top_corner_is_the_score() {
    let m = model();
    let px = pixels();
    let cap = caption();
    let image = baselines::image_token_embeddings(&m, &px, 1).unwrap();
    let map = baselines::similarity(&m, &cap, 1, &image).unwrap();
    assert_eq!(map.values.dims(), [5, 7], "SOT..EOT × CLS + patches");
    let v = map.values.to_vec2::<f32>().unwrap();
    assert!(v.iter().flatten().all(|x| x.abs() <= 1.0 + 1e-5));
    // Entry (s, t) is the cosine of the two projected rows.
    let t = baselines::text_token_embeddings(&m, &cap, 1).unwrap();
    assert!((dot(&t.get(2).unwrap(), &image.get(3).unwrap()) - v[2][3]).abs() < 1e-6);
    // After the last block, EOT's and CLS's rows are the embeddings: M[EOT, CLS] = the score.
    let layers = m.text.config.transformer.layers;
    let top = baselines::similarity(
        &m,
        &cap,
        layers,
        &baselines::image_token_embeddings(&m, &px, layers).unwrap(),
    )
    .unwrap();
    let score = dot(
        &baselines::text_embedding(&m, &cap).unwrap(),
        &unit(
            &m.vision
                .forward(&px.unsqueeze(0).unwrap())
                .unwrap()
                .squeeze(0)
                .unwrap(),
        ),
    );
    let corner = top.values.to_vec2::<f32>().unwrap()[4][0];
    assert!((corner - score).abs() < 1e-5, "{corner} vs {score}");
}

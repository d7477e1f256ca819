//! Whole-tower forward-mode derivatives, split at every block.
//!
//! - `jvp_from` vs central finite differences of `embed_from`, in f64 (h = 1e-5: truncation
//!   ~1e-10, rounding ~1e-11, so 1e-7 relative to the largest entry is a strict bar; a wrong
//!   rule is off by O(1)); the f32 JVP vs the f64 JVP at 1e-4.
//! - SingleRow tangents equal their dense equivalent (1e-12 in f64).
//! - forward mode vs candle's reverse mode: c·(J v) = (Jᵀc)·v (1e-10 in f64).
//! - splitting at any block, and computing only the pooled row in the last block, does not
//!   change the forward.
//!
//! The derivative checks run on both families: CLIP ([`ClipConfig::tiny`]) and SigLIP
//! ([`ClipConfig::tiny_siglip`]: bidirectional text pooled at the last position, an image tower
//! whose attention-pooling head makes the embedding, split up to the head's input).

use candle_core::{DType, Device, Tensor, Var};
use pairlens::model::Rng;
use pairlens::model::{ClipConfig, ClipModel, ClipWeights, Tangents, TextTower, VisionTower};

const H: f64 = 1e-5;

fn model(dtype: DType) -> (TextTower, VisionTower) {
    model_of(ClipConfig::tiny(), dtype)
}

fn model_of(cfg: ClipConfig, dtype: DType) -> (TextTower, VisionTower) {
    let w = ClipWeights::random(&cfg, 7)
        .unwrap()
        .to_dtype(dtype)
        .unwrap();
    (
        TextTower::new(cfg.text, w.text).unwrap(),
        VisionTower::new(cfg.vision, w.vision).unwrap(),
    )
}

fn rel_err(a: &Tensor, b: &Tensor) -> f64 {
    let a = a
        .to_dtype(DType::F64)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f64>()
        .unwrap();
    let b = b
        .to_dtype(DType::F64)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f64>()
        .unwrap();
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(1e-30f64, |m, v| m.max(v.abs()));
    a.iter()
        .zip(&b)
        .fold(0.0f64, |m, (x, y)| m.max((x - y).abs()))
        / scale
}

fn rand(rng: &mut Rng, shape: &[usize], dtype: DType) -> Tensor {
    rng.tensor(shape, 0.0, 1.0)
        .unwrap()
        .to_dtype(dtype)
        .unwrap()
}

/// Text ids: SOT(38) … EOT(39) then padding, two captions of different lengths.
fn ids() -> (Tensor, Vec<usize>) {
    let rows: [[u32; 8]; 2] = [[38, 5, 17, 9, 39, 0, 0, 0], [38, 22, 39, 0, 0, 0, 0, 0]];
    let t = Tensor::new(&rows, &Device::Cpu).unwrap();
    (t, vec![4, 2])
}

/// The families the derivative checks run on, with their text pooling: CLIP at EOT, SigLIP at
/// the last position (padding here).
fn families() -> [(&'static str, ClipConfig, Vec<usize>); 2] {
    [
        ("clip", ClipConfig::tiny(), ids().1),
        ("siglip", ClipConfig::tiny_siglip(), vec![7, 7]),
    ]
}

fn pixels(dtype: DType) -> Tensor {
    rand(&mut Rng::new(11), &[2, 3, 8, 12], dtype)
}

/// Central differences of `embed(hidden)` along each dense tangent `[T, P, S, W]`.
fn fd(embed: &dyn Fn(&Tensor) -> Tensor, hidden: &Tensor, dense: &Tensor) -> Tensor {
    let cols: Vec<Tensor> = (0..dense.dim(0).unwrap())
        .map(|t| {
            let d = dense.get(t).unwrap();
            let plus = embed(&(hidden + (&d * H).unwrap()).unwrap());
            let minus = embed(&(hidden - (&d * H).unwrap()).unwrap());
            ((plus - minus).unwrap() / (2.0 * H)).unwrap()
        })
        .collect();
    Tensor::stack(&cols, 0).unwrap()
}

/// A dense tangent and a single-row tangent (rows cover first, middle, pooled and padding rows).
fn tangents(rng: &mut Rng, p: usize, s: usize, w: usize, dtype: DType) -> (Tangents, Tangents) {
    let dense = Tangents::Dense(rand(rng, &[3, p, s, w], dtype));
    let rows: Vec<usize> = [0, 2, 4, s - 1, 1]
        .into_iter()
        .map(|r| r.min(s - 1))
        .collect();
    let values = rand(rng, &[rows.len(), p, w], dtype);
    (dense, Tangents::SingleRow { rows, values })
}

/// `jvp(layer, hidden, tangents, dtype)` of one tower.
type JvpFn<'a> = &'a dyn Fn(usize, &Tensor, &Tangents, DType) -> (Tensor, Tensor);

fn check_tower(
    name: &str,
    layers: usize,
    hidden_at: &dyn Fn(usize, DType) -> Tensor,
    embed: &dyn Fn(usize, &Tensor, DType) -> Tensor,
    jvp: JvpFn,
) {
    let mut rng = Rng::new(99);
    // `layers`: after the last block (only the pooled row moves), or a pooling head's input.
    for layer in [0, 1, layers - 1, layers] {
        let h64 = hidden_at(layer, DType::F64);
        let (p, s, w) = h64.dims3().unwrap();
        let (dense, single) = tangents(&mut rng, p, s, w, DType::F64);
        for tan in [&dense, &single] {
            let kind = if matches!(tan, Tangents::Dense(_)) {
                "dense"
            } else {
                "single-row"
            };
            let (e, ed) = jvp(layer, &h64, tan, DType::F64);
            assert!(
                rel_err(&e, &embed(layer, &h64, DType::F64)) < 1e-14,
                "{name} {layer} {kind}: primal"
            );
            let want = fd(
                &|x| embed(layer, x, DType::F64),
                &h64,
                &tan.to_dense(s).unwrap(),
            );
            let err = rel_err(&ed, &want);
            eprintln!("{name} layer {layer} {kind}: f64 JVP vs FD {err:.2e}");
            assert!(
                err < 1e-7,
                "{name} layer {layer} {kind}: JVP vs FD {err:.2e}"
            );
            if let Tangents::SingleRow { .. } = tan {
                let (_, ed_dense) = jvp(
                    layer,
                    &h64,
                    &Tangents::Dense(tan.to_dense(s).unwrap()),
                    DType::F64,
                );
                let err = rel_err(&ed, &ed_dense);
                assert!(
                    err < 1e-12,
                    "{name} layer {layer}: single-row vs dense {err:.2e}"
                );
            }
            // f32 against the f64 rule.
            let h32 = hidden_at(layer, DType::F32);
            let tan32 = match tan {
                Tangents::Dense(t) => Tangents::Dense(t.to_dtype(DType::F32).unwrap()),
                Tangents::SingleRow { rows, values } => Tangents::SingleRow {
                    rows: rows.clone(),
                    values: values.to_dtype(DType::F32).unwrap(),
                },
            };
            let (e32, ed32) = jvp(layer, &h32, &tan32, DType::F32);
            let (ee, ede) = (rel_err(&e32, &e), rel_err(&ed32, &ed));
            eprintln!("{name} layer {layer} {kind}: f32 vs f64 primal {ee:.2e} tangent {ede:.2e}");
            assert!(
                ee < 1e-5 && ede < 1e-4,
                "{name} layer {layer} {kind}: f32 {ee:.2e} {ede:.2e}"
            );
        }
    }
}

#[test]
fn text_jvp_matches_finite_differences() {
    for (family, cfg, pool) in families() {
        let (t64, _) = model_of(cfg.clone(), DType::F64);
        let (t32, _) = model_of(cfg, DType::F32);
        let tower = |d: DType| if d == DType::F64 { &t64 } else { &t32 };
        let ids = ids().0;
        check_tower(
            &format!("{family} text"),
            3,
            &|l, d| tower(d).hidden_at(l, &ids).unwrap(),
            &|l, h, d| tower(d).embed_from(l, h, &pool).unwrap(),
            &|l, h, tan, d| tower(d).jvp_from(l, h, tan, &pool).unwrap(),
        );
    }
}

#[test]
fn vision_jvp_matches_finite_differences() {
    for (family, cfg, _) in families() {
        let (_, v64) = model_of(cfg.clone(), DType::F64);
        let (_, v32) = model_of(cfg, DType::F32);
        let tower = |d: DType| if d == DType::F64 { &v64 } else { &v32 };
        check_tower(
            &format!("{family} vision"),
            3,
            &|l, d| tower(d).hidden_at(l, &pixels(d)).unwrap(),
            &|l, h, d| tower(d).embed_from(l, h).unwrap(),
            &|l, h, tan, d| tower(d).jvp_from(l, h, tan).unwrap(),
        );
    }
}

/// c·(J v) from forward mode against (Jᵀ c)·v from candle's autograd of the same forward code.
#[test]
fn forward_mode_matches_reverse_mode() {
    for (family, cfg, pool) in families() {
        forward_matches_reverse(family, cfg, &pool);
    }
}

fn forward_matches_reverse(family: &str, cfg: ClipConfig, pool: &[usize]) {
    let (text, vision) = model_of(cfg, DType::F64);
    let ids = ids().0;
    let mut rng = Rng::new(5);
    for layer in [0, 2, 3] {
        for tower in ["text", "vision"] {
            let hidden = if tower == "text" {
                text.hidden_at(layer, &ids).unwrap()
            } else {
                vision.hidden_at(layer, &pixels(DType::F64)).unwrap()
            };
            let (p, s, w) = hidden.dims3().unwrap();
            let var = Var::from_tensor(&hidden).unwrap();
            let e = if tower == "text" {
                text.embed_from(layer, var.as_tensor(), pool).unwrap()
            } else {
                vision.embed_from(layer, var.as_tensor()).unwrap()
            };
            let c = rand(&mut rng, e.dims(), DType::F64);
            let grads = (&e * &c).unwrap().sum_all().unwrap().backward().unwrap();
            let g = grads
                .get(var.as_tensor())
                .expect("gradient reaches the hidden states");
            let v = rand(&mut rng, &[4, p, s, w], DType::F64);
            let (_, ed) = if tower == "text" {
                text.jvp_from(layer, &hidden, &Tangents::Dense(v.clone()), pool)
                    .unwrap()
            } else {
                vision
                    .jvp_from(layer, &hidden, &Tangents::Dense(v.clone()))
                    .unwrap()
            };
            let fwd = ed.broadcast_mul(&c).unwrap().sum((1, 2)).unwrap();
            let rev = v.broadcast_mul(g).unwrap().sum((1, 2, 3)).unwrap();
            let err = rel_err(&fwd, &rev);
            eprintln!("{family} {tower} layer {layer}: forward vs reverse {err:.2e}");
            assert!(
                err < 1e-10,
                "{family} {tower} layer {layer}: forward vs reverse {err:.2e}"
            );
        }
    }
}

/// Reverse mode through the embeddings too (ids are discrete; pixels are not): autograd from
/// pixels equals forward mode pushed through `hidden_at(0)`'s Jacobian by finite differences.
#[test]
fn reverse_mode_through_patch_embedding() {
    let (_, vision) = model(DType::F64);
    let px = pixels(DType::F64);
    let var = Var::from_tensor(&px).unwrap();
    let e = vision.forward(var.as_tensor()).unwrap();
    let c = rand(&mut Rng::new(3), e.dims(), DType::F64);
    let grads = (&e * &c).unwrap().sum_all().unwrap().backward().unwrap();
    let g = grads.get(var.as_tensor()).unwrap();
    let v = rand(&mut Rng::new(4), px.dims(), DType::F64);
    let h = |x: &Tensor| vision.hidden_at(0, x).unwrap();
    let hd = ((h(&(&px + (&v * H).unwrap()).unwrap()) - h(&(&px - (&v * H).unwrap()).unwrap()))
        .unwrap()
        / (2.0 * H))
        .unwrap();
    let (_, ed) = vision
        .jvp_from(0, &h(&px), &Tangents::Dense(hd.unsqueeze(0).unwrap()))
        .unwrap();
    let fwd = ed.broadcast_mul(&c).unwrap().sum_all().unwrap();
    let rev = (&v * g).unwrap().sum_all().unwrap();
    assert!(rel_err(&fwd, &rev) < 1e-7, "{}", rel_err(&fwd, &rev));
}

#[test]
fn split_point_and_pooled_last_block_do_not_change_the_forward() {
    let (text, vision) = model(DType::F32);
    let (ids, pool) = ids();
    let full_t = text.forward(&ids, &pool).unwrap();
    let px = pixels(DType::F32);
    let full_v = vision.forward(&px).unwrap();
    for layer in 0..=3 {
        let et = text
            .embed_from(layer, &text.hidden_at(layer, &ids).unwrap(), &pool)
            .unwrap();
        assert!(rel_err(&et, &full_t) < 1e-6, "text layer {layer}");
        let ev = vision
            .embed_from(layer, &vision.hidden_at(layer, &px).unwrap())
            .unwrap();
        assert!(rel_err(&ev, &full_v) < 1e-6, "vision layer {layer}");
    }
    // Reference: all rows through every block, then pick the pooled row.
    let eps = text.config.transformer.layer_norm_eps;
    let hl = text.hidden_at(3, &ids).unwrap();
    let rows: Vec<Tensor> = pool
        .iter()
        .enumerate()
        .map(|(b, &p)| hl.get(b).unwrap().get(p).unwrap())
        .collect();
    let pooled = Tensor::stack(&rows, 0).unwrap();
    let y = pairlens::model::ops::layer_norm(&pooled, &text.weights.ln_final, eps).unwrap();
    let want = pairlens::model::ops::linear(&y, &text.weights.projection).unwrap();
    assert!(rel_err(&full_t, &want) < 1e-6);
    let hv = vision
        .hidden_at(3, &px)
        .unwrap()
        .narrow(1, 0, 1)
        .unwrap()
        .squeeze(1)
        .unwrap();
    let y = pairlens::model::ops::layer_norm(&hv, &vision.weights.ln_post, eps).unwrap();
    let want =
        pairlens::model::ops::linear(&y, vision.weights.projection.as_ref().unwrap()).unwrap();
    assert!(rel_err(&full_v, &want) < 1e-6);
}

/// The causal mask makes positions after the pooled row irrelevant: truncating is exact.
#[test]
fn text_truncation_after_eot_is_exact() {
    let (text, _) = model(DType::F32);
    let (ids, pool) = ids();
    let full = text.forward(&ids, &pool).unwrap();
    let short = text.forward(&ids.narrow(1, 0, 5).unwrap(), &pool).unwrap();
    assert!(rel_err(&short, &full) < 1e-6);
    // And the same for the JVP of a tangent living on the kept rows.
    let h = text.hidden_at(1, &ids).unwrap();
    let mut rng = Rng::new(8);
    let v = rand(&mut rng, &[2, 2, 5, 16], DType::F32);
    let pad = Tensor::zeros((2, 2, 3, 16), DType::F32, &Device::Cpu).unwrap();
    let vfull = Tensor::cat(&[&v, &pad], 2).unwrap();
    let (_, a) = text
        .jvp_from(1, &h, &Tangents::Dense(vfull), &pool)
        .unwrap();
    let (_, b) = text
        .jvp_from(1, &h.narrow(1, 0, 5).unwrap(), &Tangents::Dense(v), &pool)
        .unwrap();
    assert!(rel_err(&b, &a) < 1e-5);
}

#[test]
fn bad_arguments_are_clear_errors() {
    let (text, vision) = model(DType::F32);
    let (ids, pool) = ids();
    let h = text.hidden_at(1, &ids).unwrap();
    let msg = |r: pairlens::Result<Tensor>| match r {
        Err(e @ pairlens::Error::InvalidArgument(_)) => e.to_string(),
        Err(e) => panic!("wrong error variant: {e}"),
        Ok(_) => panic!("accepted"),
    };
    assert!(msg(text.hidden_at(4, &ids)).contains("layer 4"));
    assert!(msg(text.embed_from(1, &h, &[4, 8])).contains("pool index 8"));
    assert!(msg(text.embed_from(1, &h, &[4])).contains("pool indices"));
    assert!(msg(text.embed_from(1, &h.narrow(2, 0, 8).unwrap(), &pool)).contains("hidden states"));
    let bad_ids = Tensor::new(&[[38u32, 40, 39]], &Device::Cpu).unwrap();
    assert!(msg(text.forward(&bad_ids, &[2])).contains("token id 40"));
    assert!(msg(text.forward(&ids.to_dtype(DType::F32).unwrap(), &pool)).contains("u32"));
    let long = Tensor::zeros((1, 9), DType::U32, &Device::Cpu).unwrap();
    assert!(msg(text.forward(&long, &[0])).contains("seq <= 8"));
    assert!(
        msg(vision.forward(&Tensor::zeros((1, 3, 8, 8), DType::F32, &Device::Cpu).unwrap()))
            .contains("[B, 3, 8, 12]")
    );
    let hv = vision.hidden_at(0, &pixels(DType::F32)).unwrap();
    let t = Tangents::SingleRow {
        rows: vec![7],
        values: Tensor::zeros((1, 2, 24), DType::F32, &Device::Cpu).unwrap(),
    };
    assert!(msg(vision.jvp_from(0, &hv, &t).map(|r| r.0)).contains("row 7"));
    let t = Tangents::Dense(Tensor::zeros((1, 2, 6, 24), DType::F32, &Device::Cpu).unwrap());
    assert!(msg(vision.jvp_from(0, &hv, &t).map(|r| r.0)).contains("dense shape"));
    // Zero tangents are fine: an empty tangent block.
    let t = Tangents::Dense(Tensor::zeros((0, 2, 7, 24), DType::F32, &Device::Cpu).unwrap());
    let (e, ed) = vision.jvp_from(0, &hv, &t).unwrap();
    assert_eq!(
        (e.dims(), ed.dims()),
        (&[2usize, 12][..], &[0usize, 2, 12][..])
    );
}

#[test]
fn model_new_validates_every_shape() {
    let cfg = ClipConfig::tiny();
    let w = ClipWeights::random(&cfg, 1).unwrap();
    ClipModel::new(cfg.clone(), w.clone()).unwrap();
    let mut bad = w.clone();
    bad.vision.blocks[2].fc1.weight = Tensor::zeros((96, 23), DType::F32, &Device::Cpu).unwrap();
    let e = ClipModel::new(cfg.clone(), bad).unwrap_err().to_string();
    assert!(
        e.contains("vision.blocks.2.fc1.weight") && e.contains("[96, 24]"),
        "{e}"
    );
    let mut bad = w.clone();
    bad.text.blocks.pop();
    let e = ClipModel::new(cfg.clone(), bad).unwrap_err().to_string();
    assert!(e.contains("2 blocks"), "{e}");
    let e = ClipModel::new(cfg.clone(), w.to_dtype(DType::F64).unwrap())
        .unwrap_err()
        .to_string();
    assert!(e.contains("F64"), "{e}");
    let mut other = cfg.clone();
    other.projection_dim = 13;
    let e = ClipModel::new(other, w).unwrap_err().to_string();
    assert!(e.contains("text.projection.weight"), "{e}");
}

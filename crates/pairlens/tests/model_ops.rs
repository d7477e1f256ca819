//! Every op's tangent rule against central finite differences.
//!
//! References run in f64 with step h = 1e-5: truncation error ~h²·|f'''| ≈ 1e-10 and rounding
//! ~1e-16/h ≈ 1e-11, so an f64 tangent rule must match to 1e-7 (relative to the largest entry;
//! a wrong rule is off by O(1)). The f32 rule is then compared with the f64 rule at 1e-4
//! (f32 epsilon 6e-8 times the modest conditioning of these random inputs).

use candle_core::{DType, Device, Tensor};
use pairlens::model::ops;
use pairlens::model::Rng;
use pairlens::model::{Activation, LayerNorm, Linear};

const H: f64 = 1e-5;

fn t64(rng: &mut Rng, shape: &[usize], mean: f64, std: f64) -> Tensor {
    rng.tensor(shape, mean, std)
        .unwrap()
        .to_dtype(DType::F64)
        .unwrap()
}

/// max |a − b| / max(1, max |b|)
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
    let scale = b.iter().fold(1.0f64, |m, v| m.max(v.abs()));
    a.iter()
        .zip(&b)
        .fold(0.0f64, |m, (x, y)| m.max((x - y).abs()))
        / scale
}

/// Central differences of `f` along each tangent `xds[i]` (leading axis t), stacked on axis 0.
fn fd(f: &dyn Fn(&[Tensor]) -> Tensor, xs: &[Tensor], xds: &[Tensor]) -> Tensor {
    let t = xds[0].dim(0).unwrap();
    let cols: Vec<Tensor> = (0..t)
        .map(|i| {
            let shift = |s: f64| -> Vec<Tensor> {
                xs.iter()
                    .zip(xds)
                    .map(|(x, d)| (x + (d.get(i).unwrap() * s).unwrap()).unwrap())
                    .collect()
            };
            ((f(&shift(H)) - f(&shift(-H))).unwrap() / (2.0 * H)).unwrap()
        })
        .collect();
    Tensor::stack(&cols, 0).unwrap()
}

fn f32s(xs: &[&Tensor]) -> Vec<Tensor> {
    xs.iter().map(|x| x.to_dtype(DType::F32).unwrap()).collect()
}

#[test]
fn linear_tangent_matches_fd() {
    let mut rng = Rng::new(1);
    let l = Linear {
        weight: t64(&mut rng, &[5, 7], 0.0, 0.5),
        bias: Some(t64(&mut rng, &[5], 0.0, 0.5)),
    };
    let x = t64(&mut rng, &[2, 3, 7], 0.0, 1.0);
    let xd = t64(&mut rng, &[4, 2, 3, 7], 0.0, 1.0);
    let jvp = ops::linear_tangent(&xd, &l).unwrap();
    let want = fd(&|v| ops::linear(&v[0], &l).unwrap(), &[x], &[xd]);
    assert!(rel_err(&jvp, &want) < 1e-7, "{}", rel_err(&jvp, &want));
}

#[test]
fn layer_norm_tangent_matches_fd() {
    let mut rng = Rng::new(2);
    let ln = LayerNorm {
        weight: t64(&mut rng, &[9], 1.0, 0.3),
        bias: t64(&mut rng, &[9], 0.0, 0.3),
        eps: 1e-5,
    };
    let x = t64(&mut rng, &[2, 3, 9], 0.3, 1.5);
    let xd = t64(&mut rng, &[4, 2, 3, 9], 0.0, 1.0);
    let (_, c) = ops::layer_norm_cached(&x, &ln, 1e-5).unwrap();
    let jvp = ops::layer_norm_tangent(&c, &xd, &ln).unwrap();
    let want = fd(
        &|v| ops::layer_norm(&v[0], &ln, 1e-5).unwrap(),
        std::slice::from_ref(&x),
        std::slice::from_ref(&xd),
    );
    assert!(rel_err(&jvp, &want) < 1e-7, "{}", rel_err(&jvp, &want));

    let ln32 = LayerNorm {
        weight: ln.weight.to_dtype(DType::F32).unwrap(),
        bias: ln.bias.to_dtype(DType::F32).unwrap(),
        eps: 1e-5,
    };
    let v = f32s(&[&x, &xd]);
    let (_, c32) = ops::layer_norm_cached(&v[0], &ln32, 1e-5).unwrap();
    let jvp32 = ops::layer_norm_tangent(&c32, &v[1], &ln32).unwrap();
    assert!(rel_err(&jvp32, &jvp) < 1e-4, "{}", rel_err(&jvp32, &jvp));

    // Row selection of the cache (single-row tangents) lines up with the full cache.
    let rows = Tensor::new(&[2u32, 0, 1, 2], &Device::Cpu).unwrap();
    let cr = c.select_rows(&rows).unwrap();
    let vals = t64(&mut rng, &[4, 2, 9], 0.0, 1.0);
    let got = ops::layer_norm_tangent(&cr, &vals, &ln).unwrap();
    for (t, r) in [2usize, 0, 1, 2].into_iter().enumerate() {
        let dense = vals
            .get(t)
            .unwrap()
            .unsqueeze(1)
            .unwrap()
            .broadcast_as((2, 3, 9))
            .unwrap()
            .contiguous()
            .unwrap();
        let full = ops::layer_norm_tangent(&c, &dense, &ln).unwrap();
        let want = full.narrow(1, r, 1).unwrap().squeeze(1).unwrap();
        assert!(rel_err(&got.get(t).unwrap(), &want) < 1e-12);
    }
}

#[test]
fn activation_tangents_match_fd() {
    let mut rng = Rng::new(3);
    // Wide range, including the saturated tails of both non-linearities.
    let x = t64(&mut rng, &[3, 50], 0.0, 4.0);
    let xd = t64(&mut rng, &[2, 3, 50], 0.0, 1.0);
    for act in [
        Activation::QuickGelu,
        Activation::Gelu,
        Activation::GeluTanh,
    ] {
        let (y, slope) = ops::activation_with_slope(&x, act).unwrap();
        assert!(rel_err(&y, &ops::activation(&x, act).unwrap()) < 1e-15);
        let jvp = ops::activation_tangent(&slope, &xd).unwrap();
        let want = fd(
            &|v| ops::activation(&v[0], act).unwrap(),
            std::slice::from_ref(&x),
            std::slice::from_ref(&xd),
        );
        assert!(
            rel_err(&jvp, &want) < 1e-7,
            "{act:?}: {}",
            rel_err(&jvp, &want)
        );
        let v = f32s(&[&x, &xd]);
        let (_, s32) = ops::activation_with_slope(&v[0], act).unwrap();
        let jvp32 = ops::activation_tangent(&s32, &v[1]).unwrap();
        assert!(
            rel_err(&jvp32, &jvp) < 1e-5,
            "{act:?} f32: {}",
            rel_err(&jvp32, &jvp)
        );
    }
    // Huge inputs saturate without NaN.
    let big = Tensor::new(&[-1e4f32, -100.0, 0.0, 100.0, 1e4], &Device::Cpu).unwrap();
    for act in [
        Activation::QuickGelu,
        Activation::Gelu,
        Activation::GeluTanh,
    ] {
        let (y, s) = ops::activation_with_slope(&big, act).unwrap();
        let y = y.to_vec1::<f32>().unwrap();
        let s = s.to_vec1::<f32>().unwrap();
        assert!(
            y.iter().chain(&s).all(|v| v.is_finite()),
            "{act:?}: {y:?} {s:?}"
        );
        assert_eq!((y[0], s[0], y[4], s[4]), (0.0, 0.0, 1e4, 1.0));
    }
}

#[test]
fn softmax_tangent_matches_fd() {
    let mut rng = Rng::new(4);
    let s = t64(&mut rng, &[2, 3, 6], 0.0, 3.0);
    let sd = t64(&mut rng, &[3, 2, 3, 6], 0.0, 1.0);
    let p = ops::softmax_last_dim(&s).unwrap();
    let jvp = ops::softmax_tangent(&p, &sd).unwrap();
    let want = fd(&|v| ops::softmax_last_dim(&v[0]).unwrap(), &[s], &[sd]);
    assert!(rel_err(&jvp, &want) < 1e-7, "{}", rel_err(&jvp, &want));
}

fn causal(sq_rows: &[usize], sk: usize, b: usize) -> Tensor {
    let v: Vec<f64> = sq_rows
        .iter()
        .flat_map(|&i| (0..sk).map(move |j| if j > i { f64::NEG_INFINITY } else { 0.0 }))
        .collect();
    let per_b = v.len() / b;
    Tensor::from_vec(v, (b, 1, per_b / sk, sk), &Device::Cpu).unwrap()
}

#[test]
fn attention_tangent_matches_fd() {
    let mut rng = Rng::new(5);
    let (b, h, s, d, t) = (2, 3, 5, 4, 3);
    let q = t64(&mut rng, &[b, h, s, d], 0.0, 1.5);
    let k = t64(&mut rng, &[b, h, s, d], 0.0, 1.5);
    let v = t64(&mut rng, &[b, h, s, d], 0.0, 1.0);
    let qd = t64(&mut rng, &[t, b, h, s, d], 0.0, 1.0);
    let kd = t64(&mut rng, &[t, b, h, s, d], 0.0, 1.0);
    let vd = t64(&mut rng, &[t, b, h, s, d], 0.0, 1.0);
    let rows: Vec<usize> = (0..s).collect();
    let full_mask = causal(&rows, s, 1);
    for mask in [None, Some(&full_mask)] {
        let (_, c) = ops::attention_cached(&q, &k, &v, mask, 0.5).unwrap();
        let jvp = ops::attention_tangent(&c, &qd, &kd, &vd).unwrap();
        let f = |x: &[Tensor]| ops::attention(&x[0], &x[1], &x[2], mask, 0.5).unwrap();
        let want = fd(
            &f,
            &[q.clone(), k.clone(), v.clone()],
            &[qd.clone(), kd.clone(), vd.clone()],
        );
        assert!(
            rel_err(&jvp, &want) < 1e-7,
            "mask {}: {}",
            mask.is_some(),
            rel_err(&jvp, &want)
        );
    }
    // One query row per sequence (the pooled last block), per-sequence causal rows.
    let pool = [3usize, 1];
    let pmask = causal(&pool, s, b);
    let qsel = Tensor::stack(
        &[
            q.get(0).unwrap().narrow(1, 3, 1).unwrap(),
            q.get(1).unwrap().narrow(1, 1, 1).unwrap(),
        ],
        0,
    )
    .unwrap();
    let qdsel = Tensor::stack(
        &[
            qd.narrow(1, 0, 1)
                .unwrap()
                .narrow(3, 3, 1)
                .unwrap()
                .squeeze(1)
                .unwrap(),
            qd.narrow(1, 1, 1)
                .unwrap()
                .narrow(3, 1, 1)
                .unwrap()
                .squeeze(1)
                .unwrap(),
        ],
        1,
    )
    .unwrap();
    let (_, c) = ops::attention_cached(&qsel, &k, &v, Some(&pmask), 0.5).unwrap();
    let jvp = ops::attention_tangent(&c, &qdsel, &kd, &vd).unwrap();
    let f = |x: &[Tensor]| ops::attention(&x[0], &x[1], &x[2], Some(&pmask), 0.5).unwrap();
    let want = fd(
        &f,
        &[qsel.clone(), k.clone(), v.clone()],
        &[qdsel, kd.clone(), vd.clone()],
    );
    assert!(
        rel_err(&jvp, &want) < 1e-7,
        "pooled: {}",
        rel_err(&jvp, &want)
    );
}

#[test]
fn single_row_attention_tangent_equals_dense() {
    let mut rng = Rng::new(6);
    let (b, h, s, d) = (2, 2, 5, 3);
    let trows = [0usize, 4, 2, 2];
    let t = trows.len();
    let q = t64(&mut rng, &[b, h, s, d], 0.0, 1.5);
    let k = t64(&mut rng, &[b, h, s, d], 0.0, 1.5);
    let v = t64(&mut rng, &[b, h, s, d], 0.0, 1.0);
    let qr = t64(&mut rng, &[t, b, h, d], 0.0, 1.0);
    let kr = t64(&mut rng, &[t, b, h, d], 0.0, 1.0);
    let vr = t64(&mut rng, &[t, b, h, d], 0.0, 1.0);
    let hot: Vec<f64> = trows
        .iter()
        .flat_map(|&r| (0..s).map(move |j| (j == r) as u8 as f64))
        .collect();
    let key_hit = Tensor::from_vec(hot, (t, s), &Device::Cpu).unwrap();
    let ridx = Tensor::from_vec(
        trows.iter().map(|&r| r as u32).collect::<Vec<_>>(),
        t,
        &Device::Cpu,
    )
    .unwrap();
    // Dense tangent with the row values at row r_t.
    let dense = |r: &Tensor| {
        key_hit
            .reshape((t, 1, 1, s, 1))
            .unwrap()
            .broadcast_mul(&r.unsqueeze(3).unwrap())
            .unwrap()
    };
    let rows: Vec<usize> = (0..s).collect();
    let mask = causal(&rows, s, 1);
    let (_, c) = ops::attention_cached(&q, &k, &v, Some(&mask), 0.7).unwrap();
    let got = ops::attention_tangent_row(
        &c,
        &key_hit.unsqueeze(0).unwrap(),
        &ridx,
        &key_hit,
        &qr,
        &kr,
        &vr,
    )
    .unwrap();
    let want = ops::attention_tangent(&c, &dense(&qr), &dense(&kr), &dense(&vr)).unwrap();
    assert!(rel_err(&got, &want) < 1e-12, "{}", rel_err(&got, &want));

    // Pooled query rows: sequence b's only query is row pool[b].
    let pool = [2usize, 4];
    let qsel = Tensor::stack(
        &[
            q.get(0).unwrap().narrow(1, 2, 1).unwrap(),
            q.get(1).unwrap().narrow(1, 4, 1).unwrap(),
        ],
        0,
    )
    .unwrap();
    let pmask = causal(&pool, s, b);
    let (_, c) = ops::attention_cached(&qsel, &k, &v, Some(&pmask), 0.7).unwrap();
    let qh: Vec<f64> = pool
        .iter()
        .flat_map(|&p| trows.iter().map(move |&r| (r == p) as u8 as f64))
        .collect();
    let q_hit = Tensor::from_vec(qh, (b, t, 1), &Device::Cpu).unwrap();
    let got = ops::attention_tangent_row(&c, &q_hit, &ridx, &key_hit, &qr, &kr, &vr).unwrap();
    let qd_dense = q_hit
        .permute((1, 0, 2))
        .unwrap()
        .reshape((t, b, 1, 1, 1))
        .unwrap()
        .broadcast_mul(&qr.unsqueeze(3).unwrap())
        .unwrap();
    let want = ops::attention_tangent(&c, &qd_dense, &dense(&kr), &dense(&vr)).unwrap();
    assert!(
        rel_err(&got, &want) < 1e-12,
        "pooled: {}",
        rel_err(&got, &want)
    );
}

/// The im2col patch embedding equals candle's own stride-p convolution (the PyTorch op it
/// replaces), including the row-major patch order on a non-square grid.
#[test]
fn patch_embedding_equals_convolution() {
    use pairlens::model::{ClipConfig, ClipWeights, VisionTower};
    let cfg = ClipConfig::tiny();
    let w = ClipWeights::random(&cfg, 3)
        .unwrap()
        .to_dtype(DType::F64)
        .unwrap();
    let tower = VisionTower::new(cfg.vision.clone(), w.vision).unwrap();
    let mut rng = Rng::new(9);
    let px = t64(&mut rng, &[2, 3, 8, 12], 0.0, 1.0);
    let vw = &tower.weights;
    let conv = px.conv2d(&vw.patch_embedding, 0, 4, 1, 1).unwrap(); // [B, W, 2, 3]
    let patches = conv.flatten_from(2).unwrap().transpose(1, 2).unwrap();
    let cls = vw
        .class_embedding
        .as_ref()
        .unwrap()
        .reshape((1, 1, 24))
        .unwrap()
        .repeat((2, 1, 1))
        .unwrap();
    let x = Tensor::cat(&[&cls, &patches], 1)
        .unwrap()
        .broadcast_add(&vw.positional_embedding)
        .unwrap();
    let want = ops::layer_norm(&x, vw.ln_pre.as_ref().unwrap(), 1e-5).unwrap();
    let got = tower.hidden_at(0, &px).unwrap();
    assert!(rel_err(&got, &want) < 1e-12, "{}", rel_err(&got, &want));
}

//! Every op of the towers, its forward rule next to its tangent (JVP) rule and, for training,
//! its reverse (VJP) rule.
//!
//! Forwards are written with plain, differentiable candle-core ops (candle's own fused
//! layer-norm/softmax have no backward), so candle's autograd can check the tangent and reverse
//! rules. On CPU tensors that autograd does not track, the row-wise ops (LayerNorm, QuickGELU,
//! softmax and their rules) run as one-pass kernels that compute the same values
//! (`kernels.rs`). All are dtype-generic: f32 in production, f64 for reference checks.
//!
//! Tangent convention: a tangent has its primal's shape with extra LEADING axes (the tangent
//! batch, e.g. `[T, ...]`); primal-side factors broadcast over those axes, so one primal serves
//! any number of tangents.

use candle_core::{Tensor, D};

use super::config::Activation;
use super::kernels;
use super::matmul;
use super::weights::{LayerNorm, Linear};
use crate::Result;

/// Up to this many rows, `x Wᵀ` goes through pairlens' own kernel ([`matmul`]), which reads `W`
/// as stored; above, candle's GEMM packs `W` once and amortises it over the rows (engine bench,
/// one ViT-B block's six matmuls: 100 rows 9.6 vs 17.6 ms, 400 rows 37 vs 38 ms, 1600 rows 147
/// vs 118 ms). Without the kernel (no AVX-512), `(W xᵀ)ᵀ` is the faster order up to 128 rows.
const KERNEL_MAX_ROWS: usize = 512;
const WEIGHT_FIRST_MAX_ROWS: usize = 128;

/// `x Wᵀ` over the last axis, any leading dims, as one 2-D matmul (rows = all leading dims).
pub(crate) fn matmul_wt(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    let dims = x.dims();
    let k = *dims.last().expect("rank >= 1");
    let n = w.dim(0)?;
    let rows = x.elem_count() / k.max(1);
    let x = x.contiguous()?.reshape((rows, k))?;
    let kernel = match rows <= KERNEL_MAX_ROWS {
        true => matmul::matmul_wt(&x, w)?,
        false => None,
    };
    let y = if let Some(y) = kernel {
        y
    } else if rows <= WEIGHT_FIRST_MAX_ROWS {
        w.matmul(&x.t()?)?.t()?.contiguous()?
    } else {
        x.matmul(&w.t()?)?
    };
    let mut out = dims.to_vec();
    *out.last_mut().expect("rank >= 1") = n;
    Ok(y.reshape(out)?)
}

/// `p` tiled to `x`'s shape when `p` is being trained and shaped like `x`'s trailing dims, as
/// the outer product `1 pᵀ` (exact: every entry is `1 · p`). candle sums a broadcast's gradient
/// over leading dims in a single-threaded strided loop (measured: a fifth of training time);
/// the outer product's gradient is a matmul. `None`: broadcast as usual (inference).
fn tiled_param(x: &Tensor, p: &Tensor) -> Result<Option<Tensor>> {
    if !p.track_op() || !x.dims().ends_with(p.dims()) {
        return Ok(None);
    }
    let n = p.elem_count();
    let ones = Tensor::ones((x.elem_count() / n.max(1), 1), p.dtype(), p.device())?;
    Ok(Some(ones.matmul(&p.reshape((1, n))?)?.reshape(x.shape())?))
}

/// `x + p` for a parameter `p` (bias, position embedding) broadcast over `x`'s leading dims.
pub fn add_param(x: &Tensor, p: &Tensor) -> Result<Tensor> {
    Ok(match tiled_param(x, p)? {
        Some(t) => (x + t)?,
        None => x.broadcast_add(p)?,
    })
}

/// `x ⊙ p` for a parameter `p` (LayerNorm gain) broadcast over `x`'s leading dims.
pub fn mul_param(x: &Tensor, p: &Tensor) -> Result<Tensor> {
    Ok(match tiled_param(x, p)? {
        Some(t) => (x * t)?,
        None => x.broadcast_mul(p)?,
    })
}

/// Linear `y = x Wᵀ + b`.
pub fn linear(x: &Tensor, l: &Linear) -> Result<Tensor> {
    let y = matmul_wt(x, &l.weight)?;
    match &l.bias {
        Some(b) => add_param(&y, b),
        None => Ok(y),
    }
}

/// Linear tangent `ẏ = ẋ Wᵀ` (the bias is constant).
pub fn linear_tangent(xd: &Tensor, l: &Linear) -> Result<Tensor> {
    matmul_wt(xd, &l.weight)
}

/// What the LayerNorm tangent needs from its forward: `x̂` and `1/σ` (`[..., 1]`).
#[derive(Clone, Debug)]
pub struct LnCache {
    /// The normalised input `(x − μ)/σ`.
    pub xhat: Tensor,
    /// `1/σ` per row.
    pub inv_std: Tensor,
}

impl LnCache {
    /// The cache of rows `rows[t]` (axis 1 of a `[B, S, W]` primal), laid out `[T, B, ...]` to
    /// line up with single-row tangents `[T, B, W]`.
    pub fn select_rows(&self, rows: &Tensor) -> Result<LnCache> {
        let pick = |t: &Tensor| -> Result<Tensor> {
            Ok(t.index_select(rows, 1)?.transpose(0, 1)?.contiguous()?)
        };
        Ok(LnCache {
            xhat: pick(&self.xhat)?,
            inv_std: pick(&self.inv_std)?,
        })
    }
}

/// LayerNorm over the last axis: `y = γ (x − μ)/σ + β`, `σ = sqrt(var + eps)` (biased var).
pub fn layer_norm(x: &Tensor, ln: &LayerNorm, eps: f64) -> Result<Tensor> {
    Ok(layer_norm_cached(x, ln, eps)?.0)
}

/// [`layer_norm`] with what its tangent and reverse rules need. One fused pass on the CPU
/// (`kernels::layer_norm`); the plain ops under autograd and elsewhere.
pub fn layer_norm_cached(x: &Tensor, ln: &LayerNorm, eps: f64) -> Result<(Tensor, LnCache)> {
    if let Some(o) = kernels::layer_norm(x, &ln.weight, &ln.bias, eps)? {
        let c = LnCache {
            xhat: o.xhat,
            inv_std: o.inv_std,
        };
        return Ok((o.y, c));
    }
    layer_norm_plain(x, ln, eps)
}

pub(crate) fn layer_norm_plain(x: &Tensor, ln: &LayerNorm, eps: f64) -> Result<(Tensor, LnCache)> {
    let mu = x.mean_keepdim(D::Minus1)?;
    let xc = x.broadcast_sub(&mu)?;
    let var = xc.sqr()?.mean_keepdim(D::Minus1)?;
    let inv_std = (var + eps)?.sqrt()?.recip()?;
    let xhat = xc.broadcast_mul(&inv_std)?;
    let y = add_param(&mul_param(&xhat, &ln.weight)?, &ln.bias)?;
    Ok((y, LnCache { xhat, inv_std }))
}

/// `∂x̂/∂x · v = (v − mean v)/σ − x̂ · mean(x̂ ⊙ v)/σ` per row. The Jacobian of `x̂` is
/// symmetric, so this one product serves the tangent and the reverse rule alike.
fn normalised_jacobian(c: &LnCache, v: &Tensor) -> Result<Tensor> {
    let mean_v = v.mean_keepdim(D::Minus1)?;
    let proj = v.broadcast_mul(&c.xhat)?.mean_keepdim(D::Minus1)?;
    let centred = v.broadcast_sub(&mean_v)?;
    Ok((centred - c.xhat.broadcast_mul(&proj)?)?.broadcast_mul(&c.inv_std)?)
}

/// LayerNorm tangent: `ẋ̂ = (ẋ − mean ẋ)/σ − x̂ · mean(x̂ ⊙ ẋ)/σ`, `ẏ = γ ⊙ ẋ̂`.
pub fn layer_norm_tangent(c: &LnCache, xd: &Tensor, ln: &LayerNorm) -> Result<Tensor> {
    Ok(normalised_jacobian(c, xd)?.broadcast_mul(&ln.weight)?)
}

/// `sigmoid(1.702 x)`, written as `1/(1 + exp(-1.702 x))` (saturates to 0/1 without NaN).
fn quick_sigmoid(x: &Tensor) -> Result<Tensor> {
    Ok(((x * -1.702)?.exp()? + 1.0)?.recip()?)
}

/// `Φ(x) = (erf(x/√2) + 1)/2`. GELU is written as `x·Φ(x)` from `erf` rather than candle's
/// `gelu_erf`: same values (PyTorch's formula), but candle's `gelu_erf` backward truncates
/// 1/√(2π) to 0.398942 (~1e-6 relative), which would spoil the reverse-mode checks.
fn normal_cdf(x: &Tensor) -> Result<Tensor> {
    Ok(((x * std::f64::consts::FRAC_1_SQRT_2)?.erf()? + 1.0)?.affine(0.5, 0.0)?)
}

/// `(1 + tanh u)/2`, `u = √(2/π)(x + 0.044715 x³)`, written `σ(2u)` (saturates without NaN),
/// and `u' = √(2/π)(1 + 3·0.044715 x²)`.
fn tanh_cdf(x: &Tensor) -> Result<(Tensor, Tensor)> {
    let c = (2.0 / std::f64::consts::PI).sqrt();
    let x2 = x.sqr()?;
    let u = x.mul(&(&x2 * 0.044715)?.affine(c, c)?)?;
    let cdf = ((u * -2.0)?.exp()? + 1.0)?.recip()?;
    let du = x2.affine(3.0 * 0.044715 * c, c)?;
    Ok((cdf, du))
}

fn kernel(x: &Tensor, act: Activation, slope: bool) -> Result<Option<(Tensor, Option<Tensor>)>> {
    match act {
        Activation::QuickGelu => kernels::quick_gelu(x, slope),
        Activation::Gelu => kernels::gelu(x, slope),
        Activation::GeluTanh => kernels::gelu_tanh(x, slope),
    }
}

/// The MLP non-linearity: QuickGELU `x·σ(1.702x)`, exact GELU `x·Φ(x)` or its tanh
/// approximation.
pub fn activation(x: &Tensor, act: Activation) -> Result<Tensor> {
    if let Some((y, _)) = kernel(x, act, false)? {
        return Ok(y);
    }
    match act {
        Activation::QuickGelu => Ok(x.mul(&quick_sigmoid(x)?)?),
        Activation::Gelu => Ok(x.mul(&normal_cdf(x)?)?),
        Activation::GeluTanh => Ok(x.mul(&tanh_cdf(x)?.0)?),
    }
}

/// The activation and its elementwise slope `dy/dx`, for [`activation_tangent`].
/// QuickGELU: `s + 1.702 x s (1 − s)`, `s = σ(1.702x)`. GELU: `Φ(x) + x φ(x)`. Tanh GELU:
/// `c + 2x c (1 − c) u'`, `c = (1 + tanh u)/2`.
pub fn activation_with_slope(x: &Tensor, act: Activation) -> Result<(Tensor, Tensor)> {
    if let Some((y, Some(slope))) = kernel(x, act, true)? {
        return Ok((y, slope));
    }
    activation_with_slope_plain(x, act)
}

pub(crate) fn activation_with_slope_plain(x: &Tensor, act: Activation) -> Result<(Tensor, Tensor)> {
    match act {
        Activation::QuickGelu => {
            let s = quick_sigmoid(x)?;
            let y = x.mul(&s)?;
            let one_minus = s.affine(-1.0, 1.0)?;
            let slope = (&s + (x * 1.702)?.mul(&s)?.mul(&one_minus)?)?;
            Ok((y, slope))
        }
        Activation::Gelu => {
            let cdf = normal_cdf(x)?;
            let y = x.mul(&cdf)?;
            let inv_sqrt_2pi = 1.0 / (2.0 * std::f64::consts::PI).sqrt();
            let pdf = (x.sqr()? * -0.5)?.exp()?.affine(inv_sqrt_2pi, 0.0)?;
            let slope = (cdf + x.mul(&pdf)?)?;
            Ok((y, slope))
        }
        Activation::GeluTanh => {
            // d/dx x c(x) = c + x c' with c = (1 + tanh u)/2, c' = 2 c (1 − c) u'.
            let (cdf, du) = tanh_cdf(x)?;
            let y = x.mul(&cdf)?;
            let dc = (cdf.mul(&cdf.affine(-1.0, 1.0)?)? * 2.0)?.mul(&du)?;
            let slope = (&cdf + x.mul(&dc)?)?;
            Ok((y, slope))
        }
    }
}

/// `Σ_n w[n] ⊙ z[n, t]` for `z [N, T, F]`, `w [N, F]`: `[T, F]` (one pass on the CPU).
pub fn weighted_sum(z: &Tensor, w: &Tensor) -> Result<Tensor> {
    if let Some(s) = kernels::weighted_sum(z, w)? {
        return Ok(s);
    }
    Ok(z.broadcast_mul(&w.unsqueeze(1)?)?.sum(0)?)
}

/// Activation tangent `ẏ = slope ⊙ ẋ`.
pub fn activation_tangent(slope: &Tensor, xd: &Tensor) -> Result<Tensor> {
    Ok(xd.broadcast_mul(slope)?)
}

/// Softmax over the last axis (max-shifted; the shift is a constant, so it is detached).
pub fn softmax_last_dim(s: &Tensor) -> Result<Tensor> {
    if let Some(p) = kernels::softmax(s)? {
        return Ok(p);
    }
    softmax_plain(s)
}

pub(crate) fn softmax_plain(s: &Tensor) -> Result<Tensor> {
    let m = s.max_keepdim(D::Minus1)?.detach();
    let e = s.broadcast_sub(&m)?.exp()?;
    let z = e.sum_keepdim(D::Minus1)?;
    Ok(e.broadcast_div(&z)?)
}

/// Softmax tangent `Ṗ = P ⊙ (Ṡ − rowsum(P ⊙ Ṡ))`; `p` broadcasts against `sd`.
pub fn softmax_tangent(p: &Tensor, sd: &Tensor) -> Result<Tensor> {
    if let Some(t) = kernels::softmax_vjp(p, sd)? {
        return Ok(t);
    }
    softmax_tangent_plain(p, sd)
}

pub(crate) fn softmax_tangent_plain(p: &Tensor, sd: &Tensor) -> Result<Tensor> {
    let ps = sd.broadcast_mul(p)?;
    let r = ps.sum_keepdim(D::Minus1)?;
    Ok((ps - p.broadcast_mul(&r)?)?)
}

/// What the attention tangents need from the forward, heads folded into one batch axis.
#[derive(Clone, Debug)]
pub struct AttnCache {
    /// `scale · Q`, `[B·H, Sq, d]`.
    qs: Tensor,
    /// `[B·H, Sk, d]`
    k: Tensor,
    /// `[B·H, Sk, d]`
    v: Tensor,
    /// Attention probabilities `[B·H, Sq, Sk]`.
    pub p: Tensor,
    b: usize,
    h: usize,
    scale: f64,
}

/// Scaled dot-product attention for `q [B,H,Sq,d]`, `k, v [B,H,Sk,d]`:
/// `softmax(scale·Q Kᵀ + mask) V`. `mask` is additive (0 / −∞), broadcast to `[B,H,Sq,Sk]`.
/// The scale is applied to Q (as HF does; equal to scaling the scores up to rounding).
pub fn attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: Option<&Tensor>,
    scale: f64,
) -> Result<Tensor> {
    Ok(attention_cached(q, k, v, mask, scale)?.0)
}

/// [`attention`] with what its tangent and reverse rules need.
pub fn attention_cached(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: Option<&Tensor>,
    scale: f64,
) -> Result<(Tensor, AttnCache)> {
    let (b, h, sq, d) = q.dims4()?;
    let sk = k.dim(2)?;
    let qs = (q * scale)?.reshape((b * h, sq, d))?;
    let k = k.contiguous()?.reshape((b * h, sk, d))?;
    let v = v.contiguous()?.reshape((b * h, sk, d))?;
    let mut s = qs.matmul(&k.t()?)?;
    if let Some(m) = mask {
        s = s
            .reshape((b, h, sq, sk))?
            .broadcast_add(m)?
            .reshape((b * h, sq, sk))?;
    }
    let p = softmax_last_dim(&s)?;
    let o = p.matmul(&v)?.reshape((b, h, sq, d))?;
    Ok((
        o,
        AttnCache {
            qs,
            k,
            v,
            p,
            b,
            h,
            scale,
        },
    ))
}

/// `[T, B, H, S, d]` tangent (any strides) → `[B·H, T·S, d]` contiguous, one copy.
fn fold_heads(xd: &Tensor) -> Result<(Tensor, usize)> {
    let (t, b, h, s, d) = xd.dims5()?;
    Ok((
        xd.permute((1, 2, 0, 3, 4))?
            .contiguous()?
            .reshape((b * h, t * s, d))?,
        t,
    ))
}

/// Attention tangent for dense `q̇ [T,B,H,Sq,d]`, `k̇, v̇ [T,B,H,Sk,d]`:
/// `Ṡ = scale (Q̇Kᵀ + QK̇ᵀ)`, `Ṗ = P ⊙ (Ṡ − rowsum(P ⊙ Ṡ))`, `Ȯ = ṖV + PV̇`.
/// Returns `Ȯ [T,B,H,Sq,d]` (a strided view).
pub fn attention_tangent(c: &AttnCache, qd: &Tensor, kd: &Tensor, vd: &Tensor) -> Result<Tensor> {
    let (bh, sq, sk) = c.p.dims3()?;
    let d = c.qs.dim(2)?;
    let (qd, t) = fold_heads(qd)?;
    let (kd, _) = fold_heads(kd)?;
    let (vd, _) = fold_heads(vd)?;
    // Q̇ Kᵀ: every tangent's query rows against the shared keys, one batched matmul per head.
    let s1 = ((qd * c.scale)?.matmul(&c.k.t()?)?).reshape((bh, t, sq, sk))?;
    // Q K̇ᵀ, computed as K̇ Qᵀ and transposed back.
    let s2 = kd
        .matmul(&c.qs.t()?)?
        .reshape((bh, t, sk, sq))?
        .transpose(2, 3)?;
    let sd = (s1 + s2)?;
    let pd = softmax_tangent(&c.p.unsqueeze(1)?, &sd)?;
    let o1 = pd
        .reshape((bh, t * sq, sk))?
        .matmul(&c.v)?
        .reshape((bh, t, sq, d))?;
    // P V̇: put the tangents side by side in the columns so one matmul per head covers all.
    let vd_cols = vd
        .reshape((bh, t, sk, d))?
        .transpose(1, 2)?
        .contiguous()?
        .reshape((bh, sk, t * d))?;
    let o2 =
        c.p.matmul(&vd_cols)?
            .reshape((bh, sq, t, d))?
            .transpose(1, 2)?;
    let od = (o1 + o2)?.reshape((c.b, c.h, t, sq, d))?;
    Ok(od.permute((2, 0, 1, 3, 4))?)
}

/// Attention tangent when tangent `t` moves a single sequence row `r_t` of the block input, so
/// `q̇, k̇, v̇` are one row each (`[T,B,H,d]`):
/// `Ṡ[i,j] = scale (δ(i≡r_t) q̇_t·K_j + Q_i·k̇_t δ(j=r_t))`, `Ȯ = ṖV + P[:,r_t] ⊗ v̇_t`.
/// `q_hit [B|1, T, Sq]` is 1 where query row `i` is sequence row `r_t`; `key_rows [T]` (u32) and
/// `key_hit [T, Sk]` (one-hot of `r_t`). Returns `Ȯ [T,B,H,Sq,d]` (a strided view).
#[allow(clippy::too_many_arguments)]
pub fn attention_tangent_row(
    c: &AttnCache,
    q_hit: &Tensor,
    key_rows: &Tensor,
    key_hit: &Tensor,
    qd: &Tensor,
    kd: &Tensor,
    vd: &Tensor,
) -> Result<Tensor> {
    let (bh, sq, sk) = c.p.dims3()?;
    let d = c.qs.dim(2)?;
    let (b, h) = (c.b, c.h);
    let fold = |x: &Tensor| -> Result<Tensor> {
        let t = x.dim(0)?;
        Ok(x.permute((1, 2, 0, 3))?.contiguous()?.reshape((bh, t, d))?)
    };
    let t = qd.dim(0)?;
    let (qd, kd, vd) = (fold(qd)?, fold(kd)?, fold(vd)?);
    // Row values q̇_t·K_j and column values Q_i·k̇_t, placed by the one-hot masks.
    let a = (qd * c.scale)?
        .matmul(&c.k.t()?)?
        .reshape((b, h, t, 1, sk))?;
    let bcol = kd.matmul(&c.qs.t()?)?.reshape((b, h, t, sq, 1))?;
    let qh = q_hit.reshape((q_hit.dim(0)?, 1, t, sq, 1))?;
    let kh = key_hit.reshape((1, 1, t, 1, sk))?;
    let sd = (a.broadcast_mul(&qh)? + bcol.broadcast_mul(&kh)?)?.reshape((bh, t, sq, sk))?;
    let pd = softmax_tangent(&c.p.unsqueeze(1)?, &sd)?;
    let o1 = pd
        .reshape((bh, t * sq, sk))?
        .matmul(&c.v)?
        .reshape((bh, t, sq, d))?;
    let pcol =
        c.p.index_select(key_rows, 2)?
            .transpose(1, 2)?
            .unsqueeze(3)?; // [bh, t, sq, 1]
    let o2 = pcol.broadcast_mul(&vd.unsqueeze(2)?)?;
    let od = (o1 + o2)?.reshape((b, h, t, sq, d))?;
    Ok(od.permute((2, 0, 1, 3, 4))?)
}

// Reverse mode (VJP) rules, for training: given the gradient `ḡy` of a scalar loss w.r.t. an
// op's output, the gradients w.r.t. its input and its parameters. Parameter gradients come in
// the parameter's own struct ([`Linear`], [`LayerNorm`]), so a model's gradient has the
// model's layout.

/// `Σ` of `g` over every axis but its last `keep` (the gradient of a parameter broadcast over
/// them), as the product `1ᵀ g` (candle sums a leading axis in a single-threaded strided loop).
pub fn sum_leading(g: &Tensor, keep: usize) -> Result<Tensor> {
    let dims = g.dims();
    let kept = &dims[dims.len() - keep..];
    let w: usize = kept.iter().product();
    let rows = g.elem_count() / w.max(1);
    let g = g.contiguous()?.reshape((rows, w))?;
    let ones = Tensor::ones((1, rows), g.dtype(), g.device())?;
    Ok(ones.matmul(&g)?.reshape(kept)?)
}

/// Linear VJP: `ḡx = ḡy W`, `ḡW = ḡyᵀ x`, `ḡb = Σ_rows ḡy`.
pub fn linear_vjp(x: &Tensor, l: &Linear, gy: &Tensor) -> Result<(Tensor, Linear)> {
    let (n, k) = (l.weight.dim(0)?, l.weight.dim(1)?);
    let rows = gy.elem_count() / n.max(1);
    let g2 = gy.contiguous()?.reshape((rows, n))?;
    let x2 = x.contiguous()?.reshape((rows, k))?;
    let mut gx_dims = gy.dims().to_vec();
    *gx_dims.last_mut().expect("rank >= 1") = k;
    let gx = g2.matmul(&l.weight)?.reshape(gx_dims)?;
    let grad = Linear {
        weight: g2.t()?.matmul(&x2)?,
        bias: match l.bias {
            Some(_) => Some(sum_leading(&g2, 1)?),
            None => None,
        },
    };
    Ok((gx, grad))
}

/// LayerNorm VJP: `ḡβ = Σ ḡy`, `ḡγ = Σ ḡy ⊙ x̂`, `ḡx = ∂x̂/∂x · (γ ⊙ ḡy)` (symmetric Jacobian).
pub fn layer_norm_vjp(c: &LnCache, ln: &LayerNorm, gy: &Tensor) -> Result<(Tensor, LayerNorm)> {
    if let Some((gx, weight, bias)) = kernels::layer_norm_vjp(gy, &c.xhat, &c.inv_std, &ln.weight)?
    {
        let eps = ln.eps;
        return Ok((gx, LayerNorm { weight, bias, eps }));
    }
    layer_norm_vjp_plain(c, ln, gy)
}

pub(crate) fn layer_norm_vjp_plain(
    c: &LnCache,
    ln: &LayerNorm,
    gy: &Tensor,
) -> Result<(Tensor, LayerNorm)> {
    let gx = normalised_jacobian(c, &gy.broadcast_mul(&ln.weight)?)?;
    let grad = LayerNorm {
        weight: sum_leading(&(gy * &c.xhat)?, 1)?,
        bias: sum_leading(gy, 1)?,
        eps: ln.eps,
    };
    Ok((gx, grad))
}

/// Activation VJP `ḡx = slope ⊙ ḡy` (the Jacobian is diagonal).
pub fn activation_vjp(slope: &Tensor, gy: &Tensor) -> Result<Tensor> {
    activation_tangent(slope, gy)
}

/// Attention VJP for `ḡO [B,H,Sq,d]`: `ḡP = ḡO Vᵀ`, `ḡV = Pᵀ ḡO`, `ḡS = P ⊙ (ḡP − rowsum(P ⊙ ḡP))`
/// (the softmax Jacobian is symmetric), `ḡQ = scale · ḡS K`, `ḡK = ḡSᵀ (scale Q)`. The mask is
/// a constant; masked entries have `P = 0` and pass no gradient. Returns `(ḡQ, ḡK, ḡV)` shaped
/// like `q`, `k`, `v`.
pub fn attention_vjp(c: &AttnCache, go: &Tensor) -> Result<(Tensor, Tensor, Tensor)> {
    let (bh, sq, sk) = c.p.dims3()?;
    let d = c.qs.dim(2)?;
    let go = go.contiguous()?.reshape((bh, sq, d))?;
    let gp = go.matmul(&c.v.t()?)?;
    let gv = c.p.t()?.matmul(&go)?;
    let gs = softmax_tangent(&c.p, &gp)?;
    let gq = (gs.matmul(&c.k)? * c.scale)?;
    let gk = gs.t()?.matmul(&c.qs)?;
    let (b, h) = (c.b, c.h);
    Ok((
        gq.reshape((b, h, sq, d))?,
        gk.reshape((b, h, sk, d))?,
        gv.reshape((b, h, sk, d))?,
    ))
}

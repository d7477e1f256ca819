//! One-pass CPU kernels for the row-wise ops that dominate training's elementwise time:
//! LayerNorm forward and reverse, QuickGELU and exact GELU with their slopes, softmax and its
//! reverse rule.
//!
//! Each computes what the plain candle-op version in [`super::ops`] computes (unit tests below
//! compare them), in one pass over the data instead of one allocation and pass per op. The
//! plain versions stay the reference and the fallback: tensors tracked by candle's autograd
//! (these kernels have no backward), other devices and other dtypes take them. Work is split
//! into fixed chunks of rows, so column sums add up in the same order on every run and training
//! stays bit-for-bit reproducible.

use candle_core::{DType, Device, Storage, StorageRef, Tensor, WithDType};
use num_traits::{Float, One, Zero};
use rayon::prelude::*;

use crate::model::Activation;
use crate::Result;

/// Rows per work unit.
const CHUNK_ROWS: usize = 64;

/// Below this many elements a kernel runs on the calling thread: handing a small tensor to
/// rayon's pool costs a thread hand-off, more than the work (candle's own elementwise ops draw
/// the line at 64 Ki elements).
const PAR_MIN_ELEMS: usize = 1 << 15;

/// `f` of every work unit, results in the units' order: on rayon's threads when there are
/// `elems` elements enough to share, on this thread otherwise.
fn map_units<U: Send, R: Send>(
    units: impl Iterator<Item = U>,
    elems: usize,
    f: impl Fn(U) -> R + Sync + Send,
) -> Vec<R> {
    let units: Vec<U> = units.collect();
    if elems >= PAR_MIN_ELEMS && units.len() > 1 {
        units.into_par_iter().map(f).collect()
    } else {
        units.into_iter().map(f).collect()
    }
}

pub(super) trait Real: WithDType + Float {
    /// `eˣ`: [`exp_f32`] in f32 (vectorises), the standard library's in f64 (reference checks).
    fn exp_(self) -> Self;
    /// `erf x`: [`erf_f32`] in f32 (vectorises), libm's in f64 (reference checks).
    fn erf_(self) -> Self;
}

impl Real for f32 {
    #[inline(always)]
    fn exp_(self) -> f32 {
        exp_f32(self)
    }
    #[inline(always)]
    fn erf_(self) -> f32 {
        erf_f32(self)
    }
}

impl Real for f64 {
    #[inline(always)]
    fn exp_(self) -> f64 {
        self.exp()
    }
    #[inline(always)]
    fn erf_(self) -> f64 {
        libm::erf(self)
    }
}

/// `erf x` in f32 without a library call, so GELU's loop vectorises (libm's `erff` made exact
/// GELU the costliest elementwise op of a ViT-B forward). Abramowitz & Stegun 7.1.26,
/// `1 − t (a₁ + t (a₂ + …)) e^{−x²}`, `t = 1/(1 + p|x|)`, PyTorch's own vectorised CPU `erf`:
/// the formula is within 1.5e-7 of the exact value, its f32 evaluation within 5e-7 (unit test;
/// 8 ulp of values near ±1).
#[inline(always)]
pub(crate) fn erf_f32(x: f32) -> f32 {
    let a = x.abs();
    let t = 1.0 / (1.0 + 0.327_591_1 * a);
    let poly = ((((1.061_405_4 * t - 1.453_152) * t + 1.421_413_8) * t - 0.284_496_74) * t
        + 0.254_829_6)
        * t;
    let y = 1.0 - poly * exp_f32(-a * a);
    if x.is_nan() {
        x
    } else {
        y.copysign(x)
    }
}

/// `eˣ` in f32 without a library call, so loops over it vectorise (libm's `expf` made QuickGELU
/// the costliest op of a training step). Cephes' `expf`: `eˣ = 2ⁿ eʳ`, `n` = x log₂e rounded,
/// `r = x − n ln 2` in two parts, `eʳ` by a degree-7 polynomial; within 2 ulp of the exact value
/// (unit test). Below `e^−87.3` (the smallest normal) it is 0, so masked scores (−∞) get exactly
/// zero weight; above `ln f32::MAX` it is +∞, as `expf`; NaN stays NaN. Plain IEEE operations in
/// a fixed order: the same bits with or without SIMD.
#[inline(always)]
pub(crate) fn exp_f32(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LO: f32 = -87.336_55;
    const HI: f32 = 88.722_83;
    // n rounded to nearest by adding 1.5·2²³: the sum's low mantissa bits are then n itself,
    // which gives 2ⁿ without a (saturating, scalar) float-to-int cast.
    const ROUND: f32 = 12_582_912.0;
    let v = x.clamp(LO, HI);
    let t = v * LOG2E + ROUND;
    let n = t - ROUND;
    let r = v - n * 0.693_359_4 - n * -2.121_944_4e-4;
    let p = (((((1.987_569_2e-4 * r + 1.398_199_9e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2)
        * r
        + 0.166_666_65)
        * r
        + 0.5)
        * (r * r)
        + r
        + 1.0;
    // 2ⁿ as two normal factors, so n = 128 (just below f32::MAX) is exact too.
    let ni = t.to_bits() as i32 - ROUND.to_bits() as i32;
    let half = ni >> 1;
    let s1 = f32::from_bits(((half + 127) as u32) << 23);
    let s2 = f32::from_bits(((ni - half + 127) as u32) << 23);
    let e = p * s1 * s2;
    if x < LO {
        0.0 // flushed: subnormals (which `expf` would give down to −103) slow every op they reach
    } else if x > HI {
        f32::INFINITY
    } else if x.is_nan() {
        x
    } else {
        e
    }
}

/// `fn $name` runs `$body` (an `#[inline(always)]` fn) compiled with AVX-512, or AVX2 + FMA,
/// when the CPU has them, so its loops vectorise; as is elsewhere. Only the instruction set
/// changes, not the arithmetic (no FMA contraction in Rust), so every path gives the same bits.
macro_rules! vectorised {
    ($name:ident = $body:ident($($arg:ident: $ty:ty),*)) => {
        fn $name<T: Real>($($arg: $ty),*) {
            #[cfg(target_arch = "x86_64")]
            {
                /// # Safety
                /// The CPU supports AVX-512F.
                #[target_feature(enable = "avx512f")]
                unsafe fn avx512<T: Real>($($arg: $ty),*) {
                    $body($($arg),*)
                }
                /// # Safety
                /// The CPU supports AVX2 and FMA.
                #[target_feature(enable = "avx2,fma")]
                unsafe fn avx2<T: Real>($($arg: $ty),*) {
                    $body($($arg),*)
                }
                if std::arch::is_x86_feature_detected!("avx512f") {
                    // SAFETY: the CPU has the features the function is compiled for.
                    return unsafe { avx512($($arg),*) };
                }
                if std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
                {
                    // SAFETY: as above.
                    return unsafe { avx2($($arg),*) };
                }
            }
            $body($($arg),*)
        }
    };
}

/// A contiguous CPU tensor's values, borrowed for the kernel's duration.
pub(super) struct View<'a> {
    guard: StorageRef<'a>,
    start: usize,
    len: usize,
}

impl View<'_> {
    pub(super) fn slice<T: Real>(&self) -> &[T] {
        let Storage::Cpu(c) = &*self.guard else {
            unreachable!("a tensor on the CPU device has CPU storage")
        };
        &c.as_slice::<T>().expect("dtype checked by the caller")[self.start..self.start + self.len]
    }
}

/// `t`'s values when a kernel may replace the plain ops. The device decides: the kernels run
/// for tensors on the CPU that autograd does not track (they have no backward) and that are
/// stored contiguously; on a GPU, and in training, the plain candle ops run (`None`).
pub(super) fn view(t: &Tensor) -> Option<View<'_>> {
    if !t.device().is_cpu() || t.track_op() {
        return None;
    }
    let (guard, layout) = t.storage_and_layout();
    let (start, end) = layout.contiguous_offsets()?;
    Some(View {
        guard,
        start,
        len: end - start,
    })
}

fn tensor<T: Real>(v: Vec<T>, dims: &[usize]) -> Result<Tensor> {
    Ok(Tensor::from_vec(v, dims, &Device::Cpu)?)
}

/// Runs `$body` with `$t` bound to the Rust type of `$dtype` (f32 or f64); other dtypes `None`.
macro_rules! by_dtype {
    ($dtype:expr, $t:ident => $body:expr) => {
        match $dtype {
            DType::F32 => {
                type $t = f32;
                $body
            }
            DType::F64 => {
                type $t = f64;
                $body
            }
            _ => Ok(None),
        }
    };
}

/// What the LayerNorm forward returns: output, `x̂`, and `1/σ` (`[..., 1]`).
pub(crate) struct LnOut {
    pub y: Tensor,
    pub xhat: Tensor,
    pub inv_std: Tensor,
}

/// LayerNorm over the last axis: `x̂ = (x − μ)/σ`, `σ = sqrt(var + eps)`, `y = γ x̂ + β`.
pub(crate) fn layer_norm(
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    eps: f64,
) -> Result<Option<LnOut>> {
    let (Some(xv), Some(gv), Some(bv)) = (view(x), view(gamma), view(beta)) else {
        return Ok(None);
    };
    let dims = x.dims();
    let w = *dims.last().expect("rank >= 1");
    by_dtype!(x.dtype(), T => {
        let (x, g, b) = (xv.slice::<T>(), gv.slice::<T>(), bv.slice::<T>());
        let rows = x.len() / w.max(1);
        let (mut y, mut xhat, mut inv) = (vec![T::zero(); x.len()], vec![T::zero(); x.len()], vec![T::zero(); rows]);
        let n = T::from_f64(w as f64);
        let eps = T::from_f64(eps);
        let units = y
            .chunks_mut(CHUNK_ROWS * w)
            .zip(xhat.chunks_mut(CHUNK_ROWS * w))
            .zip(inv.chunks_mut(CHUNK_ROWS))
            .zip(x.chunks(CHUNK_ROWS * w));
        map_units(units, x.len(), |(((y, xhat), inv), x)| {
                for (r, inv) in inv.iter_mut().enumerate() {
                    let span = r * w..(r + 1) * w;
                    let (x, xhat, y) = (&x[span.clone()], &mut xhat[span.clone()], &mut y[span]);
                    let mu = x.iter().fold(T::zero(), |s, &v| s + v) / n;
                    let var = x.iter().fold(T::zero(), |s, &v| s + (v - mu) * (v - mu)) / n;
                    *inv = T::one() / (var + eps).sqrt();
                    for i in 0..w {
                        xhat[i] = (x[i] - mu) * *inv;
                        y[i] = xhat[i] * g[i] + b[i];
                    }
                }
            });
        let mut inv_dims = dims.to_vec();
        *inv_dims.last_mut().expect("rank >= 1") = 1;
        Ok(Some(LnOut {
            y: tensor(y, dims)?,
            xhat: tensor(xhat, dims)?,
            inv_std: tensor(inv, &inv_dims)?,
        }))
    })
}

/// LayerNorm reverse rule: with `g = γ ⊙ ḡy` per row, `ḡx = (g − mean g − x̂ mean(g ⊙ x̂))/σ`;
/// `ḡγ = Σ_rows ḡy ⊙ x̂`, `ḡβ = Σ_rows ḡy`. Returns `(ḡx, ḡγ, ḡβ)`.
pub(crate) fn layer_norm_vjp(
    gy: &Tensor,
    xhat: &Tensor,
    inv_std: &Tensor,
    gamma: &Tensor,
) -> Result<Option<(Tensor, Tensor, Tensor)>> {
    if gy.dims() != xhat.dims() {
        return Ok(None);
    }
    let (Some(gyv), Some(xv), Some(iv), Some(gv)) =
        (view(gy), view(xhat), view(inv_std), view(gamma))
    else {
        return Ok(None);
    };
    let dims = gy.dims();
    let w = *dims.last().expect("rank >= 1");
    by_dtype!(gy.dtype(), T => {
        let (gy, xhat, inv, gamma) = (gyv.slice::<T>(), xv.slice::<T>(), iv.slice::<T>(), gv.slice::<T>());
        let n = T::from_f64(w as f64);
        let mut gx = vec![T::zero(); gy.len()];
        // Per chunk: [Σ ḡy ⊙ x̂ | Σ ḡy], summed over chunks in order below.
        let units = gx
            .chunks_mut(CHUNK_ROWS * w)
            .zip(gy.chunks(CHUNK_ROWS * w))
            .zip(xhat.chunks(CHUNK_ROWS * w))
            .zip(inv.chunks(CHUNK_ROWS));
        let partial: Vec<Vec<T>> = map_units(units, gy.len(), |(((gx, gy), xhat), inv)| {
                let mut sums = vec![T::zero(); 2 * w];
                for (r, &inv) in inv.iter().enumerate() {
                    let span = r * w..(r + 1) * w;
                    let (gy, xhat, gx) = (&gy[span.clone()], &xhat[span.clone()], &mut gx[span]);
                    let (mut m1, mut m2) = (T::zero(), T::zero());
                    for i in 0..w {
                        let g = gy[i] * gamma[i];
                        m1 += g;
                        m2 += g * xhat[i];
                        sums[i] += gy[i] * xhat[i];
                        sums[w + i] += gy[i];
                    }
                    let (m1, m2) = (m1 / n, m2 / n);
                    for i in 0..w {
                        gx[i] = (gy[i] * gamma[i] - m1 - xhat[i] * m2) * inv;
                    }
                }
                sums
            });
        let mut total = vec![T::zero(); 2 * w];
        for p in &partial {
            for (t, &v) in total.iter_mut().zip(p) {
                *t += v;
            }
        }
        let gbeta = total.split_off(w);
        Ok(Some((tensor(gx, dims)?, tensor(total, &[w])?, tensor(gbeta, &[w])?)))
    })
}

/// QuickGELU `y = x σ(1.702x)` and, when `slope` is asked for, `dy/dx = s + 1.702 x s (1 − s)`.
pub(crate) fn quick_gelu(x: &Tensor, slope: bool) -> Result<Option<(Tensor, Option<Tensor>)>> {
    activation(x, slope, Activation::QuickGelu)
}

/// Exact GELU `y = x Φ(x)`, `Φ(x) = (1 + erf(x/√2))/2`, and, when `slope` is asked for,
/// `dy/dx = Φ(x) + x φ(x)`.
pub(crate) fn gelu(x: &Tensor, slope: bool) -> Result<Option<(Tensor, Option<Tensor>)>> {
    activation(x, slope, Activation::Gelu)
}

/// GELU's tanh approximation (`gelu_pytorch_tanh`, SigLIP) `y = x (1 + tanh u)/2`,
/// `u = √(2/π) (x + 0.044715 x³)`, and, when `slope` is asked for,
/// `dy/dx = (1 + tanh u)/2 + x (1 − tanh² u) u'/2`.
pub(crate) fn gelu_tanh(x: &Tensor, slope: bool) -> Result<Option<(Tensor, Option<Tensor>)>> {
    activation(x, slope, Activation::GeluTanh)
}

/// One of the non-linearities above, in chunks of rows.
fn activation(
    x: &Tensor,
    slope: bool,
    act: Activation,
) -> Result<Option<(Tensor, Option<Tensor>)>> {
    let Some(xv) = view(x) else {
        return Ok(None);
    };
    let dims = x.dims();
    by_dtype!(x.dtype(), T => {
        let span: fn(&[T], &mut [T], Option<&mut [T]>) = match act {
            Activation::QuickGelu => quick_gelu_simd::<T>,
            Activation::Gelu => gelu_simd::<T>,
            Activation::GeluTanh => gelu_tanh_simd::<T>,
        };
        let x = xv.slice::<T>();
        let chunk = CHUNK_ROWS * dims.last().copied().unwrap_or(1).max(1);
        let mut y = vec![T::zero(); x.len()];
        let mut d = if slope { vec![T::zero(); x.len()] } else { Vec::new() };
        if slope {
            let units = y.chunks_mut(chunk).zip(d.chunks_mut(chunk)).zip(x.chunks(chunk));
            map_units(units, x.len(), |((y, d), x)| span(x, y, Some(d)));
        } else {
            let units = y.chunks_mut(chunk).zip(x.chunks(chunk));
            map_units(units, x.len(), |(y, x)| span(x, y, None));
        }
        let d = if slope { Some(tensor(d, dims)?) } else { None };
        Ok(Some((tensor(y, dims)?, d)))
    })
}

/// `Σ_n w[n] ⊙ z[n, t]` for `z [N, T, F]`, `w [N, F]`: `[T, F]`, rows of `t` split over threads
/// (each output row is summed over `n` in order, so the result does not depend on the split).
pub(crate) fn weighted_sum(z: &Tensor, w: &Tensor) -> Result<Option<Tensor>> {
    let (Ok((n, t, f)), Ok((wn, wf))) = (z.dims3(), w.dims2()) else {
        return Ok(None);
    };
    if (wn, wf) != (n, f) {
        return Ok(None);
    }
    let (Some(zv), Some(wv)) = (view(z), view(w)) else {
        return Ok(None);
    };
    by_dtype!(z.dtype(), T => {
        let (z, w) = (zv.slice::<T>(), wv.slice::<T>());
        let mut out = vec![T::zero(); t * f];
        let units = out.chunks_mut(CHUNK_ROWS * f).enumerate();
        map_units(units, n * t * f, |(c, out)| {
            for (r, o) in out.chunks_mut(f).enumerate() {
                let row = c * CHUNK_ROWS + r;
                for k in 0..n {
                    let (zr, wr) = (&z[(k * t + row) * f..][..f], &w[k * f..][..f]);
                    for i in 0..f {
                        o[i] += wr[i] * zr[i];
                    }
                }
            }
        });
        Ok(Some(tensor(out, &[t, f])?))
    })
}

/// Softmax over the last axis, max-shifted.
pub(crate) fn softmax(s: &Tensor) -> Result<Option<Tensor>> {
    let Some(sv) = view(s) else {
        return Ok(None);
    };
    let dims = s.dims();
    let w = *dims.last().expect("rank >= 1");
    by_dtype!(s.dtype(), T => {
        let s = sv.slice::<T>();
        let mut p = vec![T::zero(); s.len()];
        let units = p.chunks_mut(CHUNK_ROWS * w).zip(s.chunks(CHUNK_ROWS * w));
        map_units(units, s.len(), |(p, s)| softmax_simd(s, p, w));
        Ok(Some(tensor(p, dims)?))
    })
}

vectorised!(quick_gelu_simd = quick_gelu_span(x: &[T], y: &mut [T], d: Option<&mut [T]>));
vectorised!(gelu_simd = gelu_span(x: &[T], y: &mut [T], d: Option<&mut [T]>));
vectorised!(gelu_tanh_simd = gelu_tanh_span(x: &[T], y: &mut [T], d: Option<&mut [T]>));
vectorised!(softmax_simd = softmax_rows(s: &[T], p: &mut [T], w: usize));

/// QuickGELU over a span: `y = x σ(1.702x)` and the slope `s + 1.702 x s (1 − s)` when `d` is
/// given.
#[inline(always)]
fn quick_gelu_span<T: Real>(x: &[T], y: &mut [T], d: Option<&mut [T]>) {
    let k = T::from_f64(1.702);
    let sigmoid = |v: T| T::one() / ((-(v * k)).exp_() + T::one());
    match d {
        Some(d) => {
            for i in 0..x.len() {
                let s = sigmoid(x[i]);
                y[i] = x[i] * s;
                d[i] = s + (x[i] * k) * s * (T::one() - s);
            }
        }
        None => {
            for i in 0..x.len() {
                y[i] = x[i] * sigmoid(x[i]);
            }
        }
    }
}

/// Exact GELU over a span: `y = x Φ(x)` and the slope `Φ(x) + x φ(x)` when `d` is given.
#[inline(always)]
fn gelu_span<T: Real>(x: &[T], y: &mut [T], d: Option<&mut [T]>) {
    let half = T::from_f64(0.5);
    let root_half = T::from_f64(std::f64::consts::FRAC_1_SQRT_2);
    let inv_root_2pi = T::from_f64(1.0 / (2.0 * std::f64::consts::PI).sqrt());
    let cdf = |v: T| ((v * root_half).erf_() + T::one()) * half;
    match d {
        Some(d) => {
            for i in 0..x.len() {
                let c = cdf(x[i]);
                y[i] = x[i] * c;
                d[i] = c + x[i] * (-(x[i] * x[i]) * half).exp_() * inv_root_2pi;
            }
        }
        None => {
            for i in 0..x.len() {
                y[i] = x[i] * cdf(x[i]);
            }
        }
    }
}

/// GELU's tanh approximation over a span, and its slope when `d` is given. `tanh u` is
/// written `1 − 2/(e^{2u} + 1)`, which saturates to ±1 without NaN.
#[inline(always)]
fn gelu_tanh_span<T: Real>(x: &[T], y: &mut [T], d: Option<&mut [T]>) {
    let half = T::from_f64(0.5);
    let two = T::from_f64(2.0);
    let c = T::from_f64((2.0 / std::f64::consts::PI).sqrt());
    let k = T::from_f64(0.044715);
    let k3 = T::from_f64(3.0 * 0.044715);
    let tanh_u = |v: T| T::one() - two / ((two * c * (v + k * v * v * v)).exp_() + T::one());
    match d {
        Some(d) => {
            for i in 0..x.len() {
                let (v, t) = (x[i], tanh_u(x[i]));
                y[i] = half * v * (T::one() + t);
                d[i] = half * (T::one() + t)
                    + half * v * (T::one() - t * t) * c * (T::one() + k3 * v * v);
            }
        }
        None => {
            for i in 0..x.len() {
                y[i] = half * x[i] * (T::one() + tanh_u(x[i]));
            }
        }
    }
}

/// Max-shifted softmax of each row of `w` scores in `s`, into `p`.
#[inline(always)]
fn softmax_rows<T: Real>(s: &[T], p: &mut [T], w: usize) {
    for (p, s) in p.chunks_mut(w).zip(s.chunks(w)) {
        // A NaN score is never the max, so it reaches exp and the row turns NaN.
        let m = s
            .iter()
            .fold(T::neg_infinity(), |m, &v| if v > m { v } else { m });
        for (p, &v) in p.iter_mut().zip(s) {
            *p = (v - m).exp_();
        }
        let z = p.iter().fold(T::zero(), |z, &e| z + e);
        for p in p.iter_mut() {
            *p /= z;
        }
    }
}

/// Softmax reverse (and tangent) rule for `p` and `g` of the same shape:
/// `P ⊙ (g − rowsum(P ⊙ g))`.
pub(crate) fn softmax_vjp(p: &Tensor, g: &Tensor) -> Result<Option<Tensor>> {
    if p.dims() != g.dims() {
        return Ok(None);
    }
    let (Some(pv), Some(gv)) = (view(p), view(g)) else {
        return Ok(None);
    };
    let dims = p.dims();
    let w = *dims.last().expect("rank >= 1");
    by_dtype!(p.dtype(), T => {
        let (p, g) = (pv.slice::<T>(), gv.slice::<T>());
        let mut out = vec![T::zero(); p.len()];
        let units = out
            .chunks_mut(CHUNK_ROWS * w)
            .zip(p.chunks(CHUNK_ROWS * w))
            .zip(g.chunks(CHUNK_ROWS * w));
        map_units(units, p.len(), |((o, p), g)| {
            for ((o, p), g) in o.chunks_mut(w).zip(p.chunks(w)).zip(g.chunks(w)) {
                let r = p.iter().zip(g).fold(T::zero(), |r, (&p, &g)| r + p * g);
                for i in 0..w {
                    o[i] = p[i] * (g[i] - r);
                }
            }
        });
        Ok(Some(tensor(out, dims)?))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ops::{self, LnCache};
    use crate::model::LayerNorm;
    use candle_core::Var;

    fn rand(shape: &[usize], seed: u64, dtype: DType) -> Tensor {
        let n: usize = shape.iter().product();
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let v: Vec<f64> = (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                (s >> 11) as f64 / (1u64 << 53) as f64 * 6.0 - 3.0
            })
            .collect();
        Tensor::from_vec(v, shape, &Device::Cpu)
            .unwrap()
            .to_dtype(dtype)
            .unwrap()
    }

    /// Largest `|a − b|` over the largest `|b|`.
    fn rel(a: &Tensor, b: &Tensor) -> f64 {
        assert_eq!(a.dims(), b.dims());
        let values = |t: &Tensor| -> Vec<f64> {
            let t = t.flatten_all().unwrap().to_dtype(DType::F64).unwrap();
            t.to_vec1().unwrap()
        };
        let (a, b) = (values(a), values(b));
        let scale = b.iter().fold(0f64, |m, v| m.max(v.abs())).max(1e-300);
        a.iter()
            .zip(&b)
            .fold(0f64, |m, (x, y)| m.max((x - y).abs()))
            / scale
    }

    /// Each kernel against the plain candle ops it replaces, in both dtypes, over more rows
    /// than one chunk (and a ragged last chunk).
    #[test]
    fn kernels_equal_the_plain_ops() {
        for (dtype, tol) in [(DType::F64, 1e-13), (DType::F32, 2e-6)] {
            let x = rand(&[3, 70, 24], 1, dtype);
            let ln = LayerNorm {
                weight: rand(&[24], 2, dtype),
                bias: rand(&[24], 3, dtype),
                eps: 1e-5,
            };
            let (y, c) = ops::layer_norm_cached(&x, &ln, 1e-5).unwrap();
            let (y0, c0) = ops::layer_norm_plain(&x, &ln, 1e-5).unwrap();
            assert!(rel(&y, &y0) < tol && rel(&c.xhat, &c0.xhat) < tol);
            assert!(rel(&c.inv_std, &c0.inv_std) < tol, "{dtype:?}");

            let gy = rand(&[3, 70, 24], 4, dtype);
            let (gx, g) = ops::layer_norm_vjp(&c, &ln, &gy).unwrap();
            let (gx0, g0) = ops::layer_norm_vjp_plain(&c, &ln, &gy).unwrap();
            assert!(rel(&gx, &gx0) < tol, "{dtype:?}: {}", rel(&gx, &gx0));
            assert!(rel(&g.weight, &g0.weight) < tol && rel(&g.bias, &g0.bias) < tol);

            for act in [
                Activation::QuickGelu,
                Activation::Gelu,
                Activation::GeluTanh,
            ] {
                let (a, s) = ops::activation_with_slope(&x, act).unwrap();
                let (a0, s0) = ops::activation_with_slope_plain(&x, act).unwrap();
                assert!(
                    rel(&a, &a0) < tol && rel(&s, &s0) < tol,
                    "{act:?} {dtype:?}"
                );
                let a1 = ops::activation(&x, act).unwrap();
                assert!(rel(&a1, &a0) < tol);
            }

            let p = ops::softmax_last_dim(&x).unwrap();
            let p0 = ops::softmax_plain(&x).unwrap();
            assert!(rel(&p, &p0) < tol, "{dtype:?}: {}", rel(&p, &p0));
            let t = ops::softmax_tangent(&p, &gy).unwrap();
            let t0 = ops::softmax_tangent_plain(&p, &gy).unwrap();
            assert!(rel(&t, &t0) < tol, "{dtype:?}");

            let w = rand(&[3, 24], 8, dtype);
            let s = weighted_sum(&x, &w).unwrap().unwrap();
            let s0 = x
                .broadcast_mul(&w.unsqueeze(1).unwrap())
                .unwrap()
                .sum(0)
                .unwrap();
            assert!(rel(&s, &s0) < tol, "{dtype:?}");
        }
    }

    /// Masked (−∞) scores get exactly zero weight; a NaN score is not hidden.
    #[test]
    fn softmax_keeps_masks_exact_and_nans_visible() {
        let inf = f32::NEG_INFINITY;
        let s = Tensor::new(&[[0.5f32, inf, 1.0], [f32::NAN, 0.0, 1.0]], &Device::Cpu).unwrap();
        let p = softmax(&s).unwrap().unwrap().to_vec2::<f32>().unwrap();
        assert_eq!(p[0][1], 0.0);
        assert!((p[0][0] + p[0][2] - 1.0).abs() < 1e-6);
        assert!(p[1].iter().all(|v| v.is_nan()));
    }

    /// Tensors under candle's autograd take the plain (differentiable) ops.
    #[test]
    fn tracked_tensors_are_left_to_the_plain_ops() {
        let x = Var::from_tensor(&rand(&[4, 8], 5, DType::F64)).unwrap();
        assert!(softmax(x.as_tensor()).unwrap().is_none());
        assert!(quick_gelu(x.as_tensor(), true).unwrap().is_none());
        assert!(gelu(x.as_tensor(), true).unwrap().is_none());
        let ones = Tensor::ones(8, DType::F64, &Device::Cpu).unwrap();
        assert!(layer_norm(x.as_tensor(), &ones, &ones, 1e-5)
            .unwrap()
            .is_none());
        let c = LnCache {
            xhat: rand(&[4, 8], 6, DType::F64),
            inv_std: rand(&[4, 1], 7, DType::F64),
        };
        assert!(layer_norm_vjp(x.as_tensor(), &c.xhat, &c.inv_std, &ones)
            .unwrap()
            .is_none());
    }

    #[test]
    fn erf_f32_within_5e_7() {
        let mut worst = 0f64;
        let mut x = -6.0f32;
        while x < 6.0 {
            worst = worst.max((erf_f32(x) as f64 - libm::erf(x as f64)).abs());
            x += 0.000_7;
        }
        assert!(worst <= 5e-7, "worst error {worst:e}");
        assert_eq!(erf_f32(0.0), 0.0);
        assert_eq!(erf_f32(40.0), 1.0);
        assert_eq!(erf_f32(-40.0), -1.0);
        assert!(erf_f32(f32::NAN).is_nan());
    }

    #[test]
    fn exp_f32_within_two_ulp() {
        let mut worst = 0f64;
        let mut x = -87.3f32;
        while x < 88.7 {
            let exact = (x as f64).exp();
            let got = exp_f32(x) as f64;
            let ulp = (exact as f32).abs() as f64 * f32::EPSILON as f64;
            worst = worst.max((got - exact).abs() / ulp);
            x += 0.001_3;
        }
        assert!(worst <= 2.0, "worst error {worst} ulp");
        assert_eq!(exp_f32(0.0), 1.0);
        assert_eq!(exp_f32(-1000.0), 0.0);
        assert!(exp_f32(f32::NAN).is_nan());
        assert_eq!(exp_f32(1000.0), f32::INFINITY);
        assert!(exp_f32(88.7).is_finite());
    }
}

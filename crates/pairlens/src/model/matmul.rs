//! `y = x Wᵀ` in f32 for the few-row products of inference, on x86-64 CPUs with AVX-512.
//!
//! Every linear layer multiplies a handful of rows (100 for an image and its reference, 30 for a
//! caption and its reference) by a weight stored `[out, in]`, read in place from the checkpoint.
//! A general GEMM (candle's `gemm`) first packs the weight into panels, a pass over the largest
//! operand that costs as much as the arithmetic at these row counts. Here both operands are read
//! as stored: every output is a dot product of a row of `x` with a row of `W`, both contiguous
//! in the shared `in` axis, so 16 lanes run along that axis and a tile of 4 rows × 6 weight rows
//! (24 accumulators) reuses each loaded vector 4 or 6 times. The lanes are added up once per
//! tile. Output columns are split between rayon's threads, so each core streams its own half of
//! the weight.
//!
//! On other CPUs, other dtypes, or tensors tracked by autograd the caller uses candle's matmul.

use candle_core::{DType, Device, Tensor};

use super::kernels::view;

use crate::Result;

/// Rows of `x` per tile.
const MR: usize = 4;
/// Rows of `W` (output columns) per tile.
const NR: usize = 6;
/// Rows of `x` per block: with [`KC`] values each they fill 40 % of a 1 MiB L2.
const MC: usize = 128;
/// Length of the `in` axis handled per pass: a tile's 10 rows of this length stay in L1.
const KC: usize = 768;
/// Below this many multiply-adds a product stays on the calling thread (a hand-off to another
/// core costs more than the work).
const PAR_MIN_MACS: usize = 1 << 20;

/// `x Wᵀ` for `x [m, k]` and `w [n, k]` (both contiguous f32 on the CPU, not tracked by
/// autograd) when this CPU has AVX-512; `None` otherwise (the caller falls back).
pub(crate) fn matmul_wt(x: &Tensor, w: &Tensor) -> Result<Option<Tensor>> {
    if !available() || x.dtype() != DType::F32 || w.dtype() != DType::F32 {
        return Ok(None);
    }
    let ((m, k), (n, kw)) = (x.dims2()?, w.dims2()?);
    if k != kw || k == 0 {
        return Ok(None);
    }
    let (Some(xv), Some(wv)) = (view(x), view(w)) else {
        return Ok(None);
    };
    let mut out = vec![0f32; m * n];
    gemm_wt(xv.slice::<f32>(), wv.slice::<f32>(), &mut out, m, n, k);
    drop((xv, wv));
    Ok(Some(Tensor::from_vec(out, (m, n), &Device::Cpu)?))
}

/// Whether this CPU runs the kernel.
pub(crate) fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// The output pointer shared by the threads; each writes its own columns.
#[derive(Clone, Copy)]
struct OutPtr(*mut f32);
// SAFETY: the threads given an `OutPtr` write disjoint column ranges of the output.
unsafe impl Send for OutPtr {}
unsafe impl Sync for OutPtr {}

/// `out [m, n] = x [m, k] · w [n, k]ᵀ`, `out` zeroed. Needs [`available`].
fn gemm_wt(x: &[f32], w: &[f32], out: &mut [f32], m: usize, n: usize, k: usize) {
    assert!(available(), "matmul kernel called on a CPU without AVX-512");
    assert!(x.len() == m * k && w.len() == n * k && out.len() == m * n);
    let ptr = OutPtr(out.as_mut_ptr());
    let parts = rayon::current_num_threads().min(n.div_ceil(NR)).max(1);
    if parts == 1 || m * n * k < PAR_MIN_MACS {
        // SAFETY: the whole output, on this thread only.
        return unsafe { columns(x, w, ptr, m, n, k, 0..n) };
    }
    // Column ranges of whole tiles, as even as the tiles allow.
    let tiles = n.div_ceil(NR);
    let bound = |p: usize| (tiles * p / parts * NR).min(n);
    rayon::scope(|s| {
        for p in 1..parts {
            let range = bound(p)..bound(p + 1);
            // SAFETY: column ranges of different parts are disjoint.
            s.spawn(move |_| unsafe { columns(x, w, ptr, m, n, k, range) });
        }
        // SAFETY: as above; this thread takes the first part.
        unsafe { columns(x, w, ptr, m, n, k, 0..bound(1)) };
    });
}

/// Output columns `cols` of `out = x wᵀ`, [`MC`] rows at a time.
///
/// # Safety
/// The CPU supports AVX-512F; `x` holds `m·k` values and `w` `n·k`; `out` points to `m·n`
/// writable values; `cols` lies in `0..n`, and no other thread reads or writes those columns of
/// `out` while this runs.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn columns(
    x: &[f32],
    w: &[f32],
    out: OutPtr,
    m: usize,
    n: usize,
    k: usize,
    cols: std::ops::Range<usize>,
) {
    for m0 in (0..m).step_by(MC) {
        let mb = MC.min(m - m0);
        // SAFETY: rows m0..m0 + mb of `out` exist (m0 < m), and this function's contract
        // carries over to them.
        unsafe {
            let rows = OutPtr(out.0.add(m0 * n));
            row_block(&x[m0 * k..(m0 + mb) * k], w, rows, mb, n, k, cols.clone());
        }
    }
}

/// [`columns`] for at most [`MC`] rows: the rows of `x` stay in L2 while every weight row
/// streams past them once.
///
/// # Safety
/// As [`columns`], for `m` rows.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn row_block(
    x: &[f32],
    w: &[f32],
    out: OutPtr,
    m: usize,
    n: usize,
    k: usize,
    cols: std::ops::Range<usize>,
) {
    // Rows of x for one pass over the `in` axis, copied with a stride that is no multiple of
    // 4 KiB (rows 12 KiB apart, as in a 3072-wide layer, would evict each other from L1).
    let kc_max = KC.min(k);
    let stride = kc_max + 16;
    let mut packed: Vec<f32> = Vec::new();
    let mut k0 = 0;
    while k0 < k {
        let kc = kc_max.min(k - k0);
        let (xs, xstride) = if kc == k && !k.is_multiple_of(1024) {
            (x.as_ptr(), k)
        } else {
            packed.resize(m * stride, 0.0);
            for i in 0..m {
                packed[i * stride..i * stride + kc]
                    .copy_from_slice(&x[i * k + k0..i * k + k0 + kc]);
            }
            (packed.as_ptr(), stride)
        };
        // SAFETY: every pointer below stays inside `x`, `packed`, `w` or `out` as this
        // function's contract sizes them (tiles are cut at `m` rows and `cols.end` columns);
        // prefetch addresses may lie past the end but are hints, never dereferenced.
        unsafe {
            // The next weight tile's cache lines are requested while this one is used, a share per
            // row tile: the first row tile of each weight tile otherwise waits on main memory.
            let lines_per_row = kc.div_ceil(16);
            let per_tile = lines_per_row.div_ceil(m.div_ceil(MR)); // lines of each row per row tile
            let mut j = cols.start;
            while j < cols.end {
                let nr = NR.min(cols.end - j);
                let wp = w.as_ptr().add(j * k + k0);
                let next = (j + NR < cols.end)
                    .then(|| (w.as_ptr().add((j + NR) * k + k0), NR.min(cols.end - j - NR)));
                let mut i = 0;
                while i < m {
                    if let Some((np, nrows)) = next {
                        let first = (i / MR) * per_tile;
                        for line in first..(first + per_tile).min(lines_per_row) {
                            for r in 0..nrows {
                                // (a hint only: an address past the end is never dereferenced)
                                let p = np.wrapping_add(r * k + line * 16);
                                std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
                                    p as *const i8,
                                );
                            }
                        }
                    }
                    let mr = MR.min(m - i);
                    let t = Tile {
                        x: xs.add(i * xstride),
                        xstride,
                        w: wp,
                        wstride: k,
                        kc,
                        out: out.0.add(i * n + j),
                        ostride: n,
                    };
                    match (mr, nr) {
                        (4, 6) => {
                            let main: unsafe fn(&Tile) = std::hint::black_box(run_main);
                            main(&t)
                        }
                        (4, 5) => t.run::<4, 5>(),
                        (4, 4) => t.run::<4, 4>(),
                        (4, 3) => t.run::<4, 3>(),
                        (4, 2) => t.run::<4, 2>(),
                        (4, 1) => t.run::<4, 1>(),
                        (3, 6) => t.run::<3, 6>(),
                        (2, 6) => t.run::<2, 6>(),
                        (1, 6) => t.run::<1, 6>(),
                        (mr, nr) => t.run_small(mr, nr),
                    }
                    i += MR;
                }
                j += NR;
            }
        }
        k0 += kc;
    }
}

/// Never called: [`available`] is false off x86-64.
///
/// # Safety
/// None needed; it only panics.
#[cfg(not(target_arch = "x86_64"))]
unsafe fn columns(
    _: &[f32],
    _: &[f32],
    _: OutPtr,
    _: usize,
    _: usize,
    _: usize,
    _: std::ops::Range<usize>,
) {
    unreachable!("available() is false off x86-64")
}

/// One tile: `out[i, j] += Σ_{l<kc} x[i, l] w[j, l]` for its rows `i` of `x` and rows `j` of `w`.
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
struct Tile {
    x: *const f32,
    xstride: usize,
    w: *const f32,
    wstride: usize,
    kc: usize,
    out: *mut f32,
    ostride: usize,
}

#[cfg(target_arch = "x86_64")]
impl Tile {
    /// An `R × C` tile; `R·C` accumulators plus `C + 1` loaded vectors fit the 32 registers.
    ///
    /// # Safety
    /// The CPU supports AVX-512F; `x` points to `R` rows and `w` to `C` rows (at their strides)
    /// of at least `kc` readable values each; `out` to `R × C` values (at `ostride`) that no
    /// other thread accesses meanwhile.
    #[target_feature(enable = "avx512f")]
    #[inline(never)]
    // One counter indexes several arrays at once: the loops unroll into straight-line code.
    #[allow(clippy::needless_range_loop)]
    unsafe fn run<const R: usize, const C: usize>(&self) {
        // SAFETY: every load and store below stays inside the rows the contract above names.
        unsafe {
            use std::arch::x86_64::*;
            let mut acc = [[_mm512_setzero_ps(); C]; R];
            let mut l = 0;
            let full = self.kc / 16 * 16;
            while l < full {
                let mut wv = [_mm512_setzero_ps(); C];
                for c in 0..C {
                    wv[c] = _mm512_loadu_ps(self.w.add(c * self.wstride + l));
                }
                for r in 0..R {
                    let xv = _mm512_loadu_ps(self.x.add(r * self.xstride + l));
                    for c in 0..C {
                        acc[r][c] = _mm512_fmadd_ps(xv, wv[c], acc[r][c]);
                    }
                }
                l += 16;
            }
            if l < self.kc {
                // The last partial vector: masked loads read only the `kc % 16` remaining values.
                let mask: __mmask16 = ((1u32 << (self.kc - l)) - 1) as u16;
                let mut wv = [_mm512_setzero_ps(); C];
                for c in 0..C {
                    wv[c] = _mm512_maskz_loadu_ps(mask, self.w.add(c * self.wstride + l));
                }
                for r in 0..R {
                    let xv = _mm512_maskz_loadu_ps(mask, self.x.add(r * self.xstride + l));
                    for c in 0..C {
                        acc[r][c] = _mm512_fmadd_ps(xv, wv[c], acc[r][c]);
                    }
                }
            }
            for r in 0..R {
                for c in 0..C {
                    *self.out.add(r * self.ostride + c) += _mm512_reduce_add_ps(acc[r][c]);
                }
            }
        }
    }

    /// Edge tiles of other shapes (at most 3 × 5), one accumulator at a time per pair.
    ///
    /// # Safety
    /// As [`Tile::run`] for an `r × c` tile.
    #[target_feature(enable = "avx512f")]
    unsafe fn run_small(&self, r: usize, c: usize) {
        // SAFETY: each single-column tile lies inside this one.
        unsafe {
            match (r, c) {
                (3, c) => (0..c).for_each(|j| self.column(j).run::<3, 1>()),
                (2, c) => (0..c).for_each(|j| self.column(j).run::<2, 1>()),
                (1, c) => (0..c).for_each(|j| self.column(j).run::<1, 1>()),
                _ => unreachable!("tile shapes are at most {MR} x {NR}"),
            }
        }
    }

    /// The tile of weight row `j` alone (a pointer computation only: valid to use when `j` is
    /// one of the tile's columns).
    fn column(&self, j: usize) -> Tile {
        Tile {
            w: self.w.wrapping_add(j * self.wstride),
            out: self.out.wrapping_add(j),
            ..*self
        }
    }
}

/// The main 4 × 6 tile, written out with one named variable per accumulator: LLVM keeps
/// these 24 in registers, while an array of them (as in [`Tile::run`]) ends up partly on the
/// stack (measured: 82 vs 66 GFLOP/s on one core). Called through a function pointer that the
/// optimiser cannot see through: inlined into [`columns`], the accumulators spill again.
///
/// # Safety
/// As [`Tile::run`] for a 4 × 6 tile.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn run_main(t: &Tile) {
    // SAFETY: every load and store below stays inside the tile's rows, as the contract says.
    unsafe {
        use std::arch::x86_64::*;
        let (x, xs, w, ws) = (t.x, t.xstride, t.w, t.wstride);
        let z = _mm512_setzero_ps();
        let (mut c00, mut c01, mut c02, mut c03, mut c04, mut c05) = (z, z, z, z, z, z);
        let (mut c10, mut c11, mut c12, mut c13, mut c14, mut c15) = (z, z, z, z, z, z);
        let (mut c20, mut c21, mut c22, mut c23, mut c24, mut c25) = (z, z, z, z, z, z);
        let (mut c30, mut c31, mut c32, mut c33, mut c34, mut c35) = (z, z, z, z, z, z);
        let mut l = 0;
        while l < t.kc {
            // A full vector, or the last partial one through a mask (reads only `kc % 16`).
            let mask: __mmask16 = if t.kc - l >= 16 {
                0xffff
            } else {
                ((1u32 << (t.kc - l)) - 1) as u16
            };
            let ld = |p: *const f32| _mm512_maskz_loadu_ps(mask, p.add(l));
            let (w0, w1, w2) = (ld(w), ld(w.add(ws)), ld(w.add(2 * ws)));
            let (w3, w4, w5) = (ld(w.add(3 * ws)), ld(w.add(4 * ws)), ld(w.add(5 * ws)));
            macro_rules! row {
                ($r:expr, $a0:ident, $a1:ident, $a2:ident, $a3:ident, $a4:ident, $a5:ident) => {
                    let xv = ld(x.add($r * xs));
                    $a0 = _mm512_fmadd_ps(xv, w0, $a0);
                    $a1 = _mm512_fmadd_ps(xv, w1, $a1);
                    $a2 = _mm512_fmadd_ps(xv, w2, $a2);
                    $a3 = _mm512_fmadd_ps(xv, w3, $a3);
                    $a4 = _mm512_fmadd_ps(xv, w4, $a4);
                    $a5 = _mm512_fmadd_ps(xv, w5, $a5);
                };
            }
            row!(0, c00, c01, c02, c03, c04, c05);
            row!(1, c10, c11, c12, c13, c14, c15);
            row!(2, c20, c21, c22, c23, c24, c25);
            row!(3, c30, c31, c32, c33, c34, c35);
            l += 16;
        }
        let first = [
            c00, c01, c02, c03, c04, c05, c10, c11, c12, c13, c14, c15, c20, c21, c22, c23,
        ];
        let second = [
            c24, c25, c30, c31, c32, c33, c34, c35, z, z, z, z, z, z, z, z,
        ];
        let mut sums = [0f32; 32];
        _mm512_storeu_ps(sums.as_mut_ptr(), hsum16(&first));
        _mm512_storeu_ps(sums.as_mut_ptr().add(16), hsum16(&second));
        for i in 0..MR * NR {
            let lane = 16 * (i / 16) + lane_of(i % 16);
            *t.out.add(i / NR * t.ostride + i % NR) += sums[lane];
        }
    }
}

/// Where [`hsum16`] puts the sum of its input `g`.
#[inline(always)]
const fn lane_of(g: usize) -> usize {
    (g % 4) * 4 + g / 4
}

/// The 16 lanes of each of 16 vectors added up: lane [`lane_of`]`(g)` of the result is the sum
/// of `v[g]`. Pairs of 128-bit blocks are added first, then pairs of those, then a 4 × 4
/// transpose-add inside the blocks: 48 instructions for 16 sums.
///
/// # Safety
/// The CPU supports AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn hsum16(v: &[std::arch::x86_64::__m512; 16]) -> std::arch::x86_64::__m512 {
    use std::arch::x86_64::*;
    // Blocks (a0+a2, a1+a3, b0+b2, b1+b3) of v[2i] = a, v[2i+1] = b.
    let mut half = [_mm512_setzero_ps(); 8];
    for (i, h) in half.iter_mut().enumerate() {
        let (a, b) = (v[2 * i], v[2 * i + 1]);
        *h = _mm512_add_ps(
            _mm512_shuffle_f32x4::<0b01_00_01_00>(a, b),
            _mm512_shuffle_f32x4::<0b11_10_11_10>(a, b),
        );
    }
    // Block q of quarter[i] holds 4 partial sums of v[4i + q].
    let mut quarter = [_mm512_setzero_ps(); 4];
    for (i, q) in quarter.iter_mut().enumerate() {
        let (a, b) = (half[2 * i], half[2 * i + 1]);
        *q = _mm512_add_ps(
            _mm512_shuffle_f32x4::<0b10_00_10_00>(a, b),
            _mm512_shuffle_f32x4::<0b11_01_11_01>(a, b),
        );
    }
    let t0 = _mm512_add_ps(
        _mm512_unpacklo_ps(quarter[0], quarter[1]),
        _mm512_unpackhi_ps(quarter[0], quarter[1]),
    );
    let t1 = _mm512_add_ps(
        _mm512_unpacklo_ps(quarter[2], quarter[3]),
        _mm512_unpackhi_ps(quarter[2], quarter[3]),
    );
    // Block q, lane i: the sum of v[4i + q].
    _mm512_add_ps(
        _mm512_castpd_ps(_mm512_unpacklo_pd(
            _mm512_castps_pd(t0),
            _mm512_castps_pd(t1),
        )),
        _mm512_castpd_ps(_mm512_unpackhi_pd(
            _mm512_castps_pd(t0),
            _mm512_castps_pd(t1),
        )),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(len: usize, seed: u64) -> Vec<f32> {
        let mut s = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (0..len)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    /// Every output within f32 rounding of the f64 dot product: `|err| ≤ 1e-6 Σ|x w|`.
    fn check(m: usize, n: usize, k: usize) {
        let (x, w) = (
            values(m * k, (m * 31 + k) as u64),
            values(n * k, (n * 17 + k) as u64),
        );
        let mut out = vec![0f32; m * n];
        gemm_wt(&x, &w, &mut out, m, n, k);
        for i in 0..m {
            for j in 0..n {
                let (xr, wr) = (&x[i * k..(i + 1) * k], &w[j * k..(j + 1) * k]);
                let exact: f64 = xr.iter().zip(wr).map(|(&a, &b)| a as f64 * b as f64).sum();
                let scale: f64 = xr
                    .iter()
                    .zip(wr)
                    .map(|(&a, &b)| (a as f64 * b as f64).abs())
                    .sum();
                let err = (out[i * n + j] as f64 - exact).abs();
                assert!(
                    err <= 1e-6 * scale.max(1e-30),
                    "m={m} n={n} k={k} out[{i},{j}] = {} vs {exact} (err {err:e})",
                    out[i * n + j]
                );
            }
        }
    }

    #[test]
    fn equals_f64_dot_products_on_every_tile_shape_and_tail() {
        if !available() {
            eprintln!("no AVX-512 on this CPU: the kernel is never used here");
            return;
        }
        for m in 1..=9 {
            for n in 1..=13 {
                for k in [1, 5, 16, 17, 40] {
                    check(m, n, k);
                }
            }
        }
        // Several passes over `in` (with and without a partial one) and threads sharing columns.
        for (m, n, k) in [
            (100, 130, 768),
            (30, 64, 2048),
            (7, 20, 3072),
            (50, 37, 1600),
            (3, 600, 900),
        ] {
            check(m, n, k);
        }
    }

    #[test]
    fn tensors_match_candle_and_fall_back_where_the_kernel_does_not_apply() {
        let x = Tensor::from_vec(values(10 * 70, 1), (10, 70), &Device::Cpu).unwrap();
        let w = Tensor::from_vec(values(33 * 70, 2), (33, 70), &Device::Cpu).unwrap();
        let plain = x.matmul(&w.t().unwrap()).unwrap();
        match matmul_wt(&x, &w).unwrap() {
            Some(y) => {
                let diff = (y - &plain).unwrap().abs().unwrap().max_all().unwrap();
                assert!(diff.to_scalar::<f32>().unwrap() < 1e-5);
            }
            None => assert!(!available()),
        }
        // f64, a strided view and a tracked tensor are left to candle.
        let x64 = x.to_dtype(DType::F64).unwrap();
        assert!(matmul_wt(&x64, &w.to_dtype(DType::F64).unwrap())
            .unwrap()
            .is_none());
        assert!(matmul_wt(&x.t().unwrap(), &w.narrow(1, 0, 10).unwrap())
            .unwrap()
            .is_none());
        let var = candle_core::Var::from_tensor(&x).unwrap();
        assert!(matmul_wt(var.as_tensor(), &w).unwrap().is_none());
    }

    #[test]
    fn non_finite_weights_reach_the_output() {
        if !available() {
            return;
        }
        // A NaN or infinite weight makes its output column non-finite, even against zero
        // inputs, so checks on the outputs see every bad weight that is used.
        for bad in [f32::NAN, f32::INFINITY] {
            let x = vec![0f32; 3 * 20];
            let mut w = values(7 * 20, 5);
            w[4 * 20 + 11] = bad;
            let mut out = vec![0f32; 3 * 7];
            gemm_wt(&x, &w, &mut out, 3, 7, 20);
            for i in 0..3 {
                assert!(!out[i * 7 + 4].is_finite());
                assert!(out[i * 7 + 3].is_finite());
            }
        }
    }
}

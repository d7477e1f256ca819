//! One tower's contraction when the split is the input of its last block (exclip's default
//! layers): the same numbers as the batched JVPs of [`super::side`], with a fraction of the work.
//!
//! Four exact shortcuts, all from linearity (notation of `docs/method-notes.md`; `d = x − r`):
//! - **`ln_1` and Q/K/V along the path.** Centring is linear, so the centred path state of row
//!   i is `a_i + α b_i` (`a = c(r)`, `b = c(d)`), and `W (γ ⊙ x̂) = (W γ a_i + α W γ b_i)/σ_i(α)`:
//!   two products of the rows give Q, K, V at every path point, and their tangents too. The
//!   LayerNorm tangent of `d_i` lies in the span of `b_i` and `x̂_i`, so
//!   `W J d_i = (W γ b_i (1 − ακ_i) − W γ a_i κ_i)/σ_i`, `κ_i = (a_i·b_i + α |b_i|²)/(D σ_i²)`.
//! - **One query row, per-head dot products.** Only the pooled row feeds the embedding. Its
//!   scores at any α are sums of fixed per-head dot products of the query parts with the key
//!   parts; a tangent on row s moves only key and value s, so its attention output is, per head,
//!   `P_s (δ_s (V_s − o) + v̇_s)` (`δ_s = scale q·k̇_s`) — a combination of four fixed vectors
//!   whose images under the out-projection are computed once per token and head.
//! - **The query's own tangent** (pooled token only): `Σ_j P_j g_j (V_j − o)`, `g_j = scale q̇·K_j`.
//! - **The sum over the path before the last products.** After the activation everything is
//!   linear except the final LayerNorm, whose tangent is `Pγ c(v)/σ − Pγ x̂ (x̂·v)/(Dσ)`: the
//!   path sum of `v/σ` goes through `fc2` and the projection once per token instead of once per
//!   token and path point; the other terms need dot products only. `ln_2`'s tangent likewise
//!   splits into `fc1(γ ⊙ ẋ)` and two rank-one corrections per path point. Cosine mode adds
//!   the radial part `ê (ê·ė)`, another dot product.
//!
//! What remains per (token, path point) is one row through `fc1`.
//!
//! SigLIP's attention-pooling head has the same structure — one query over every row — with a
//! learned probe as the query (no query tangent, no pooled token) and no residual around the
//! attention; its output is the embedding (no final LayerNorm, no projection). The same code
//! runs it with those parts set to zero or the identity.

use candle_core::{Tensor, D};

use super::settings::{Mode, Settings};
use super::side::PathEnds;
use crate::model::{mlp_half, ops, MlpHalf, Stack};
use crate::model::{Block, LayerNorm, Linear, TransformerConfig};
use crate::progress::Progress;
use crate::{Error, Result};

/// A tower from the input of its last single-query layer on: the last block, the final
/// LayerNorm and the projection; or a pooling head (its probe, its layers as a block).
pub(crate) struct LastBlock<'a> {
    cfg: &'a TransformerConfig,
    block: Block,
    probe: Option<&'a Tensor>,
    final_ln: Option<&'a LayerNorm>,
    projection: Option<&'a Linear>,
}

impl<'a> LastBlock<'a> {
    /// The last block of a tower's stack, or its pooling head if it has one.
    pub fn of(stack: Stack<'a>) -> Self {
        let (probe, block) = match stack.head {
            Some((probe, head)) => (Some(probe), head),
            None => (
                None,
                stack.blocks.last().expect("a tower has blocks").clone(),
            ),
        };
        LastBlock {
            cfg: stack.cfg,
            block,
            probe,
            final_ln: stack.final_ln,
            projection: stack.projection,
        }
    }

    /// The projection of `y` (the identity without one).
    fn project(&self, y: &Tensor) -> Result<Tensor> {
        match self.projection {
            Some(p) => ops::linear(y, p),
            None => Ok(y.clone()),
        }
    }
}

/// The contraction and the two ends of the path.
pub(crate) struct Contraction {
    /// `[tokens, proj]`, as [`super::side::TowerSide::contributions`].
    pub contributions: Tensor,
    /// The embeddings at α = 1 and α = 0, `[proj]` each.
    pub embedding: Tensor,
    pub path_end: Tensor,
}

/// `q·k` per head of every row of `q [A, H, dh]` with every row of `k [H, S, dh]`: `[A, H, S]`.
fn head_dots(q: &Tensor, k: &Tensor) -> Result<Tensor> {
    Ok(q.transpose(0, 1)?
        .contiguous()?
        .matmul(&k.transpose(1, 2)?)?
        .transpose(0, 1)?
        .contiguous()?)
}

/// What the shortcuts need from the ends `x`, `r` (`[S, D]`, S = rows up to the pooled one for
/// a causal tower).
struct Ends {
    /// `r` and `d = x − r` at the pooled row, `[D]`.
    r_pool: Tensor,
    d_pool: Tensor,
    /// Row sums `a·a`, `a·b`, `b·b`, `[S]`.
    aa: Tensor,
    ab: Tensor,
    bb: Tensor,
    /// Value parts `W γ a`, `W γ b`, `[H, S, dh]`, and the value offset `W β + bias`, `[H, 1, dh]`.
    va: Tensor,
    vb: Tensor,
    v0: Tensor,
    /// Dot products of the scaled query parts (offset, `W γ a`, `W γ b` at the pooled row) with
    /// the key offset, `[3, H, 1]`, and with the key parts, `[3, H, S]`.
    qk0: Tensor,
    qka: Tensor,
    qkb: Tensor,
    /// Each head's out-projection columns applied to that head's slice of `va`, `vb` (tokens
    /// only), `[T, 2H, D]`, and of `v0`, `[H, D]`.
    wv: Tensor,
    wv0: Tensor,
}

/// The forward at a batch of path points `[n]`, with what the tangents need.
struct Points {
    alpha: Tensor,
    /// `1/σ` of `ln_1` at every row `[n, S]`.
    inv1: Tensor,
    /// The pooled query's dot products with the key parts at these points: offset-free
    /// `q·(W γ a_j)`, `q·(W γ b_j)` `[n, H, S]`.
    qka: Tensor,
    qkb: Tensor,
    /// Attention weights `[n, H, S]` and output `[n, H, 1, dh]`.
    p: Tensor,
    o: Tensor,
    /// `ln_2` at the pooled row: `x̂` `[n, D]`, `1/σ` `[n, 1]`; the activation's slope `[n, F]`.
    xhat2: Tensor,
    inv2: Tensor,
    slope: Tensor,
    /// The final LayerNorm: `x̂` `[n, D]`, `1/σ` `[n, 1]`; embeddings `[n, E]`.
    xhat3: Tensor,
    inv3: Tensor,
    emb: Tensor,
}

impl LastBlock<'_> {
    fn heads(&self, t: &Tensor) -> Result<Tensor> {
        // [..., S, D] -> [..., H, S, dh] for [S, D] or [n, S, D]
        let (h, dh) = (self.cfg.heads, self.cfg.head_dim());
        Ok(match t.rank() {
            2 => {
                let s = t.dim(0)?;
                t.reshape((s, h, dh))?.transpose(0, 1)?.contiguous()?
            }
            _ => {
                let (n, s, _) = t.dims3()?;
                t.reshape((n, s, h, dh))?.transpose(1, 2)?.contiguous()?
            }
        })
    }

    fn scale(&self) -> f64 {
        1.0 / (self.cfg.head_dim() as f64).sqrt()
    }

    fn ends(&self, x: &Tensor, r: &Tensor, pool: usize, tokens: usize) -> Result<Ends> {
        let w = &self.block;
        let (h, dh) = (self.cfg.heads, self.cfg.head_dim());
        let centre =
            |t: &Tensor| -> Result<Tensor> { Ok(t.broadcast_sub(&t.mean_keepdim(D::Minus1)?)?) };
        let d = (x - r)?;
        let (a, b) = (centre(r)?, centre(&d)?);
        let dot = |u: &Tensor, v: &Tensor| -> Result<Tensor> { Ok((u * v)?.sum(D::Minus1)?) };
        let s = x.dim(0)?;
        // [γa; γb] through K and V; Q at the pooled row only.
        let g = &w.ln_1.weight;
        let rows = Tensor::cat(&[a.broadcast_mul(g)?, b.broadcast_mul(g)?], 0)?;
        let parts = |l: &Linear| -> Result<(Tensor, Tensor)> {
            let y = self.heads(&ops::linear_tangent(&rows, l)?)?; // [H, 2S, dh]
            Ok((
                y.narrow(1, 0, s)?.contiguous()?,
                y.narrow(1, s, s)?.contiguous()?,
            ))
        };
        let offset = |l: &Linear| -> Result<Tensor> {
            Ok(ops::linear(&w.ln_1.bias.unsqueeze(0)?, l)?.reshape((h, 1, dh))?)
        };
        let (ka, kb) = parts(&w.k)?;
        let (va, vb) = parts(&w.v)?;
        let (k0, v0) = (offset(&w.k)?, offset(&w.v)?);
        // The query's offset and its parts along the path; a probe is all offset, and no row of
        // the input is the query's or gets a residual.
        let (q, r_pool, d_pool) = match self.probe {
            None => {
                let pooled = Tensor::stack(&[a.get(pool)?, b.get(pool)?], 0)?.broadcast_mul(g)?;
                let q = Tensor::cat(
                    &[
                        &offset(&w.q)?.reshape((1, h * dh))?,
                        &ops::linear_tangent(&pooled, &w.q)?,
                    ],
                    0,
                )?;
                (q, r.get(pool)?, d.get(pool)?)
            }
            Some(probe) => {
                let q0 = ops::linear(&probe.unsqueeze(0)?, &w.q)?;
                let zero = q0.zeros_like()?;
                let q = Tensor::cat(&[&q0, &zero, &zero], 0)?;
                let none = r.get(0)?.zeros_like()?;
                (q, none.clone(), none)
            }
        };
        let q = (q.reshape((3, h, dh))? * self.scale())?;
        // Each head's out-projection columns applied to that head's value parts: [T, 2H, D].
        let proj = |v: &Tensor| per_head_out(&v.transpose(0, 1)?, w); // [·, H, D]
        let wv = Tensor::cat(
            &[
                proj(&va.narrow(1, 0, tokens)?)?,
                proj(&vb.narrow(1, 0, tokens)?)?,
            ],
            1,
        )?;
        let wv0 = proj(&v0)?.squeeze(0)?; // [H, D]
        Ok(Ends {
            r_pool,
            d_pool,
            aa: dot(&a, &a)?,
            ab: dot(&a, &b)?,
            bb: dot(&b, &b)?,
            qk0: head_dots(&q, &k0)?,
            qka: head_dots(&q, &ka)?,
            qkb: head_dots(&q, &kb)?,
            va,
            vb,
            v0,
            wv,
            wv0,
        })
    }

    /// The forward at path points `alphas`: the pooled row only past the attention.
    fn points(&self, e: &Ends, alphas: &[f32], pool: usize) -> Result<Points> {
        let w = &self.block;
        let (dev, dt) = (e.aa.device(), e.aa.dtype());
        let n = alphas.len();
        let width = self.cfg.width;
        let eps = self.cfg.layer_norm_eps;
        let alpha = Tensor::from_slice(alphas, n, dev)?.to_dtype(dt)?;
        let col = alpha.reshape((n, 1))?;
        // 1/σ(α) of every row: σ² = (a·a + 2α a·b + α² b·b)/D + eps, [n, S].
        let var = (e
            .aa
            .unsqueeze(0)?
            .broadcast_add(&col.broadcast_mul(&(&e.ab * 2.0)?.unsqueeze(0)?)?)?
            + col.sqr()?.broadcast_mul(&e.bb.unsqueeze(0)?)?)?;
        let inv1 = ((var / width as f64)? + eps)?.sqrt()?.recip()?;
        // The query q = q0 + β (qa + α qb), β = 1/σ at the pooled row; its dot products with the
        // key parts are combinations of the fixed ones: [n, H, ·].
        let beta = inv1.narrow(1, pool, 1)?; // [n, 1]
        let mix = |t: &Tensor| -> Result<Tensor> {
            // t [3, H, S] → t0 + β (t1 + α t2)
            let (t0, t1, t2) = (
                t.get(0)?.unsqueeze(0)?,
                t.get(1)?.unsqueeze(0)?,
                t.get(2)?.unsqueeze(0)?,
            );
            let inner = t1.broadcast_add(&col.unsqueeze(2)?.broadcast_mul(&t2)?)?;
            Ok(t0.broadcast_add(&beta.unsqueeze(2)?.broadcast_mul(&inner)?)?)
        };
        let (qk0, qka, qkb) = (mix(&e.qk0)?, mix(&e.qka)?, mix(&e.qkb)?);
        // Scores q·(k0 + (Wγa_j + α Wγb_j)/σ_j), then the attention output likewise.
        let g = inv1.unsqueeze(1)?; // [n, 1, S]
        let scores = qk0.broadcast_add(
            &qka.broadcast_add(&qkb.broadcast_mul(&col.unsqueeze(2)?)?)?
                .broadcast_mul(&g)?,
        )?;
        let p = ops::softmax_last_dim(&scores)?; // [n, H, S]
        let o = weighted_values(e, &p.broadcast_mul(&g)?, &alpha)?
            .broadcast_add(&e.v0.unsqueeze(0)?)?; // [n, H, 1, dh]
        let merged = o.squeeze(2)?.reshape((n, width))?;
        let xp = e
            .r_pool
            .unsqueeze(0)?
            .broadcast_add(&col.broadcast_mul(&e.d_pool.unsqueeze(0)?)?)?;
        let x1 = (xp + ops::linear(&merged, &w.out)?)?;
        let MlpHalf {
            y: out, c2, slope, ..
        } = mlp_half(self.cfg, w, &x1, true)?;
        let slope = slope.expect("asked for");
        // Without a final LayerNorm its x̂ is zero and 1/σ one: the tangent rules below then
        // reduce to the identity.
        let (xhat3, inv3, emb) = match self.final_ln {
            Some(ln) => {
                let (y, c3) = ops::layer_norm_cached(&out, ln, eps)?;
                (c3.xhat, c3.inv_std, self.project(&y)?)
            }
            None => (
                out.zeros_like()?,
                Tensor::ones((n, 1), dt, dev)?,
                self.project(&out)?,
            ),
        };
        Ok(Points {
            alpha,
            inv1,
            qka,
            qkb,
            p,
            o,
            xhat2: c2.xhat,
            inv2: c2.inv_std,
            slope,
            xhat3,
            inv3,
            emb,
        })
    }
}

/// `Σ_j c_j (Wγa_j + α Wγb_j)` per point and head for weights `c [n, H, S]`: `[n, H, 1, dh]`.
fn weighted_values(e: &Ends, c: &Tensor, alpha: &Tensor) -> Result<Tensor> {
    let n = c.dim(0)?;
    let c = c.transpose(0, 1)?.contiguous()?; // [H, n, S]
    let a = c.matmul(&e.va)?; // [H, n, dh]
    let b = c.matmul(&e.vb)?.broadcast_mul(&alpha.reshape((1, n, 1))?)?;
    Ok((a + b)?.transpose(0, 1)?.unsqueeze(2)?)
}

/// `(1/N) Σ_n JVP(e, r + α_n (x − r), (x − r) on token s)` for tokens `s < tokens`, pooled at
/// `pool`, for `x`, `r` `[S, D]` entering the last block. No row after `pool` may reach the
/// pooled one: under a causal mask pass rows `0..=pool` only.
pub(crate) fn integrate(
    tower: &LastBlock,
    PathEnds { x, r }: PathEnds,
    pool: usize,
    tokens: usize,
    label: &str,
    settings: &Settings,
    progress: &mut dyn Progress,
) -> Result<Contraction> {
    let w = &tower.block;
    let e = tower.ends(x, r, pool, tokens)?;
    let (dev, dt) = (x.device(), x.dtype());
    let (hh, width) = (tower.cfg.heads, tower.cfg.width);
    let mlp = w.fc1.weight.dim(0)?;
    let alphas = settings.alphas();
    let steps = alphas.len();

    // Fixed vectors: the final LayerNorm's gain through the projection (Pγ), Pγ 1, fc2's
    // column sums, fc1 of ln_2's gain.
    // Without them: γ = 1, P = identity, and no centring (Pγ1 = 0).
    let g3 = match tower.final_ln {
        Some(ln) => ln.weight.clone(),
        None => Tensor::ones(width, dt, dev)?,
    };
    let pg = |t: &Tensor| -> Result<Tensor> {
        let t = t.broadcast_mul(&g3)?;
        match tower.projection {
            Some(p) => ops::linear_tangent(&t, p),
            None => Ok(t),
        }
    };
    let pg_one = match tower.final_ln {
        Some(_) => pg(&g3.ones_like()?.unsqueeze(0)?)?,
        None => pg(&g3.zeros_like()?.unsqueeze(0)?)?,
    }; // [1, E]
       // (as a product: candle sums over a leading axis in a slow strided loop)
    let fc2_sum = Tensor::ones((1, width), dt, dev)?.matmul(&w.fc2.weight)?; // [1, F]
    let g2 = &w.ln_2.weight;
    let fc1_g2 = ops::linear_tangent(&g2.unsqueeze(0)?, &w.fc1)?; // [1, F]
    let hit: Vec<f64> = (0..tokens)
        .map(|i| match i == pool && tower.probe.is_none() {
            true => 1.0,
            false => 0.0,
        })
        .collect();
    let hit = Tensor::from_vec(hit, (1, tokens, 1), dev)?.to_dtype(dt)?;
    let (ab, bb) = (e.ab.narrow(0, 0, tokens)?, e.bb.narrow(0, 0, tokens)?);

    let per_point = tokens * (3 * mlp + 4 * width);
    let chunk = (settings.max_batch_elements / per_point.max(1)).clamp(1, steps);
    progress.start(label, (tokens * steps) as u64);
    let mut acc_x = Tensor::zeros((tokens, width), dt, dev)?;
    let mut acc_m = Tensor::zeros((tokens, mlp), dt, dev)?;
    let mut rest = Tensor::zeros((tokens, pg_one.dim(1)?), dt, dev)?;
    for a0 in (0..steps).step_by(chunk) {
        let pts = tower.points(&e, &alphas[a0..(a0 + chunk).min(steps)], pool)?;
        let n = pts.alpha.dim(0)?;
        let col = pts.alpha.reshape((n, 1))?;
        // ln_1's tangent factors per token: keep = (1 − ακ)/σ, drop = κ/σ.
        let inv = pts.inv1.narrow(1, 0, tokens)?; // [n, T]
        let kappa = ((ab
            .unsqueeze(0)?
            .broadcast_add(&col.broadcast_mul(&bb.unsqueeze(0)?)?)?
            * inv.sqr()?)?
            / width as f64)?;
        let keep = (col.broadcast_mul(&kappa)?.affine(-1.0, 1.0)? * &inv)?;
        let drop = (&kappa * &inv)?;
        let (keep_h, drop_h, inv_h) = (keep.unsqueeze(1)?, drop.unsqueeze(1)?, inv.unsqueeze(1)?); // [n, 1, T]
                                                                                                   // δ_s = scale q·k̇_s, k̇_s = keep Wγb_s − drop Wγa_s; coefficients of each token's
                                                                                                   // attention-output tangent on (Wγa_s, Wγb_s, v0, o) per head: [n, H, T].
        let (qka, qkb) = (pts.qka.narrow(2, 0, tokens)?, pts.qkb.narrow(2, 0, tokens)?);
        let delta = (qkb.broadcast_mul(&keep_h)? - qka.broadcast_mul(&drop_h)?)?;
        let ps = pts.p.narrow(2, 0, tokens)?;
        let pd = (&ps * &delta)?;
        let c_a = (pd.broadcast_mul(&inv_h)? - ps.broadcast_mul(&drop_h)?)?;
        let c_b = (pd
            .broadcast_mul(&inv_h)?
            .broadcast_mul(&col.unsqueeze(2)?)?
            + ps.broadcast_mul(&keep_h)?)?;
        // The pooled token also moves the query: Σ_j P_j g_j (V_j − o), g_j = scale q̇·K_j with
        // q̇ = keep_p qb − drop_p qa (dot products with the keys from the fixed ones).
        let key_dots = |i: usize| -> Result<Tensor> {
            // scaled q_i · K_j(α) = q_i·k0 + (q_i·Wγa_j + α q_i·Wγb_j)/σ_j, [n, H, S]
            let k = e.qka.get(i)?.unsqueeze(0)?.broadcast_add(
                &e.qkb
                    .get(i)?
                    .unsqueeze(0)?
                    .broadcast_mul(&col.unsqueeze(2)?)?,
            )?;
            Ok(k.broadcast_mul(&pts.inv1.unsqueeze(1)?)?
                .broadcast_add(&e.qk0.get(i)?.unsqueeze(0)?)?)
        };
        let kp = keep.narrow(1, pool, 1)?.unsqueeze(2)?; // [n, 1, 1]
        let dp = drop.narrow(1, pool, 1)?.unsqueeze(2)?;
        let gq = (key_dots(2)?.broadcast_mul(&kp)? - key_dots(1)?.broadcast_mul(&dp)?)?;
        let pg_q = (&pts.p * gq)?; // [n, H, S]
        let own = (weighted_values(
            &e,
            &pg_q.broadcast_mul(&pts.inv1.unsqueeze(1)?)?,
            &pts.alpha,
        )? + pg_q
            .sum_keepdim(2)?
            .unsqueeze(3)?
            .broadcast_mul(&e.v0.unsqueeze(0)?.broadcast_sub(&pts.o)?)?)?;
        let own = ops::linear_tangent(&own.reshape((n, width))?, &w.out)?; // [n, D]
                                                                           // ẋ1 = out-projection of the attention tangent (+ d on the pooled row): per token,
                                                                           // (c_a, c_b) against the projected value parts; per point, (P δ, −P δ, pooled-row hit)
                                                                           // against the projected v0, o and the pooled row's extra.
        let per_token = Tensor::cat(&[&c_a, &c_b], 1)?
            .permute((2, 0, 1))?
            .contiguous()?; // [T, n, 2H]
        let x1d = per_token.matmul(&e.wv)?.transpose(0, 1)?; // [n, T, D]
        let wo_h = per_head_out(&pts.o.squeeze(2)?, w)?; // [n, H, D]
        let extra = own.broadcast_add(&e.d_pool.unsqueeze(0)?)?.unsqueeze(1)?; // [n, 1, D]
        let per_point_rows = Tensor::cat(
            &[
                &e.wv0.unsqueeze(0)?.broadcast_as((n, hh, width))?,
                &wo_h,
                &extra,
            ],
            1,
        )?; // [n, 2H+1, D]
        let per_point_coef = Tensor::cat(
            &[
                &pd.transpose(1, 2)?,
                &pd.neg()?.transpose(1, 2)?,
                &hit.broadcast_as((n, tokens, 1))?,
            ],
            2,
        )?
        .contiguous()?; // [n, T, 2H+1]
        let x1d = (x1d + per_point_coef.matmul(&per_point_rows.contiguous()?)?)?.contiguous()?; // [n, T, D]

        // ln_2's tangent through fc1: Z = fc1(γ ⊙ ẋ1), corrected by fc1(γ) mean(ẋ1) and
        // fc1(γ ⊙ x̂2) (x̂2·ẋ1)/D, all over σ2; then the slope.
        let z = ops::linear_tangent(&x1d.broadcast_mul(g2)?, &w.fc1)?; // [n, T, F]
        let fc1_x2 = ops::linear_tangent(&pts.xhat2.broadcast_mul(g2)?, &w.fc1)?; // [n, F]
                                                                                  // Dot products of ẋ1 with fixed vectors per point: 1, x̂2, x̂3 (and Pγᵀê): [n, T, k].
        let cosine = settings.mode == Mode::Cosine;
        let norm = pts.emb.sqr()?.sum_keepdim(1)?.sqrt()?; // [n, 1]
        let unit = pts.emb.broadcast_div(&norm)?;
        let f = match tower.projection {
            Some(p) => unit.matmul(&p.weight)?,
            None => unit.clone(),
        }
        .broadcast_mul(&g3)?; // Pγᵀ ê: [n, D]
        let mut vecs = vec![
            Tensor::ones((n, width), dt, dev)?,
            pts.xhat2.clone(),
            pts.xhat3.clone(),
        ];
        if cosine {
            vecs.push(f.clone());
        }
        let xdots = x1d.matmul(&Tensor::stack(&vecs, 2)?)?; // [n, T, k]
        let mu = (xdots.narrow(2, 0, 1)?.squeeze(2)? / width as f64)?; // mean(ẋ1)
        let t = (xdots.narrow(2, 1, 1)?.squeeze(2)? / width as f64)?; // x̂2·ẋ1/D
                                                                      // ṁ = s ⊙ (Z − fc1(γ) μ − fc1(γx̂2) t)/σ2; its dot products with fixed vectors u:
                                                                      // u'·Z − (u'·fc1(γ)) μ − (u'·fc1(γx̂2)) t, u' = u ⊙ s/σ2.
        let sl = pts.slope.broadcast_mul(&pts.inv2)?; // [n, F]
        let mut us = vec![
            fc2_sum.broadcast_as((n, mlp))?.contiguous()?,
            pts.xhat3.matmul(&w.fc2.weight)?,
        ];
        if cosine {
            us.push(f.matmul(&w.fc2.weight)?);
        }
        let us = Tensor::stack(&us, 2)?.broadcast_mul(&sl.unsqueeze(2)?)?; // [n, F, k]
        let zd = z.matmul(&us)?; // [n, T, k]
        let c1 = fc1_g2.unsqueeze(0)?.broadcast_matmul(&us)?; // [n, 1, k]
        let c2 = fc1_x2.unsqueeze(1)?.matmul(&us)?;
        let mdots =
            ((zd - mu.unsqueeze(2)?.broadcast_mul(&c1)?)? - t.unsqueeze(2)?.broadcast_mul(&c2)?)?; // [n, T, k]
        let mean_v =
            ((xdots.narrow(2, 0, 1)? + mdots.narrow(2, 0, 1)?)?.squeeze(2)? / width as f64)?; // mean(v)
        let yv = (xdots.narrow(2, 2, 1)? + mdots.narrow(2, 1, 1)?)?.squeeze(2)?; // x̂3·v

        // Per point weight: the final LayerNorm's 1/σ (and 1/|e| in cosine mode).
        let weight = if cosine {
            (&pts.inv3 / &norm)?
        } else {
            pts.inv3.clone()
        }; // [n, 1]
        acc_x = (acc_x
            + weight
                .t()?
                .matmul(&x1d.reshape((n, tokens * width))?)?
                .reshape((tokens, width))?)?;
        let ws = sl.broadcast_mul(&weight)?; // [n, F]
        let zsum = ops::weighted_sum(&z, &ws)?; // Σ_n ws_n ⊙ Z_n: [T, F]
        let corr =
            (mu.t()?.matmul(&ws.broadcast_mul(&fc1_g2)?)? + t.t()?.matmul(&(&ws * &fc1_x2)?)?)?; // [T, F]
        acc_m = ((acc_m + zsum)? - corr)?;
        // Σ_n weight_n (Pγ1 mean(v) + Pγx̂3 (x̂3·v)/D) for every token: [T, E].
        let pg_y = pg(&pts.xhat3)?; // [n, E]
        let m_coef = mean_v.broadcast_mul(&weight)?; // [n, T]
        let y_coef = (yv.broadcast_mul(&weight)? / width as f64)?;
        let mut sub =
            (m_coef.sum(0)?.unsqueeze(1)?.matmul(&pg_one)? + y_coef.t()?.matmul(&pg_y)?)?;
        if cosine {
            // ê·ė per (point, token), ė = (Pγ c(v) − Pγx̂ (x̂·v)/D)/σ3; then Σ_n ê_n (ê·ė)/|e|.
            let fv = (xdots.narrow(2, 3, 1)? + mdots.narrow(2, 2, 1)?)?.squeeze(2)?; // (Pγᵀê)·v
            let e_one = unit.matmul(&pg_one.t()?)?; // ê·Pγ1: [n, 1]
            let e_y = (&unit * &pg_y)?.sum_keepdim(1)?; // ê·Pγx̂: [n, 1]
            let along = ((fv - mean_v.broadcast_mul(&e_one)?)?
                - (yv.broadcast_mul(&e_y)? / width as f64)?)?
                .broadcast_mul(&pts.inv3)?;
            sub = (sub + along.broadcast_div(&norm)?.t()?.matmul(&unit)?)?;
        }
        rest = (rest + sub)?;
        progress.advance((tokens * n) as u64);
        if progress.cancelled() {
            return Err(Error::Cancelled);
        }
    }
    // Σ_n weight_n Pγ v: fc2 and the projection once, on the path sums.
    let v_sum = (acc_x + ops::linear_tangent(&acc_m, &w.fc2)?)?;
    let contributions = ((pg(&v_sum)? - rest)? / steps as f64)?;
    let ends = tower.points(&e, &[1.0, 0.0], pool)?.emb;
    Ok(Contraction {
        contributions,
        embedding: ends.get(0)?,
        path_end: ends.get(1)?,
    })
}

/// Each head's out-projection columns applied to that head's slice of `v [A, H, dh]`:
/// `[A, H, D]` (no bias).
fn per_head_out(v: &Tensor, w: &Block) -> Result<Tensor> {
    let (_, h, dh) = v.dims3()?;
    let wo = w
        .out
        .weight
        .reshape((h * dh, h, dh))?
        .transpose(0, 1)?
        .contiguous()?; // [H, D, dh]
    let v = v.transpose(0, 1)?.contiguous()?; // [H, A, dh]
    Ok(v.matmul(&wo.transpose(1, 2)?)?.transpose(0, 1)?) // [A, H, D]
}

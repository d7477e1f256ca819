//! The pre-LN transformer block shared by both towers (causal mask or none): forward, JVP and,
//! for training, the reverse pass (VJP) over a taped forward.
//!
//! Layouts: primal `[B, S, W]`; dense tangent `[T, B, S, W]` (T tangents per primal, the primal
//! broadcast over T). Linears fold every leading axis into rows, so T×B×S rows go through one
//! matmul.

use candle_core::Tensor;

use super::config::TransformerConfig;
use super::ops::{self, AttnCache, LnCache};
use super::tangents::{index_tensor, one_hot, Tangents};
use super::weights::{Block, LayerNorm, Linear};
use crate::Result;

/// Which query rows a block computes.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Rows<'a> {
    /// Every row.
    All,
    /// One row per sequence (`pool[b]`): the last block, where only the pooled row feeds the
    /// embedding. Keys and values still cover every row.
    Pooled(&'a [usize]),
    /// One query per sequence, the learned probe `[W]` itself (no LayerNorm, no query tangent),
    /// and no residual around the attention: SigLIP's attention-pooling head.
    Probe(&'a Tensor),
}

/// What a block's forward keeps for its JVP and its VJP.
#[derive(Clone, Debug)]
pub(crate) struct BlockTape {
    /// `ln_1` over every row, and its output (the keys' and values' input).
    c1: LnCache,
    h: Tensor,
    /// The query rows of `h` (every row, or the pooled ones).
    hq: Tensor,
    attn: AttnCache,
    /// Attention output, heads merged `[B, Sq, W]` (the out-projection's input).
    o: Tensor,
    c2: LnCache,
    /// `ln_2`'s output (fc1's input), the activation's slope and output (fc2's input).
    h2: Tensor,
    slope: Tensor,
    m: Tensor,
}

/// `[B, 1, W]` values placed at rows `pool[b]` of a zero `[B, S, W]`.
fn scatter_rows(v: &Tensor, pool: &[usize], s: usize) -> Result<Tensor> {
    let hit = one_hot(pool, s, v.dtype(), v.device())?.unsqueeze(2)?; // [B, S, 1]
    Ok(hit.broadcast_mul(v)?)
}

/// A tower from its first block on: the blocks, the masking rule, and what turns the last
/// block's output into the embedding — CLIP (both towers) and SigLIP's text tower: the pooled
/// row through a final LayerNorm and a projection; SigLIP's image tower: every row through the
/// attention-pooling head, which is the embedding.
pub(crate) struct Stack<'a> {
    pub cfg: &'a TransformerConfig,
    pub blocks: &'a [Block],
    pub causal: bool,
    /// The pooling head: its probe and its layers as a block ([`crate::model::PoolingHead`]).
    pub head: Option<(&'a Tensor, Block)>,
    pub final_ln: Option<&'a LayerNorm>,
    pub projection: Option<&'a Linear>,
}

/// The MLP half of a block, `x1 + fc2(act(fc1(ln_2(x1))))`, with what its tangent and reverse
/// rules need (the activation's slope only when asked for).
pub(crate) struct MlpHalf {
    pub y: Tensor,
    pub c2: LnCache,
    /// `ln_2`'s output (fc1's input), the activation's slope and output (fc2's input).
    pub h2: Tensor,
    pub slope: Option<Tensor>,
    pub m: Tensor,
}

/// [`MlpHalf`] of `x1` (the residual stream after attention) through block `w`.
pub(crate) fn mlp_half(
    cfg: &TransformerConfig,
    w: &Block,
    x1: &Tensor,
    slope: bool,
) -> Result<MlpHalf> {
    let (h2, c2) = ops::layer_norm_cached(x1, &w.ln_2, cfg.layer_norm_eps)?;
    let z = ops::linear(&h2, &w.fc1)?;
    let (m, slope) = match slope {
        true => {
            let (m, s) = ops::activation_with_slope(&z, cfg.activation)?;
            (m, Some(s))
        }
        false => (ops::activation(&z, cfg.activation)?, None),
    };
    let y = (x1 + ops::linear(&m, &w.fc2)?)?;
    Ok(MlpHalf {
        y,
        c2,
        h2,
        slope,
        m,
    })
}

/// Rows `pool[b]` of `x [..., B, S, W]` → `[..., B, 1, W]` (one index_select over all rows).
pub(crate) fn select_rows(x: &Tensor, pool: &[usize]) -> Result<Tensor> {
    let dims = x.dims().to_vec();
    let r = dims.len();
    let (b, s, w) = (dims[r - 3], dims[r - 2], dims[r - 1]);
    let lead: usize = dims[..r - 3].iter().product();
    let idx: Vec<usize> = (0..lead)
        .flat_map(|l| {
            pool.iter()
                .enumerate()
                .map(move |(bi, &p)| (l * b + bi) * s + p)
        })
        .collect();
    let idx = index_tensor(&idx, x.device())?;
    let y = x
        .contiguous()?
        .reshape((lead * b * s, w))?
        .index_select(&idx, 0)?;
    let mut out = dims;
    out[r - 2] = 1;
    Ok(y.reshape(out)?)
}

impl Stack<'_> {
    fn heads(&self, y: &Tensor) -> Result<Tensor> {
        // [B, S, W] -> [B, H, S, d]
        let (b, s, _) = y.dims3()?;
        let h = self.cfg.heads;
        Ok(y.reshape((b, s, h, self.cfg.head_dim()))?
            .transpose(1, 2)?
            .contiguous()?)
    }

    fn heads_tangent(&self, yd: &Tensor) -> Result<Tensor> {
        // [T, B, S, W] -> [T, B, H, S, d] (a view; the attention tangent makes the one copy)
        let (t, b, s, _) = yd.dims4()?;
        let h = self.cfg.heads;
        Ok(yd
            .reshape((t, b, s, h, self.cfg.head_dim()))?
            .permute((0, 1, 3, 2, 4))?)
    }

    fn scale(&self) -> f64 {
        1.0 / (self.cfg.head_dim() as f64).sqrt()
    }

    /// Additive causal mask for the query rows: `[1,1,S,S]` or `[B,1,1,S]`.
    fn mask(&self, x: &Tensor, rows: Rows) -> Result<Option<Tensor>> {
        if !self.causal {
            return Ok(None);
        }
        let (b, s, _) = x.dims3()?;
        let row = |i: usize| (0..s).map(move |j| if j > i { f64::NEG_INFINITY } else { 0.0 });
        let m = match rows {
            Rows::Probe(_) => return Ok(None),
            Rows::All => Tensor::from_vec(
                (0..s).flat_map(row).collect::<Vec<_>>(),
                (1, 1, s, s),
                x.device(),
            )?,
            Rows::Pooled(pool) => Tensor::from_vec(
                pool.iter().flat_map(|&p| row(p)).collect::<Vec<_>>(),
                (b, 1, 1, s),
                x.device(),
            )?,
        };
        Ok(Some(m.to_dtype(x.dtype())?))
    }

    fn eps(&self) -> f64 {
        self.cfg.layer_norm_eps
    }

    /// One block's forward: `[B,S,W]` → `[B,S,W]` (All) or `[B,1,W]` (Pooled).
    pub fn block_forward(&self, w: &Block, x: &Tensor, rows: Rows) -> Result<Tensor> {
        Ok(self.block(w, x, rows, false)?.0)
    }

    /// One block's forward, keeping what [`Self::block_jvp`] and [`Self::block_vjp`] need.
    pub fn block_forward_taped(
        &self,
        w: &Block,
        x: &Tensor,
        rows: Rows,
    ) -> Result<(Tensor, BlockTape)> {
        let (y, tape) = self.block(w, x, rows, true)?;
        Ok((y, tape.expect("kept when asked for")))
    }

    /// The block forward both of the above are: the tape costs nothing but the activation's
    /// slope, so it is assembled only when `keep`.
    fn block(
        &self,
        w: &Block,
        x: &Tensor,
        rows: Rows,
        keep: bool,
    ) -> Result<(Tensor, Option<BlockTape>)> {
        let (b, _, width) = x.dims3()?;
        let (h, c1) = ops::layer_norm_cached(x, &w.ln_1, self.eps())?;
        let k = self.heads(&ops::linear(&h, &w.k)?)?;
        let v = self.heads(&ops::linear(&h, &w.v)?)?;
        let (hq, xr) = match rows {
            Rows::All => (h.clone(), Some(x.clone())),
            Rows::Pooled(pool) => (select_rows(&h, pool)?, Some(select_rows(x, pool)?)),
            Rows::Probe(probe) => {
                let q = probe.reshape((1, 1, width))?.broadcast_as((b, 1, width))?;
                (q.contiguous()?, None)
            }
        };
        let q = self.heads(&ops::linear(&hq, &w.q)?)?;
        let sq = q.dim(2)?;
        let mask = self.mask(x, rows)?;
        let (o, attn) = ops::attention_cached(&q, &k, &v, mask.as_ref(), self.scale())?;
        let o = o.transpose(1, 2)?.contiguous()?.reshape((b, sq, width))?;
        let x1 = match xr {
            Some(xr) => (xr + ops::linear(&o, &w.out)?)?,
            None => ops::linear(&o, &w.out)?,
        };
        let MlpHalf {
            y,
            c2,
            h2,
            slope,
            m,
        } = mlp_half(self.cfg, w, &x1, keep)?;
        let tape = slope.map(|slope| BlockTape {
            c1,
            h,
            hq,
            attn,
            o,
            c2,
            h2,
            slope,
            m,
        });
        Ok((y, tape))
    }

    /// One block's VJP: the gradient `gy` of the output (`[B,S,W]`, or `[B,1,W]` when pooled)
    /// → the input's gradient `[B,S,W]` and every weight's, in a [`Block`].
    pub fn block_vjp(
        &self,
        w: &Block,
        tape: &BlockTape,
        gy: &Tensor,
        rows: Rows,
    ) -> Result<(Tensor, Block)> {
        let (b, s, width) = tape.h.dims3()?;
        let sq = tape.o.dim(1)?;
        let (gm, fc2) = ops::linear_vjp(&tape.m, &w.fc2, gy)?;
        let gz = ops::activation_vjp(&tape.slope, &gm)?;
        let (gh2, fc1) = ops::linear_vjp(&tape.h2, &w.fc1, &gz)?;
        let (gx1, ln_2) = ops::layer_norm_vjp(&tape.c2, &w.ln_2, &gh2)?;
        let gx1 = (gy + gx1)?;

        let (go, out) = ops::linear_vjp(&tape.o, &w.out, &gx1)?;
        let go = go
            .reshape((b, sq, self.cfg.heads, self.cfg.head_dim()))?
            .transpose(1, 2)?;
        let (gq, gk, gv) = ops::attention_vjp(&tape.attn, &go)?;
        let merge = |g: Tensor| -> Result<Tensor> {
            let n = g.dim(2)?;
            Ok(g.transpose(1, 2)?.contiguous()?.reshape((b, n, width))?)
        };
        let (ghq, q) = ops::linear_vjp(&tape.hq, &w.q, &merge(gq)?)?;
        let (ghk, k) = ops::linear_vjp(&tape.h, &w.k, &merge(gk)?)?;
        let (ghv, v) = ops::linear_vjp(&tape.h, &w.v, &merge(gv)?)?;
        let to_rows = |g: &Tensor| -> Result<Tensor> {
            Ok(match rows {
                Rows::All => g.clone(),
                Rows::Pooled(pool) => scatter_rows(g, pool, s)?,
                Rows::Probe(_) => {
                    return Err(crate::Error::InvalidArgument(
                        "the reverse pass of an attention-pooling head is not implemented".into(),
                    ))
                }
            })
        };
        let gh = ((ghk + ghv)? + to_rows(&ghq)?)?;
        let (gx, ln_1) = ops::layer_norm_vjp(&tape.c1, &w.ln_1, &gh)?;
        let gx = (gx + to_rows(&gx1)?)?;
        let grad = Block {
            ln_1,
            q,
            k,
            v,
            out,
            ln_2,
            fc1,
            fc2,
        };
        Ok((gx, grad))
    }

    /// One block's JVP. The input tangent is dense `[T,B,S,W]` or single-row; the output
    /// tangent is dense `[T,B,S,W]` (All) or `[T,B,1,W]` (Pooled).
    pub fn block_jvp(
        &self,
        w: &Block,
        x: &Tensor,
        xd: &Tangents,
        rows: Rows,
    ) -> Result<(Tensor, Tensor)> {
        let (b, s, width) = x.dims3()?;
        let (y, tape) = self.block_forward_taped(w, x, rows)?;
        let (c1, ac) = (&tape.c1, &tape.attn);
        let sq = tape.o.dim(1)?;

        // Tangent of the attention output, and of the residual stream at the query rows.
        let (od, xrd) = match xd {
            Tangents::Dense(xd) => {
                let hd = ops::layer_norm_tangent(c1, xd, &w.ln_1)?;
                let kd = self.heads_tangent(&ops::linear_tangent(&hd, &w.k)?)?;
                let vd = self.heads_tangent(&ops::linear_tangent(&hd, &w.v)?)?;
                let (qd, xrd) = match rows {
                    Rows::All => (ops::linear_tangent(&hd, &w.q)?, Some(xd.clone())),
                    Rows::Pooled(pool) => (
                        ops::linear_tangent(&select_rows(&hd, pool)?, &w.q)?,
                        Some(select_rows(xd, pool)?),
                    ),
                    Rows::Probe(_) => {
                        let (t, b) = (xd.dim(0)?, xd.dim(1)?);
                        (
                            Tensor::zeros((t, b, 1, width), x.dtype(), x.device())?,
                            None,
                        )
                    }
                };
                let qd = self.heads_tangent(&qd)?;
                (ops::attention_tangent(ac, &qd, &kd, &vd)?, xrd)
            }
            Tangents::SingleRow {
                rows: trows,
                values,
            } => {
                let t = values.dim(0)?;
                let (hh, d) = (self.cfg.heads, self.cfg.head_dim());
                let ridx = index_tensor(trows, x.device())?;
                let c1r: LnCache = c1.select_rows(&ridx)?;
                // Row-wise ops: T rows instead of T×S.
                let hd = ops::layer_norm_tangent(&c1r, values, &w.ln_1)?; // [T,B,W]
                let lin = |l| -> Result<Tensor> {
                    Ok(ops::linear_tangent(&hd, l)?.reshape((t, b, hh, d))?)
                };
                let (qd, kd, vd) = (lin(&w.q)?, lin(&w.k)?, lin(&w.v)?);
                let key_hit = one_hot(trows, s, x.dtype(), x.device())?; // [T, S]
                let q_hit = match rows {
                    Rows::All => key_hit.unsqueeze(0)?, // [1, T, S]
                    // The probe is no row of the input: no query tangent.
                    Rows::Probe(_) => Tensor::zeros((1, t, 1), x.dtype(), x.device())?,
                    Rows::Pooled(pool) => {
                        // [B, T, 1]: query row of sequence b is pool[b].
                        let v: Vec<f64> = pool
                            .iter()
                            .flat_map(|&p| {
                                trows.iter().map(move |&r| if r == p { 1.0 } else { 0.0 })
                            })
                            .collect();
                        Tensor::from_vec(v, (b, t, 1), x.device())?.to_dtype(x.dtype())?
                    }
                };
                let od = ops::attention_tangent_row(ac, &q_hit, &ridx, &key_hit, &qd, &kd, &vd)?;
                // Residual tangent at the query rows: [T, B|1, Sq, 1] ⊙ [T, B, 1, W].
                let xrd = match rows {
                    Rows::Probe(_) => None,
                    _ => Some(
                        q_hit
                            .permute((1, 0, 2))?
                            .unsqueeze(3)?
                            .broadcast_mul(&values.unsqueeze(2)?)?,
                    ),
                };
                (od, xrd)
            }
        };
        let t = od.dim(0)?;
        let od = od
            .permute((0, 1, 3, 2, 4))?
            .contiguous()?
            .reshape((t, b, sq, width))?;
        let x1d = match xrd {
            Some(xrd) => (xrd + ops::linear_tangent(&od, &w.out)?)?,
            None => ops::linear_tangent(&od, &w.out)?,
        };
        let h2d = ops::layer_norm_tangent(&tape.c2, &x1d, &w.ln_2)?;
        let md = ops::activation_tangent(&tape.slope, &ops::linear_tangent(&h2d, &w.fc1)?)?;
        let x2d = (x1d + ops::linear_tangent(&md, &w.fc2)?)?;
        Ok((y, x2d))
    }

    /// Blocks `from..to` on every row.
    pub fn forward(&self, from: usize, to: usize, x: &Tensor) -> Result<Tensor> {
        let mut x = x.clone();
        for w in &self.blocks[from..to] {
            x = self.block_forward(w, &x, Rows::All)?;
        }
        Ok(x)
    }

    /// Blocks `from..` to the end; returns the pooled rows `[B, W]` of the last block's output
    /// (that block computes only those rows).
    pub fn forward_pooled(&self, from: usize, x: &Tensor, pool: &[usize]) -> Result<Tensor> {
        let n = self.blocks.len();
        let mut x = x.clone();
        if from == n && self.head.is_none() {
            x = select_rows(&x, pool)?;
        }
        for (l, w) in self.blocks.iter().enumerate().skip(from) {
            x = self.block_forward(w, &x, self.rows_of(l, pool))?;
        }
        if let Some((probe, head)) = &self.head {
            x = self.block_forward(head, &x, Rows::Probe(probe))?;
        }
        Ok(x.squeeze(1)?)
    }

    /// JVP of [`Self::forward_pooled`]: pooled primal `[B, W]` and tangents `[T, B, W]`.
    pub fn jvp_pooled(
        &self,
        from: usize,
        x: &Tensor,
        xd: &Tangents,
        pool: &[usize],
    ) -> Result<(Tensor, Tensor)> {
        let n = self.blocks.len();
        if from == n && self.head.is_none() {
            let xd = match xd {
                Tangents::Dense(t) => select_rows(t, pool)?,
                Tangents::SingleRow { rows, values } => {
                    let (t, b, _) = values.dims3()?;
                    let v: Vec<f64> = rows
                        .iter()
                        .flat_map(|&r| pool.iter().map(move |&p| if r == p { 1.0 } else { 0.0 }))
                        .collect();
                    let hit = Tensor::from_vec(v, (t, b, 1), x.device())?.to_dtype(x.dtype())?;
                    values.broadcast_mul(&hit)?.unsqueeze(2)?
                }
            };
            return Ok((select_rows(x, pool)?.squeeze(1)?, xd.squeeze(2)?));
        }
        let mut x = x.clone();
        let mut xd = xd.clone();
        for (l, w) in self.blocks.iter().enumerate().skip(from) {
            let (y, yd) = self.block_jvp(w, &x, &xd, self.rows_of(l, pool))?;
            x = y;
            xd = Tangents::Dense(yd);
        }
        if let Some((probe, head)) = &self.head {
            let (y, yd) = self.block_jvp(head, &x, &xd, Rows::Probe(probe))?;
            x = y;
            xd = Tangents::Dense(yd);
        }
        let Tangents::Dense(xd) = xd else {
            unreachable!("dense after a block")
        };
        Ok((x.squeeze(1)?, xd.squeeze(2)?))
    }

    /// The embeddings `[B, proj]` from states entering block `from`, pooled at `pool[b]`:
    /// blocks, final LayerNorm, projection.
    pub fn embed(&self, from: usize, hidden: &Tensor, pool: &[usize]) -> Result<Tensor> {
        let x = self.forward_pooled(from, hidden, pool)?;
        let y = match self.final_ln {
            Some(ln) => ops::layer_norm(&x, ln, self.cfg.layer_norm_eps)?,
            None => x,
        };
        match self.projection {
            Some(p) => ops::linear(&y, p),
            None => Ok(y),
        }
    }

    /// [`Self::embed`] of P primals `[P, seq, width]` and their T×P tangents: `[P, proj]` and
    /// `[T, P, proj]`.
    pub fn jvp_embed(
        &self,
        from: usize,
        primal: &Tensor,
        tangents: &Tangents,
        pool: &[usize],
    ) -> Result<(Tensor, Tensor)> {
        let (p, width) = (primal.dim(0)?, self.cfg.width);
        let (x, xd) = if tangents.count()? == 0 {
            let x = self.forward_pooled(from, primal, pool)?;
            let none = Tensor::zeros((0, p, width), primal.dtype(), primal.device())?;
            (x, none)
        } else {
            self.jvp_pooled(from, primal, tangents, pool)?
        };
        let (y, yd) = match self.final_ln {
            Some(ln) => {
                let (y, c) = ops::layer_norm_cached(&x, ln, self.cfg.layer_norm_eps)?;
                let yd = match xd.dim(0)? {
                    0 => xd,
                    _ => ops::layer_norm_tangent(&c, &xd, ln)?,
                };
                (y, yd)
            }
            None => (x, xd),
        };
        match self.projection {
            Some(proj) => {
                let e = ops::linear(&y, proj)?;
                if yd.dim(0)? == 0 {
                    let dim = proj.weight.dim(0)?;
                    return Ok((e, Tensor::zeros((0, p, dim), y.dtype(), y.device())?));
                }
                Ok((e, ops::linear_tangent(&yd, proj)?))
            }
            None => Ok((y, yd)),
        }
    }

    /// Which rows block `l` computes when the stack ends pooled (every row when a pooling head
    /// follows: it reads them all).
    fn rows_of<'p>(&self, l: usize, pool: &'p [usize]) -> Rows<'p> {
        if l + 1 == self.blocks.len() && self.head.is_none() {
            Rows::Pooled(pool)
        } else {
            Rows::All
        }
    }

    /// Every block from the first, pooled rows `[B, W]` out (as [`Self::forward_pooled`] from
    /// 0), with each block's tape for [`Self::vjp_pooled`].
    pub fn forward_pooled_taped(
        &self,
        x: &Tensor,
        pool: &[usize],
    ) -> Result<(Tensor, Vec<BlockTape>)> {
        if self.head.is_some() {
            return Err(crate::Error::InvalidArgument(
                "the reverse pass (training) is implemented for CLIP towers only".into(),
            ));
        }
        let mut x = x.clone();
        let mut tapes = Vec::with_capacity(self.blocks.len());
        for (l, w) in self.blocks.iter().enumerate() {
            let (y, tape) = self.block_forward_taped(w, &x, self.rows_of(l, pool))?;
            x = y;
            tapes.push(tape);
        }
        Ok((x.squeeze(1)?, tapes))
    }

    /// VJP of [`Self::forward_pooled_taped`]: the pooled rows' gradient `[B, W]` → the input's
    /// gradient `[B, S, W]` and every block's weight gradients.
    pub fn vjp_pooled(
        &self,
        tapes: &[BlockTape],
        pool: &[usize],
        gy: &Tensor,
    ) -> Result<(Tensor, Vec<Block>)> {
        let mut g = gy.unsqueeze(1)?;
        let mut grads = Vec::with_capacity(self.blocks.len());
        for (l, (w, tape)) in self.blocks.iter().zip(tapes).enumerate().rev() {
            let (gx, gw) = self.block_vjp(w, tape, &g, self.rows_of(l, pool))?;
            g = gx;
            grads.push(gw);
        }
        grads.reverse();
        Ok((g, grads))
    }
}

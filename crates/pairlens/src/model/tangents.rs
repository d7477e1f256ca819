//! Tangent directions fed to `jvp_from`, and their validation.

use candle_core::{DType, Device, Tensor};

use crate::{Error, Result};

/// Tangent directions for T tangents over the P primal sequences of a `jvp_from` call.
#[derive(Clone, Debug)]
pub enum Tangents {
    /// `[T, P, seq, width]`
    Dense(Tensor),
    /// Tangent t is zero except on sequence row `rows[t]`, where it is `values[t]`: values
    /// `[T, P, width]`. Kept sparse through the first block's LayerNorm and Q/K/V projections
    /// (they act row-wise), densified only inside the first attention.
    SingleRow {
        /// The row of each tangent.
        rows: Vec<usize>,
        /// Each tangent's values on its row.
        values: Tensor,
    },
}

impl Tangents {
    /// Number of tangents T.
    pub fn count(&self) -> Result<usize> {
        Ok(match self {
            Tangents::Dense(t) => t.dim(0)?,
            Tangents::SingleRow { values, .. } => values.dim(0)?,
        })
    }

    /// The equivalent dense tangent `[T, P, seq, width]` (for checks and small cases).
    pub fn to_dense(&self, seq: usize) -> Result<Tensor> {
        match self {
            Tangents::Dense(t) => Ok(t.clone()),
            Tangents::SingleRow { rows, values } => {
                let hit = one_hot(rows, seq, values.dtype(), values.device())?; // [T, seq]
                let (t, p, w) = values.dims3()?;
                let hit = hit.reshape((t, 1, seq, 1))?;
                Ok(hit.broadcast_mul(&values.reshape((t, p, 1, w))?)?)
            }
        }
    }

    /// Checks the shapes against primal `[P, seq, width]` of `dtype`.
    pub(crate) fn validate(&self, p: usize, seq: usize, width: usize, dtype: DType) -> Result<()> {
        let bad = |msg: String| Err(Error::InvalidArgument(format!("tangents: {msg}")));
        let t = match self {
            Tangents::Dense(t) => t,
            Tangents::SingleRow { values, .. } => values,
        };
        if t.dtype() != dtype {
            return bad(format!("dtype {:?}, primal is {:?}", t.dtype(), dtype));
        }
        match self {
            Tangents::Dense(t) => {
                let d = t.dims();
                if d.len() != 4 || d[1] != p || d[2] != seq || d[3] != width {
                    return bad(format!(
                        "dense shape {d:?}, expected [T, {p}, {seq}, {width}]"
                    ));
                }
            }
            Tangents::SingleRow { rows, values } => {
                let d = values.dims();
                if d.len() != 3 || d[1] != p || d[2] != width {
                    return bad(format!(
                        "single-row values shape {d:?}, expected [T, {p}, {width}]"
                    ));
                }
                if rows.len() != d[0] {
                    return bad(format!("{} rows for {} tangents", rows.len(), d[0]));
                }
                if let Some(r) = rows.iter().find(|&&r| r >= seq) {
                    return bad(format!("row {r} out of range for sequence length {seq}"));
                }
            }
        }
        Ok(())
    }
}

/// `[rows.len(), n]` with a 1 at `(t, rows[t])`.
pub(crate) fn one_hot(rows: &[usize], n: usize, dtype: DType, dev: &Device) -> Result<Tensor> {
    let mut v = vec![0f64; rows.len() * n];
    for (t, &r) in rows.iter().enumerate() {
        v[t * n + r] = 1.0;
    }
    Ok(Tensor::from_vec(v, (rows.len(), n), dev)?.to_dtype(dtype)?)
}

/// Row indices as a u32 tensor (for `index_select`).
pub(crate) fn index_tensor(rows: &[usize], dev: &Device) -> Result<Tensor> {
    let v: Vec<u32> = rows.iter().map(|&r| r as u32).collect();
    Ok(Tensor::from_vec(v, rows.len(), dev)?)
}

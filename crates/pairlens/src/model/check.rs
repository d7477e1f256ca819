//! Shape/dtype validation of the weights against the config, and of call arguments.

use std::path::PathBuf;

use candle_core::{DType, Tensor};

use super::params::{MapFn, TowerConfig};
use super::weights::Linear;
use crate::{Error, Result};

/// Where a shape error points: weights are validated after loading, so no file is known here.
const SOURCE: &str = "<model weights>";

pub(crate) struct Checker {
    /// The float dtype every weight must share (the first one seen).
    pub dtype: Option<DType>,
}

impl Checker {
    pub fn new() -> Self {
        Checker { dtype: None }
    }

    pub fn tensor(&mut self, name: &str, t: &Tensor, expected: &[usize]) -> Result<()> {
        if t.dims() != expected {
            return Err(Error::TensorShape {
                path: PathBuf::from(SOURCE),
                name: name.to_string(),
                expected: expected.to_vec(),
                got: t.dims().to_vec(),
            });
        }
        let dt = t.dtype();
        let bad = |msg: String| Error::BadTensor {
            path: PathBuf::from(SOURCE),
            name: name.to_string(),
            msg,
        };
        if !matches!(dt, DType::F32 | DType::F64) {
            return Err(bad(format!("dtype {dt:?}, expected f32")));
        }
        match self.dtype {
            None => self.dtype = Some(dt),
            Some(d) if d != dt => {
                return Err(bad(format!("dtype {dt:?}, other weights are {d:?}")))
            }
            _ => {}
        }
        Ok(())
    }

    /// Every parameter of a tower against the shape its geometry gives it, after checking that
    /// the tower has as many blocks as the geometry says.
    pub fn tower(
        &mut self,
        tower: TowerConfig,
        blocks: usize,
        projection: Option<&Linear>,
        map: impl FnOnce(&mut MapFn) -> Result<()>,
    ) -> Result<()> {
        let (name, cfg) = match tower {
            TowerConfig::Text(c) => ("text", &c.transformer),
            TowerConfig::Vision(c) => ("vision", &c.transformer),
        };
        let w = cfg.width;
        if cfg.heads == 0 || !w.is_multiple_of(cfg.heads) {
            return Err(Error::InvalidArgument(format!(
                "{name}: width {w} is not a multiple of heads {}",
                cfg.heads
            )));
        }
        if blocks != cfg.layers {
            return Err(Error::BadTensor {
                path: PathBuf::from(SOURCE),
                name: format!("{name}.blocks"),
                msg: format!("{blocks} blocks, config says {} layers", cfg.layers),
            });
        }
        // The projection's output width is the model's to choose; checked against the other
        // tower's by `ClipModel::new`. Without a projection the embedding is the width.
        let projection_dim = match projection {
            Some(p) => p.weight.dims().first().copied().unwrap_or(0),
            None => w,
        };
        map(&mut |param, t| {
            self.tensor(
                &param.to_string(),
                t,
                &param.shape_in(tower, projection_dim),
            )?;
            Ok(t.clone())
        })
    }
}

pub(crate) fn invalid<T>(msg: impl Into<String>) -> Result<T> {
    Err(Error::InvalidArgument(msg.into()))
}

/// `layer` must be in `0..=layers`.
pub(crate) fn layer(tower: &str, layer: usize, layers: usize) -> Result<()> {
    if layer > layers {
        return invalid(format!(
            "{tower} tower: layer {layer} out of range 0..={layers}"
        ));
    }
    Ok(())
}

/// Hidden states `[B, S, W]` of the weights' dtype; returns (B, S).
pub(crate) fn hidden(
    tower: &str,
    h: &Tensor,
    width: usize,
    dtype: DType,
) -> Result<(usize, usize)> {
    let d = h.dims();
    if d.len() != 3 || d[2] != width || d[0] == 0 || d[1] == 0 {
        return invalid(format!(
            "{tower} tower: hidden states of shape {d:?}, expected [B, seq, {width}]"
        ));
    }
    if h.dtype() != dtype {
        return invalid(format!(
            "{tower} tower: hidden states are {:?}, weights are {dtype:?}",
            h.dtype()
        ));
    }
    Ok((d[0], d[1]))
}

/// One pooled row per sequence, each `< seq`.
pub(crate) fn pool(tower: &str, pool: &[usize], b: usize, seq: usize) -> Result<()> {
    if pool.len() != b {
        return invalid(format!(
            "{tower} tower: {} pool indices for {b} sequences",
            pool.len()
        ));
    }
    if let Some(p) = pool.iter().find(|&&p| p >= seq) {
        return invalid(format!(
            "{tower} tower: pool index {p} out of range for sequence length {seq}"
        ));
    }
    Ok(())
}

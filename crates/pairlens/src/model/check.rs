//! Shape/dtype validation of the weights against the config, and of call arguments.

use std::path::PathBuf;

use candle_core::{DType, Tensor};

use super::config::TransformerConfig;
use super::weights::{Block, LayerNorm, Linear};
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

    pub fn linear(&mut self, name: &str, l: &Linear, out: usize, inp: usize) -> Result<()> {
        self.tensor(&format!("{name}.weight"), &l.weight, &[out, inp])?;
        if let Some(b) = &l.bias {
            self.tensor(&format!("{name}.bias"), b, &[out])?;
        }
        Ok(())
    }

    pub fn layer_norm(&mut self, name: &str, ln: &LayerNorm, width: usize) -> Result<()> {
        self.tensor(&format!("{name}.weight"), &ln.weight, &[width])?;
        self.tensor(&format!("{name}.bias"), &ln.bias, &[width])
    }

    pub fn blocks(
        &mut self,
        prefix: &str,
        blocks: &[Block],
        cfg: &TransformerConfig,
    ) -> Result<()> {
        let w = cfg.width;
        if cfg.heads == 0 || !w.is_multiple_of(cfg.heads) {
            return Err(Error::InvalidArgument(format!(
                "{prefix}: width {w} is not a multiple of heads {}",
                cfg.heads
            )));
        }
        if blocks.len() != cfg.layers {
            return Err(Error::BadTensor {
                path: PathBuf::from(SOURCE),
                name: format!("{prefix}.blocks"),
                msg: format!("{} blocks, config says {} layers", blocks.len(), cfg.layers),
            });
        }
        for (i, b) in blocks.iter().enumerate() {
            let p = format!("{prefix}.blocks.{i}");
            self.layer_norm(&format!("{p}.ln_1"), &b.ln_1, w)?;
            self.linear(&format!("{p}.q"), &b.q, w, w)?;
            self.linear(&format!("{p}.k"), &b.k, w, w)?;
            self.linear(&format!("{p}.v"), &b.v, w, w)?;
            self.linear(&format!("{p}.out"), &b.out, w, w)?;
            self.layer_norm(&format!("{p}.ln_2"), &b.ln_2, w)?;
            self.linear(&format!("{p}.fc1"), &b.fc1, cfg.mlp_dim, w)?;
            self.linear(&format!("{p}.fc2"), &b.fc2, w, cfg.mlp_dim)?;
        }
        Ok(())
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

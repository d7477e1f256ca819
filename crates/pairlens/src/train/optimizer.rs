//! AdamW with decoupled weight decay (PyTorch's `torch.optim.AdamW` update rule), on candle
//! `Var`s. Written here rather than taken from candle-nn so the decay mask and the update
//! order are explicit and the same on every run.

use candle_core::{Tensor, Var};

use crate::Result;

/// AdamW hyper-parameters (the learning rate comes from the schedule, per step).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamWConfig {
    /// Decay rate of the first-moment (mean) estimate.
    pub beta1: f64,
    /// Decay rate of the second-moment (uncentred variance) estimate.
    pub beta2: f64,
    /// Added to `√v̂` in the denominator, for numerical stability.
    pub eps: f64,
    /// Decoupled weight decay λ: decayed parameters shrink by `lr·λ` per step.
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    /// open_clip's defaults for ViT training: betas (0.9, 0.98), eps 1e-6, decay 0.2.
    fn default() -> Self {
        AdamWConfig {
            beta1: 0.9,
            beta2: 0.98,
            eps: 1e-6,
            weight_decay: 0.2,
        }
    }
}

/// A trainable tensor under its checkpoint name.
#[derive(Clone, Debug)]
pub struct Param {
    /// Checkpoint (HF) name, e.g. `text_model.encoder.layers.0.mlp.fc1.weight`, or
    /// `logit_scale`.
    pub name: String,
    /// The tensor the optimizer updates in place.
    pub var: Var,
    /// Whether weight decay applies (see [`Param::decays`]).
    decay: bool,
}

impl Param {
    pub(crate) fn new(name: impl Into<String>, var: Var) -> Self {
        let name = name.into();
        let decay = Param::decays(&name, var.as_tensor().rank());
        Param { name, var, decay }
    }

    /// Decay only weight matrices (rank ≥ 2) that are not embedding tables: LayerNorm
    /// parameters, biases, the class/token/position embeddings and `logit_scale` are exempt.
    /// The patch embedding is a linear map of pixels (a convolution kernel), so it decays.
    pub fn decays(name: &str, rank: usize) -> bool {
        if rank < 2 || name == "logit_scale" {
            return false;
        }
        let exempt = [
            "norm",
            "layrnorm",
            "token_embedding",
            "position_embedding",
            "class_embedding",
        ];
        !exempt.iter().any(|e| name.contains(e))
    }
}

/// AdamW state: the parameters, their moment estimates and the step count.
pub(crate) struct AdamW {
    config: AdamWConfig,
    params: Vec<Param>,
    m: Vec<Tensor>,
    v: Vec<Tensor>,
    /// Updates done so far (bias correction uses `t + 1` for the next one).
    t: u64,
}

impl AdamW {
    pub(crate) fn new(params: Vec<Param>, config: AdamWConfig) -> Result<Self> {
        let zeros = |p: &Param| p.var.as_tensor().zeros_like();
        let m = params
            .iter()
            .map(zeros)
            .collect::<candle_core::Result<_>>()?;
        let v = params
            .iter()
            .map(zeros)
            .collect::<candle_core::Result<_>>()?;
        Ok(AdamW {
            config,
            params,
            m,
            v,
            t: 0,
        })
    }

    pub(crate) fn params(&self) -> &[Param] {
        &self.params
    }

    pub(crate) fn steps_done(&self) -> u64 {
        self.t
    }

    /// One update with `grads[i]` for `params()[i]`:
    /// `θ ← θ(1 − lr·λ)` (decayed params only), `m ← β₁m + (1−β₁)g`, `v ← β₂v + (1−β₂)g²`,
    /// `θ ← θ − lr · m̂ / (√v̂ + ε)` with bias-corrected `m̂ = m/(1−β₁ᵗ)`, `v̂ = v/(1−β₂ᵗ)`.
    pub(crate) fn step(&mut self, grads: &[Tensor], lr: f64) -> Result<()> {
        assert_eq!(grads.len(), self.params.len(), "one gradient per parameter");
        self.t += 1;
        let c = self.config;
        let bc1 = 1.0 - c.beta1.powi(self.t as i32);
        let bc2 = 1.0 - c.beta2.powi(self.t as i32);
        for (i, p) in self.params.iter().enumerate() {
            let g = grads[i].detach();
            let mut theta = p.var.as_tensor().detach();
            if p.decay && c.weight_decay != 0.0 {
                theta = theta.affine(1.0 - lr * c.weight_decay, 0.0)?;
            }
            let m = ((&self.m[i] * c.beta1)? + (&g * (1.0 - c.beta1))?)?;
            let v = ((&self.v[i] * c.beta2)? + (g.sqr()? * (1.0 - c.beta2))?)?;
            let denom = ((&v * (1.0 / bc2))?.sqrt()? + c.eps)?;
            let update = (&m * (lr / bc1))?.div(&denom)?;
            p.var.set(&(theta - update)?)?;
            self.m[i] = m;
            self.v[i] = v;
        }
        Ok(())
    }
}

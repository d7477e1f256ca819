//! Both towers and the similarity temperature.

use candle_core::{DType, Device, Tensor};

use super::check::Checker;
use super::config::ClipConfig;
use super::params::{Param, Tower};
use super::text::TextTower;
use super::vision::VisionTower;
use super::weights::ClipWeights;
use crate::{Error, Result};

/// A dual encoder (CLIP or SigLIP): the text tower f, the image tower g, score cos(f(x), g(y)).
#[derive(Clone, Debug)]
pub struct ClipModel {
    /// The text tower.
    pub text: TextTower,
    /// The image tower.
    pub vision: VisionTower,
    /// log of the similarity temperature, as stored in the checkpoint (`exp` it for the scale).
    pub logit_scale: f32,
    /// The logit's bias (SigLIP), `None` for CLIP.
    pub logit_bias: Option<f32>,
}

impl ClipModel {
    /// The geometry, assembled from the towers' (each tower holds its own part).
    pub fn config(&self) -> ClipConfig {
        ClipConfig {
            text: self.text.config.clone(),
            vision: self.vision.config.clone(),
            projection_dim: self.text.weights.projection.weight.dim(0).unwrap_or(0),
        }
    }

    /// The device the weights are on.
    pub fn device(&self) -> &Device {
        self.text.weights.token_embedding.device()
    }

    /// A copy of the weights (tensors are shared, not copied).
    pub fn weights(&self) -> ClipWeights {
        ClipWeights {
            text: self.text.weights.clone(),
            vision: self.vision.weights.clone(),
            logit_scale: self.logit_scale,
            logit_bias: self.logit_bias,
        }
    }

    /// The model's own logit for a cosine: `exp(logit_scale)·cos (+ logit_bias)`.
    pub fn logit(&self, cosine: f32) -> f32 {
        self.logit_scale.exp() * cosine + self.logit_bias.unwrap_or(0.0)
    }

    /// The unnormalised embedding `[projection_dim]` of one caption's ids (padded to the
    /// context length; a causal tower stops at the pooled position).
    pub fn embed_text(&self, ids: &[u32]) -> Result<Tensor> {
        let pooling = self.text.config.pooling;
        let pool = pooling.index(ids).ok_or_else(|| {
            Error::InvalidArgument(format!(
                "caption ids hold no token to pool at ({pooling:?})"
            ))
        })?;
        let seq = match self.text.config.causal {
            true => pool + 1,
            false => ids.len(),
        };
        let ids = Tensor::from_slice(&ids[..seq], (1, seq), self.device())?;
        Ok(self.text.forward(&ids, &[pool])?.squeeze(0)?)
    }

    /// The unnormalised embedding `[projection_dim]` of normalised pixels `[3, H, W]`.
    pub fn embed_image(&self, pixels: &Tensor) -> Result<Tensor> {
        Ok(self.vision.forward(&pixels.unsqueeze(0)?)?.squeeze(0)?)
    }

    /// Validates every weight shape against the config (and that all weights are f32), so a bad
    /// checkpoint fails here with the tensor's name instead of deep inside a matmul.
    pub fn new(config: ClipConfig, weights: ClipWeights) -> Result<Self> {
        let ClipWeights {
            text,
            vision,
            logit_scale,
            logit_bias,
        } = weights;
        // The projections must agree with each other: the shared embedding space (a tower
        // without a projection embeds in its own width).
        let projections = [Tower::Text, Tower::Vision].map(|t| {
            let param = Param::Projection(t);
            (param, param.shape(&config))
        });
        let vision_width = config.vision.transformer.width;
        if vision.projection.is_none() && config.projection_dim != vision_width {
            return Err(Error::InvalidArgument(format!(
                "the image tower embeds in its width {vision_width} but the embedding space has {} dimensions",
                config.projection_dim
            )));
        }
        let text = TextTower {
            config: config.text,
            weights: text,
        };
        let vision = VisionTower {
            config: config.vision,
            weights: vision,
        };
        let mut c = Checker {
            dtype: Some(DType::F32),
        };
        text.check_weights(&mut c)?;
        vision.check_weights(&mut c)?;
        for (param, shape) in &projections {
            let w = match param.tower() {
                Tower::Text => Some(&text.weights.projection),
                Tower::Vision => vision.weights.projection.as_ref(),
            };
            if let Some(w) = w {
                c.tensor(&param.to_string(), &w.weight, shape)?;
            }
        }
        Ok(ClipModel {
            text,
            vision,
            logit_scale,
            logit_bias,
        })
    }
}

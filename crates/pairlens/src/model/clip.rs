//! Both towers and the similarity temperature.

use candle_core::{DType, Device, Tensor};

use super::check::Checker;
use super::config::ClipConfig;
use super::params::{Param, Tower};
use super::text::TextTower;
use super::vision::VisionTower;
use super::weights::ClipWeights;
use crate::{Error, Result};

/// A CLIP dual encoder: the text tower f, the image tower g, score cos(f(x), g(y)).
#[derive(Clone, Debug)]
pub struct ClipModel {
    /// The text tower.
    pub text: TextTower,
    /// The image tower.
    pub vision: VisionTower,
    /// log of the similarity temperature, as stored in the checkpoint (`exp` it for the scale).
    pub logit_scale: f32,
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

    /// The unnormalised embedding `[projection_dim]` of one caption's ids (SOT … EOT, padded),
    /// which may be longer than needed: the causal tower stops at the pooled position.
    pub fn embed_text(&self, ids: &[u32]) -> Result<Tensor> {
        let pooling = self.text.config.pooling;
        let pool = pooling.index(ids).ok_or_else(|| {
            Error::InvalidArgument(format!(
                "caption ids hold no token to pool at ({pooling:?})"
            ))
        })?;
        let ids = Tensor::from_slice(&ids[..pool + 1], (1, pool + 1), self.device())?;
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
        } = weights;
        // The projections must agree with each other: the shared embedding space.
        let projections = [Tower::Text, Tower::Vision].map(|t| {
            let param = Param::Projection(t);
            (param, param.shape(&config))
        });
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
                Tower::Text => &text.weights.projection.weight,
                Tower::Vision => &vision.weights.projection.weight,
            };
            c.tensor(&param.to_string(), w, shape)?;
        }
        Ok(ClipModel {
            text,
            vision,
            logit_scale,
        })
    }
}

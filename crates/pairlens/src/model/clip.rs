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
    /// The geometry (each tower also holds its own part).
    pub config: ClipConfig,
    /// The text tower.
    pub text: TextTower,
    /// The image tower.
    pub vision: VisionTower,
    /// log of the similarity temperature, as stored in the checkpoint (`exp` it for the scale).
    pub logit_scale: f32,
}

impl ClipModel {
    /// The device the weights are on.
    pub fn device(&self) -> &Device {
        self.text.weights.token_embedding.device()
    }

    /// The unnormalised embedding `[projection_dim]` of one caption's ids (SOT … EOT, padded),
    /// which may be longer than needed: the causal tower stops at the pooled position.
    pub fn embed_text(&self, ids: &[u32]) -> Result<Tensor> {
        let pool = self.config.text.pooling.index(ids).ok_or_else(|| {
            Error::InvalidArgument(format!(
                "caption ids hold no token to pool at ({:?})",
                self.config.text.pooling
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
        let text = TextTower {
            config: config.text.clone(),
            weights: text,
        };
        let vision = VisionTower {
            config: config.vision.clone(),
            weights: vision,
        };
        let mut c = Checker {
            dtype: Some(DType::F32),
        };
        text.check_weights(&mut c)?;
        vision.check_weights(&mut c)?;
        for (tower, w) in [
            (Tower::Text, &text.weights.projection.weight),
            (Tower::Vision, &vision.weights.projection.weight),
        ] {
            let param = Param::Projection(tower);
            c.tensor(&param.to_string(), w, &param.shape(&config))?;
        }
        Ok(ClipModel {
            config,
            text,
            vision,
            logit_scale,
        })
    }
}

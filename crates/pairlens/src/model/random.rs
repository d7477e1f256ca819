//! Deterministic random weights and small geometries, for tests and benchmarks that need no
//! checkpoint (the `test-support` feature). Scales keep activations O(1) through the blocks so
//! derivative checks are not degenerate.

use super::rng::Rng;

use super::config::{
    Activation, ClipConfig, TextConfig, TextPooling, TransformerConfig, VisionConfig,
};
use super::weights::{Block, ClipWeights, LayerNorm, Linear, TextWeights, VisionWeights};
use crate::Result;

fn linear(rng: &mut Rng, out: usize, inp: usize, bias: bool) -> Result<Linear> {
    Ok(Linear {
        weight: rng.tensor(&[out, inp], 0.0, 1.0 / (inp as f64).sqrt())?,
        bias: if bias {
            Some(rng.tensor(&[out], 0.0, 0.1)?)
        } else {
            None
        },
    })
}

fn layer_norm(rng: &mut Rng, width: usize, eps: f64) -> Result<LayerNorm> {
    Ok(LayerNorm {
        weight: rng.tensor(&[width], 1.0, 0.2)?,
        bias: rng.tensor(&[width], 0.0, 0.1)?,
        eps,
    })
}

fn blocks(rng: &mut Rng, cfg: &TransformerConfig) -> Result<Vec<Block>> {
    let (w, m, eps) = (cfg.width, cfg.mlp_dim, cfg.layer_norm_eps);
    (0..cfg.layers)
        .map(|_| {
            Ok(Block {
                ln_1: layer_norm(rng, w, eps)?,
                // Larger q/k weights make the attention pattern far from uniform.
                q: Linear {
                    weight: rng.tensor(&[w, w], 0.0, 2.0 / (w as f64).sqrt())?,
                    bias: Some(rng.tensor(&[w], 0.0, 0.1)?),
                },
                k: Linear {
                    weight: rng.tensor(&[w, w], 0.0, 2.0 / (w as f64).sqrt())?,
                    bias: Some(rng.tensor(&[w], 0.0, 0.1)?),
                },
                v: linear(rng, w, w, true)?,
                out: linear(rng, w, w, true)?,
                ln_2: layer_norm(rng, w, eps)?,
                fc1: linear(rng, m, w, true)?,
                fc2: linear(rng, w, m, true)?,
            })
        })
        .collect()
}

impl ClipWeights {
    /// Random weights of the right shapes for `config`, f32 on the CPU, deterministic in `seed`.
    pub fn random(config: &ClipConfig, seed: u64) -> Result<ClipWeights> {
        let mut rng = Rng::new(seed);
        let (t, v) = (&config.text, &config.vision);
        let (tw, vw) = (t.transformer.width, v.transformer.width);
        let p = v.patch_size;
        let text = TextWeights {
            token_embedding: rng.tensor(&[t.vocab_size, tw], 0.0, 1.0)?,
            positional_embedding: rng.tensor(&[t.context_length, tw], 0.0, 0.5)?,
            blocks: blocks(&mut rng, &t.transformer)?,
            ln_final: layer_norm(&mut rng, tw, t.transformer.layer_norm_eps)?,
            projection: linear(&mut rng, config.projection_dim, tw, false)?,
        };
        let vision = VisionWeights {
            patch_embedding: rng.tensor(&[vw, 3, p, p], 0.0, 1.0 / ((3 * p * p) as f64).sqrt())?,
            class_embedding: rng.tensor(&[vw], 0.0, 1.0)?,
            positional_embedding: rng.tensor(&[v.seq_len(), vw], 0.0, 0.5)?,
            ln_pre: layer_norm(&mut rng, vw, v.transformer.layer_norm_eps)?,
            blocks: blocks(&mut rng, &v.transformer)?,
            ln_post: layer_norm(&mut rng, vw, v.transformer.layer_norm_eps)?,
            projection: linear(&mut rng, config.projection_dim, vw, false)?,
        };
        Ok(ClipWeights {
            text,
            vision,
            logit_scale: (1.0f32 / 0.07).ln(),
        })
    }
}

impl ClipConfig {
    /// A tiny geometry for tests: text QuickGELU (3 layers, 2 heads, context 8), vision exact
    /// GELU (3 layers, 3 heads, a non-square 2×3 patch grid so row/column order is exercised).
    pub fn tiny() -> ClipConfig {
        let tf = |width, heads, activation| TransformerConfig {
            width,
            layers: 3,
            heads,
            mlp_dim: 4 * width,
            activation,
            layer_norm_eps: 1e-5,
        };
        ClipConfig {
            text: TextConfig {
                transformer: tf(16, 2, Activation::QuickGelu),
                context_length: 8,
                vocab_size: 40,
                pooling: TextPooling::ArgmaxId,
            },
            vision: VisionConfig {
                transformer: tf(24, 3, Activation::Gelu),
                patch_size: 4,
                image_size: (8, 12),
            },
            projection_dim: 12,
        }
    }

    /// A ViT-B/32-size geometry (both towers), for timing; weights from [`ClipWeights::random`].
    pub fn vit_b32_like() -> ClipConfig {
        let tf = |width, heads| TransformerConfig {
            width,
            layers: 12,
            heads,
            mlp_dim: 4 * width,
            activation: Activation::QuickGelu,
            layer_norm_eps: 1e-5,
        };
        ClipConfig {
            text: TextConfig {
                transformer: tf(512, 8),
                context_length: 77,
                vocab_size: 49408,
                pooling: TextPooling::ArgmaxId,
            },
            vision: VisionConfig {
                transformer: tf(768, 12),
                patch_size: 32,
                image_size: (224, 224),
            },
            projection_dim: 512,
        }
    }
}

//! Deterministic random weights and small geometries, for tests and benchmarks that need no
//! checkpoint (the `test-support` feature). Scales keep activations O(1) through the blocks so
//! derivative checks are not degenerate.

use super::rng::Rng;

use super::config::{
    Activation, ClipConfig, TextConfig, TextPooling, TransformerConfig, VisionConfig, VisionPooling,
};
use super::weights::{
    Block, ClipWeights, LayerNorm, Linear, PoolingHead, TextWeights, VisionWeights,
};
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
            projection: linear(&mut rng, config.projection_dim, tw, t.projection_bias)?,
        };
        let class = v.class_token();
        let eps = v.transformer.layer_norm_eps;
        let patch_embedding = rng.tensor(&[vw, 3, p, p], 0.0, 1.0 / ((3 * p * p) as f64).sqrt())?;
        let patch_bias = (!class).then(|| rng.tensor(&[vw], 0.0, 0.1)).transpose()?;
        let class_embedding = class.then(|| rng.tensor(&[vw], 0.0, 1.0)).transpose()?;
        let positional_embedding = rng.tensor(&[v.seq_len(), vw], 0.0, 0.5)?;
        let ln_pre = class.then(|| layer_norm(&mut rng, vw, eps)).transpose()?;
        let vision_blocks = blocks(&mut rng, &v.transformer)?;
        let ln_post = layer_norm(&mut rng, vw, eps)?;
        let head = match class {
            true => None,
            false => {
                let mut head = blocks(
                    &mut rng,
                    &TransformerConfig {
                        layers: 1,
                        ..v.transformer.clone()
                    },
                )?;
                let b = head.pop().expect("one block");
                Some(PoolingHead {
                    probe: rng.tensor(&[vw], 0.0, 1.0)?,
                    q: b.q,
                    k: b.k,
                    v: b.v,
                    out: b.out,
                    ln: b.ln_2,
                    fc1: b.fc1,
                    fc2: b.fc2,
                })
            }
        };
        let projection = class
            .then(|| linear(&mut rng, config.projection_dim, vw, false))
            .transpose()?;
        let vision = VisionWeights {
            patch_embedding,
            patch_bias,
            class_embedding,
            positional_embedding,
            ln_pre,
            blocks: vision_blocks,
            ln_post,
            head,
            projection,
        };
        Ok(ClipWeights {
            text,
            vision,
            logit_scale: (1.0f32 / 0.07).ln(),
            logit_bias: (!class).then_some(-10.0),
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
                causal: true,
                projection_bias: false,
            },
            vision: VisionConfig {
                transformer: tf(24, 3, Activation::Gelu),
                patch_size: 4,
                image_size: (8, 12),
                pooling: VisionPooling::ClassToken,
            },
            projection_dim: 12,
        }
    }

    /// [`Self::tiny`] made SigLIP: tanh GELU, bidirectional text pooled at the last position
    /// with a biased projection, an image tower without class token whose attention-pooling head
    /// makes the embedding (in its width, 24).
    pub fn tiny_siglip() -> ClipConfig {
        let mut c = ClipConfig::tiny();
        c.text.transformer.activation = Activation::GeluTanh;
        c.text.pooling = TextPooling::Last;
        c.text.causal = false;
        c.text.projection_bias = true;
        c.vision.transformer.activation = Activation::GeluTanh;
        c.vision.pooling = VisionPooling::AttentionHead;
        c.projection_dim = c.vision.transformer.width;
        c
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
                causal: true,
                projection_bias: false,
            },
            vision: VisionConfig {
                transformer: tf(768, 12),
                patch_size: 32,
                image_size: (224, 224),
                pooling: VisionPooling::ClassToken,
            },
            projection_dim: 512,
        }
    }

    /// A SigLIP B/16-size geometry at 224 px (`google/siglip-base-patch16-224`: 196 patches,
    /// 64 text positions, width 768 in both towers), for timing.
    pub fn siglip_b16_like() -> ClipConfig {
        let tf = TransformerConfig {
            width: 768,
            layers: 12,
            heads: 12,
            mlp_dim: 3072,
            activation: Activation::GeluTanh,
            layer_norm_eps: 1e-6,
        };
        ClipConfig {
            text: TextConfig {
                transformer: tf.clone(),
                context_length: 64,
                vocab_size: 32000,
                pooling: TextPooling::Last,
                causal: false,
                projection_bias: true,
            },
            vision: VisionConfig {
                transformer: tf,
                patch_size: 16,
                image_size: (224, 224),
                pooling: VisionPooling::AttentionHead,
            },
            projection_dim: 768,
        }
    }
}

//! CLIP-style initialisation for training from scratch (open_clip's `init_parameters`):
//! small embeddings, width-scaled projections, residual outputs shrunk by depth, LayerNorms at
//! identity. `ClipWeights::random` (feature `test-support`) is for derivative tests and is far too
//! hot to train from.

use candle_core::Tensor;

use crate::model::Rng;
use crate::model::{
    Block, ClipConfig, ClipWeights, LayerNorm, Linear, TextWeights, TransformerConfig,
    VisionWeights,
};
use crate::Result;

fn zeros(n: usize) -> Result<Tensor> {
    Ok(Tensor::zeros(
        n,
        candle_core::DType::F32,
        &candle_core::Device::Cpu,
    )?)
}

fn identity_ln(width: usize, eps: f64) -> Result<LayerNorm> {
    Ok(LayerNorm {
        weight: Tensor::ones(width, candle_core::DType::F32, &candle_core::Device::Cpu)?,
        bias: zeros(width)?,
        eps,
    })
}

fn lin(rng: &mut Rng, out: usize, inp: usize, std: f64) -> Result<Linear> {
    Ok(Linear {
        weight: rng.tensor(&[out, inp], 0.0, std)?,
        bias: Some(zeros(out)?),
    })
}

fn blocks(rng: &mut Rng, t: &TransformerConfig) -> Result<Vec<Block>> {
    let w = t.width as f64;
    let attn_std = w.powf(-0.5);
    let proj_std = attn_std * (2.0 * t.layers as f64).powf(-0.5);
    let fc_std = (2.0 * w).powf(-0.5);
    (0..t.layers)
        .map(|_| {
            Ok(Block {
                ln_1: identity_ln(t.width, t.layer_norm_eps)?,
                q: lin(rng, t.width, t.width, attn_std)?,
                k: lin(rng, t.width, t.width, attn_std)?,
                v: lin(rng, t.width, t.width, attn_std)?,
                out: lin(rng, t.width, t.width, proj_std)?,
                ln_2: identity_ln(t.width, t.layer_norm_eps)?,
                fc1: lin(rng, t.mlp_dim, t.width, fc_std)?,
                fc2: lin(rng, t.width, t.mlp_dim, proj_std)?,
            })
        })
        .collect()
}

/// Fresh f32 weights for `config`, deterministic in `seed`; `logit_scale = ln(1/0.07)`.
pub fn init_weights(config: &ClipConfig, seed: u64) -> Result<ClipWeights> {
    let mut rng = Rng::new(seed);
    let (t, v) = (&config.text, &config.vision);
    let (tw, vw) = (t.transformer.width, v.transformer.width);
    let p = v.patch_size;
    let vscale = (vw as f64).powf(-0.5);
    let text = TextWeights {
        token_embedding: rng.tensor(&[t.vocab_size, tw], 0.0, 0.02)?,
        positional_embedding: rng.tensor(&[t.context_length, tw], 0.0, 0.01)?,
        blocks: blocks(&mut rng, &t.transformer)?,
        ln_final: identity_ln(tw, t.transformer.layer_norm_eps)?,
        projection: Linear {
            weight: rng.tensor(&[config.projection_dim, tw], 0.0, (tw as f64).powf(-0.5))?,
            bias: None,
        },
    };
    let vision = VisionWeights {
        patch_embedding: rng.tensor(&[vw, 3, p, p], 0.0, ((3 * p * p) as f64).powf(-0.5))?,
        patch_bias: None,
        class_embedding: Some(rng.tensor(&[vw], 0.0, vscale)?),
        positional_embedding: rng.tensor(&[v.seq_len(), vw], 0.0, vscale)?,
        ln_pre: Some(identity_ln(vw, v.transformer.layer_norm_eps)?),
        blocks: blocks(&mut rng, &v.transformer)?,
        ln_post: identity_ln(vw, v.transformer.layer_norm_eps)?,
        head: None,
        projection: Some(Linear {
            weight: rng.tensor(&[config.projection_dim, vw], 0.0, vscale)?,
            bias: None,
        }),
    };
    Ok(ClipWeights {
        text,
        vision,
        logit_scale: (1.0f32 / 0.07).ln(),
        logit_bias: None,
    })
}

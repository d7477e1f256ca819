//! Random batches (Gaussian pixels, random captions) for tests and smoke runs: no data needed.

use candle_core::{DType, Device, Tensor};

use super::loss::{duplicate_caption_mask, Batch, Batches};
use crate::model::ClipConfig;
use crate::model::Rng;
use crate::Result;

/// Batch `step` depends only on `(seed, step)`. Captions are SOT, random ordinary ids, EOT,
/// then padding, with lengths from 2 to the context length; the pooled position follows the
/// config's pooling rule. Pixels are N(0, 1) in the given dtype.
pub struct SyntheticBatches {
    config: ClipConfig,
    batch_size: usize,
    seed: u64,
    /// Dtype of the pixels (ids are always u32).
    pub dtype: DType,
}

impl SyntheticBatches {
    /// Batches of `batch_size` pairs shaped for `config`, from `seed`, with f32 pixels.
    pub fn new(config: &ClipConfig, batch_size: usize, seed: u64) -> Self {
        SyntheticBatches {
            config: config.clone(),
            batch_size,
            seed,
            dtype: DType::F32,
        }
    }
}

impl Batches for SyntheticBatches {
    fn batch(&mut self, step: u64) -> Result<Batch> {
        let mut rng = Rng::new(self.seed ^ step.wrapping_mul(0xD1B5_4A32_D192_ED03));
        let (t, v) = (&self.config.text, &self.config.vision);
        let b = self.batch_size;
        let (h, w) = v.image_size;
        let pixels = rng.tensor(&[b, 3, h, w], 0.0, 1.0)?.to_dtype(self.dtype)?;
        let s = t.context_length;
        if s < 2 {
            return Err(crate::Error::InvalidArgument(format!(
                "synthetic batches need a context length of at least 2, got {s}"
            )));
        }
        // The vocabulary's last two ids are SOT and EOT (as in CLIP's), padding is 0; ordinary
        // ids lie below both, so argmax pooling finds EOT.
        let vocab = t.vocab_size as u32;
        let (sot, eot, pad) = (vocab.saturating_sub(2), vocab.saturating_sub(1), 0);
        let lim = sot as u64;
        let mut ids = Vec::with_capacity(b * s);
        let mut pool = Vec::with_capacity(b);
        for _ in 0..b {
            let len = 2 + (rng.next_u64() % (s as u64 - 1)) as usize;
            let mut row = vec![pad; s];
            row[0] = sot;
            for x in row.iter_mut().take(len - 1).skip(1) {
                *x = loop {
                    let id = if lim > 0 {
                        rng.next_u64() % lim
                    } else {
                        rng.next_u64() % t.vocab_size as u64
                    } as u32;
                    if id != sot && id != eot {
                        break id;
                    }
                };
            }
            row[len - 1] = eot;
            pool.push(t.pooling.index(&row).unwrap_or(len - 1));
            ids.extend(row);
        }
        let ids = Tensor::from_vec(ids, (b, s), &Device::Cpu)?;
        Ok(Batch {
            pixels,
            excluded: duplicate_caption_mask(&ids)?,
            ids,
            pool,
        })
    }
}

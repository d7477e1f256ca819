//! The training loop: Vars for every parameter; per step a sharded taped forward, autograd on
//! the loss head, the towers' hand-written reverse pass, gradient clipping, AdamW, the
//! `logit_scale` clamp.

use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{DType, Tensor, Var};

use super::loss::{
    clip_loss, contrastive_loss_masked, embed, retrieval_accuracy, scalar_f32, towers, Batch,
    Batches,
};
use super::optimizer::{AdamW, AdamWConfig, Param};
use super::schedule::Schedule;
use crate::io::checkpoint::save::{hf_tensors, map_hf_tensors};
use crate::io::checkpoint::save_hf;
use crate::model::{ClipConfig, ClipModel, ClipWeights, TextTape, VisionTape};
use crate::{Error, Result};

/// CLIP caps the temperature at 100 (`logit_scale ≤ ln 100`), and keeps it ≥ 1.
const MAX_LOGIT_SCALE: f64 = 4.605_170_185_988_092; // ln(100)

/// Optimisation settings of a run.
#[derive(Clone, Debug, PartialEq)]
pub struct TrainConfig {
    /// Total optimizer steps (also the length of the cosine schedule).
    pub steps: u64,
    /// Peak learning rate, reached at the end of the warm-up ([`Schedule::base_lr`]).
    pub lr: f64,
    /// Learning rate the cosine decay ends at, after `steps` steps.
    pub min_lr: f64,
    /// Steps of linear warm-up, counted within `steps`.
    pub warmup_steps: u64,
    /// Moment decay rates, epsilon and weight decay of the optimizer.
    pub adamw: AdamWConfig,
    /// Clip the global gradient L2 norm to this value.
    pub grad_clip: Option<f64>,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            steps: 1000,
            lr: 5e-4,
            min_lr: 0.0,
            warmup_steps: 100,
            adamw: AdamWConfig::default(),
            grad_clip: Some(1.0),
        }
    }
}

impl TrainConfig {
    /// The learning-rate schedule these settings describe.
    fn schedule(&self) -> Schedule {
        Schedule {
            base_lr: self.lr,
            min_lr: self.min_lr,
            warmup: self.warmup_steps,
            total: self.steps,
        }
    }
}

/// What one optimizer step did.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepStats {
    /// 1-based count of steps done after this one.
    pub step: u64,
    /// Loss on the batch before the update.
    pub loss: f32,
    /// Learning rate of this step.
    pub lr: f64,
    /// Global gradient norm before clipping.
    pub grad_norm: f32,
    /// `logit_scale` after the update (and clamp).
    pub logit_scale: f32,
    /// Image–caption pairs per second for this step (forward + backward + update).
    pub items_per_s: f64,
}

/// Loss and in-batch top-1 retrieval accuracies.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Evaluation {
    /// Contrastive loss on the batch (its excluded pairs left out).
    pub loss: f32,
    /// Fraction of images whose most similar caption in the batch is their own.
    pub image_to_text: f32,
    /// Fraction of captions whose most similar image in the batch is their own.
    pub text_to_image: f32,
}

/// Where and how often [`Trainer::fit`] writes checkpoints (`{out}/checkpoint-{step}`, and
/// the final weights in `{out}` itself).
#[derive(Clone, Debug)]
pub struct CheckpointPlan {
    /// Directory of the final checkpoint and parent of the intermediate ones.
    pub out: PathBuf,
    /// Every K steps; 0 = only the final one.
    pub every: u64,
    /// `tokenizer.json` text written into every checkpoint.
    pub tokenizer_json: String,
    /// `preprocessor_config.json` of every checkpoint; `None`: the loader's default for the
    /// image size.
    pub preprocess: Option<serde_json::Value>,
    /// Overwrite checkpoint files already in a target directory (otherwise an error).
    pub force: bool,
}

/// Hooks of [`Trainer::fit`]: progress after each step (evaluate from here when wanted) and
/// notice of each checkpoint. Errors stop training.
pub trait Observer {
    /// Called after every optimizer step with its statistics.
    fn on_step(&mut self, _trainer: &Trainer, _stats: &StepStats) -> Result<()> {
        Ok(())
    }
    /// Called after each checkpoint is written, with its step and directory.
    fn on_checkpoint(&mut self, _step: u64, _dir: &Path) -> Result<()> {
        Ok(())
    }
}

impl Observer for () {}

/// Contrastive training of one CLIP model: the parameters as Vars, the optimizer state and
/// one single-threaded worker per core.
pub struct Trainer {
    model_config: ClipConfig,
    /// The run's settings.
    pub config: TrainConfig,
    /// Weights whose tensors are the Vars' tensors (same ids), so the forward is tracked.
    weights: ClipWeights,
    logit_scale: Var,
    opt: AdamW,
    /// One single-threaded pool per shard of a batch (see [`Trainer::gradients`]).
    workers: Vec<rayon::ThreadPool>,
}

impl Trainer {
    /// Starts from `init` (checked against `model_config`; f32 or f64). Every tensor becomes a
    /// Var named as in the HF checkpoint; `logit_scale` is one more, 0-d.
    pub fn new(model_config: ClipConfig, init: &ClipWeights, config: TrainConfig) -> Result<Self> {
        ClipModel::new(model_config.clone(), init.to_dtype(DType::F32)?)?;
        let dtype = init.text.token_embedding.dtype();
        let mut params = Vec::new();
        let weights = map_hf_tensors(init, |name, t| {
            let var = Var::from_tensor(&t.contiguous()?)?;
            let shared = var.as_tensor().clone();
            params.push(Param::new(name, var));
            Ok(shared)
        })?;
        let logit_scale = Var::from_tensor(
            &Tensor::new(init.logit_scale as f64, &candle_core::Device::Cpu)?.to_dtype(dtype)?,
        )?;
        params.push(Param::new("logit_scale", logit_scale.clone()));
        let opt = AdamW::new(params, config.adamw)?;
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let workers = (0..cores)
            .map(|i| {
                rayon::ThreadPoolBuilder::new()
                    .num_threads(1)
                    .thread_name(move |_| format!("pairlens-train-{i}"))
                    .build()
                    .map_err(|e| Error::InvalidArgument(format!("starting training threads: {e}")))
            })
            .collect::<Result<_>>()?;
        Ok(Trainer {
            model_config,
            config,
            weights,
            logit_scale,
            opt,
            workers,
        })
    }

    /// Optimizer steps done.
    fn steps_done(&self) -> u64 {
        self.opt.steps_done()
    }

    /// Every parameter, in checkpoint order with `logit_scale` last: the order of the
    /// gradients of [`Self::gradients`].
    pub fn params(&self) -> &[Param] {
        self.opt.params()
    }

    /// The loss on `batch` as a graph over the parameters (for gradients).
    fn loss_tensor(&self, batch: &Batch) -> Result<Tensor> {
        clip_loss(
            &self.model_config,
            &self.weights,
            self.logit_scale.as_tensor(),
            batch,
        )
    }

    /// Loss and the gradient of every parameter, in [`Self::params`] order, by the towers'
    /// hand-written reverse pass ([`crate::model::VisionTower::vjp`],
    /// [`crate::model::TextTower::vjp`]); candle's autograd only differentiates the loss w.r.t.
    /// the embeddings and the temperature (through the towers it zero-fills and accumulates a
    /// gradient for every graph node; the hand-written pass made a step 40 % shorter).
    ///
    /// The batch is cut into one shard of consecutive pairs per core; each shard's forward and
    /// reverse pass run on their own single-threaded worker, and only the loss sees the whole
    /// batch. On these small matrices that keeps every core busy, where splitting each op
    /// over threads did not (measured: a step took as long on one thread as on two). The
    /// shards and the order their gradients are summed in are fixed: runs on the same number of
    /// cores are reproducible bit for bit.
    pub fn gradients(&self, batch: &Batch) -> Result<(f32, Vec<Tensor>)> {
        let (vision, text) = towers(&self.model_config, &self.detached_weights()?);
        let shards = shard_ranges(batch.pool.len(), self.workers.len());
        let forward = self.on_workers(shards.len(), |i| {
            let r = shards[i].clone();
            let pixels = batch.pixels.narrow(0, r.start, r.len())?;
            let ids = batch.ids.narrow(0, r.start, r.len())?;
            let (img, img_tape) = vision.forward_taped(&pixels)?;
            let (txt, txt_tape) = text.forward_taped(&ids, &batch.pool[r])?;
            Ok(ShardForward {
                img,
                txt,
                img_tape,
                txt_tape,
            })
        })?;
        let img: Vec<&Tensor> = forward.iter().map(|f| &f.img).collect();
        let txt: Vec<&Tensor> = forward.iter().map(|f| &f.txt).collect();
        let img = Var::from_tensor(&Tensor::cat(&img, 0)?)?;
        let txt = Var::from_tensor(&Tensor::cat(&txt, 0)?)?;
        let loss = contrastive_loss_masked(
            img.as_tensor(),
            txt.as_tensor(),
            self.logit_scale.as_tensor(),
            batch.excluded.as_ref(),
        )?;
        let value = self.finite_loss(&loss)?;
        let g = loss.backward()?;
        let grad_of = |t: &Tensor| {
            g.get(t).cloned().ok_or_else(|| {
                Error::InvalidArgument("the loss does not reach an embedding".into())
            })
        };
        let (g_img, g_txt) = (grad_of(img.as_tensor())?, grad_of(txt.as_tensor())?);
        let backward = self.on_workers(shards.len(), |i| {
            let (r, f) = (&shards[i], &forward[i]);
            Ok(ClipWeights {
                vision: vision.vjp(&f.img_tape, &g_img.narrow(0, r.start, r.len())?)?,
                text: text.vjp(&f.txt_tape, &g_txt.narrow(0, r.start, r.len())?)?,
                logit_scale: 0.0,
                logit_bias: None,
            })
        })?;
        // Shard gradients summed in shard order, each in checkpoint (= parameter) order.
        let mut out: Vec<Tensor> = Vec::with_capacity(self.params().len());
        for grads in &backward {
            let grads = hf_tensors(grads)?.into_iter().map(|(_, t)| t);
            if out.is_empty() {
                out.extend(grads);
            } else {
                for (sum, g) in out.iter_mut().zip(grads) {
                    *sum = (&*sum + g)?;
                }
            }
        }
        out.push(grad_of(self.logit_scale.as_tensor())?);
        Ok((value, out))
    }

    /// `f(0..n)`, each call on its own worker, all at once; results in order.
    fn on_workers<T: Send>(
        &self,
        n: usize,
        f: impl Fn(usize) -> Result<T> + Sync,
    ) -> Result<Vec<T>> {
        std::thread::scope(|s| {
            let f = &f;
            let rest: Vec<_> = (1..n)
                .map(|i| {
                    let pool = &self.workers[i];
                    s.spawn(move || pool.install(|| f(i)))
                })
                .collect();
            let mut out = vec![self.workers[0].install(|| f(0))?];
            for h in rest {
                out.push(h.join().expect("a training worker panicked")?);
            }
            Ok(out)
        })
    }

    /// [`Self::gradients`] by candle's autograd through the whole graph: slower, kept as the
    /// independent check of the hand-written reverse pass. A parameter the backward pass never
    /// reached is an error (a silently dead branch of the model).
    pub fn autograd_gradients(&self, batch: &Batch) -> Result<(f32, Vec<Tensor>)> {
        let loss = self.loss_tensor(batch)?;
        let value = self.finite_loss(&loss)?;
        let grads = loss.backward()?;
        let g = self
            .params()
            .iter()
            .map(|p| {
                grads.get(p.var.as_tensor()).cloned().ok_or_else(|| {
                    Error::InvalidArgument(format!(
                        "parameter `{}` received no gradient: it does not take part in the loss",
                        p.name
                    ))
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok((value, g))
    }

    /// The loss's value, or an error naming the step where it stopped being finite.
    fn finite_loss(&self, loss: &Tensor) -> Result<f32> {
        let value = scalar_f32(loss)?;
        if !value.is_finite() {
            return Err(Error::InvalidArgument(format!(
                "training diverged: loss is {value} at step {}",
                self.steps_done() + 1
            )));
        }
        Ok(value)
    }

    /// One optimizer step on `batch`: loss, backward, optional global-norm clipping, AdamW at
    /// the scheduled lr, then `logit_scale` clamped to `[0, ln 100]` (as open_clip does after
    /// each step).
    pub fn step(&mut self, batch: &Batch) -> Result<StepStats> {
        let start = Instant::now();
        let lr = self.config.schedule().lr(self.steps_done());
        let (loss, mut grads) = self.gradients(batch)?;
        let mut sq = 0f64;
        for g in &grads {
            sq += g
                .to_dtype(DType::F64)?
                .sqr()?
                .sum_all()?
                .to_scalar::<f64>()?;
        }
        let norm = sq.sqrt();
        if !norm.is_finite() {
            return Err(Error::InvalidArgument(format!(
                "training diverged: gradient norm is {norm} at step {}",
                self.steps_done() + 1
            )));
        }
        if let Some(max) = self.config.grad_clip {
            if norm > max {
                let k = max / (norm + 1e-6);
                grads = grads.iter().map(|g| Ok((g * k)?)).collect::<Result<_>>()?;
            }
        }
        self.opt.step(&grads, lr)?;
        let clamped = self.logit_scale.as_tensor().clamp(0.0, MAX_LOGIT_SCALE)?;
        self.logit_scale.set(&clamped)?;
        let secs = start.elapsed().as_secs_f64();
        Ok(StepStats {
            step: self.steps_done(),
            loss,
            lr,
            grad_norm: norm as f32,
            logit_scale: self.logit_scale(),
            items_per_s: batch.pool.len() as f64 / secs.max(1e-9),
        })
    }

    /// Current `logit_scale` (log of the inverse temperature); NaN if it cannot be read.
    fn logit_scale(&self) -> f32 {
        scalar_f32(self.logit_scale.as_tensor()).unwrap_or(f32::NAN)
    }

    /// A detached snapshot of the current weights (no graph is recorded through it).
    pub fn weights(&self) -> Result<ClipWeights> {
        let mut w = self.detached_weights()?;
        w.logit_scale = self.logit_scale();
        Ok(w)
    }

    /// The current weights sharing the Vars' storage, untracked (`logit_scale` left stale).
    fn detached_weights(&self) -> Result<ClipWeights> {
        map_hf_tensors(&self.weights, |_, t| Ok(t.detach()))
    }

    /// Loss and in-batch retrieval accuracy with the current weights (no gradients).
    pub fn evaluate(&self, batch: &Batch) -> Result<Evaluation> {
        let w = self.weights()?;
        let (img, txt) = embed(&self.model_config, &w, batch)?;
        let ls = self.logit_scale.as_tensor().detach();
        let loss = scalar_f32(&contrastive_loss_masked(
            &img,
            &txt,
            &ls,
            batch.excluded.as_ref(),
        )?)?;
        let (i2t, t2i) = retrieval_accuracy(&img, &txt)?;
        Ok(Evaluation {
            loss,
            image_to_text: i2t,
            text_to_image: t2i,
        })
    }

    /// Saves the current weights as a HF checkpoint directory.
    pub fn save(
        &self,
        dir: &Path,
        tokenizer_json: &str,
        preprocess: Option<&serde_json::Value>,
        force: bool,
    ) -> Result<()> {
        save_hf(
            dir,
            &self.model_config,
            &self.weights()?.to_dtype(DType::F32)?,
            tokenizer_json,
            preprocess,
            force,
        )
    }

    /// Runs until `config.steps` steps are done: batch `step` from `data`, [`Self::step`],
    /// the observer, a checkpoint every `plan.every` steps and the final one in `plan.out`.
    pub fn fit(
        &mut self,
        data: &mut dyn Batches,
        plan: Option<&CheckpointPlan>,
        observer: &mut dyn Observer,
    ) -> Result<()> {
        while self.steps_done() < self.config.steps {
            let batch = data.batch(self.steps_done())?;
            let stats = self.step(&batch)?;
            observer.on_step(self, &stats)?;
            if let Some(plan) = plan {
                if plan.every > 0 && stats.step % plan.every == 0 && stats.step < self.config.steps
                {
                    let dir = plan.out.join(format!("checkpoint-{}", stats.step));
                    self.save(
                        &dir,
                        &plan.tokenizer_json,
                        plan.preprocess.as_ref(),
                        plan.force,
                    )?;
                    observer.on_checkpoint(stats.step, &dir)?;
                }
            }
        }
        if let Some(plan) = plan {
            self.save(
                &plan.out,
                &plan.tokenizer_json,
                plan.preprocess.as_ref(),
                plan.force,
            )?;
            observer.on_checkpoint(self.steps_done(), &plan.out)?;
        }
        Ok(())
    }
}

/// One shard's embeddings and what their reverse pass needs.
struct ShardForward {
    img: Tensor,
    txt: Tensor,
    img_tape: VisionTape,
    txt_tape: TextTape,
}

/// `n` pairs cut into at most `parts` runs of consecutive pairs, sizes differing by at most one.
fn shard_ranges(n: usize, parts: usize) -> Vec<std::ops::Range<usize>> {
    let parts = parts.clamp(1, n.max(1));
    (0..parts)
        .map(|i| (i * n / parts)..((i + 1) * n / parts))
        .collect()
}

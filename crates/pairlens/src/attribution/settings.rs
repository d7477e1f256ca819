//! What an explanation computes: split layers, path steps, mode, references.

use crate::model::ClipModel;
use crate::{Error, Result};
use candle_core::Tensor;

/// Which function is integrated along the path.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Jacobians of the unnormalised embeddings, divided by the two embedding norms afterwards
    /// (the paper and exclip). Σ A plus the reference terms does not tend to the cosine exactly:
    /// the normalisation is outside the integral.
    Exclip,
    /// Jacobians of the normalised embeddings e/|e| at every path point, no division afterwards.
    /// Σ A plus the reference terms tends to the cosine score as N grows.
    Cosine,
}

impl Mode {
    /// The name the command line and the JSON outputs use.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Exclip => "exclip",
            Mode::Cosine => "cosine",
        }
    }
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Mode {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "exclip" => Ok(Mode::Exclip),
            "cosine" => Ok(Mode::Cosine),
            other => Err(Error::InvalidArgument(format!(
                "unknown mode {other:?}: expected `exclip` or `cosine`"
            ))),
        }
    }
}

/// The image reference input, in network-input (normalised) space.
#[derive(Clone, Debug)]
pub enum ImageReference {
    /// All zeros after normalisation: the dataset mean colour (exclip's default).
    Zeros,
    /// Any normalised `[3, H, W]` tensor.
    Tensor(Tensor),
}

impl ImageReference {
    /// The reference in words, as `--out` records it.
    pub fn describe(&self) -> &'static str {
        match self {
            ImageReference::Zeros => "zeros after normalisation (the mean colour)",
            ImageReference::Tensor(_) => "a normalised tensor given by the caller",
        }
    }
}

/// The most path points N an explanation may use. The path sum's error falls like 1/N (the
/// residual shows it: a few per cent of the score at N = 10, under one per cent at N = 50 on the
/// fixtures), so N beyond a few hundred changes nothing visible, while the work below a tower's
/// last block grows linearly with N: the limit turns a typo such as `--steps 1000000` into an
/// error instead of days of computing. A front end may set a lower limit of its own (the viewer,
/// interactive, does).
pub const MAX_STEPS: usize = 1000;

/// Above this N, a split below a tower's last block gets [`Settings::cost_warning`]: N = 10–50
/// is what the method needs in practice.
pub const LARGE_STEPS: usize = 50;

/// What an explanation computes. [`crate::Explainer::default_settings`] gives a model's
/// defaults (the last block of each tower, N = 10, exclip mode).
#[derive(Clone, Debug)]
pub struct Settings {
    /// Block whose input is attributed in the text tower (0 = after the embeddings).
    pub text_layer: usize,
    /// Block whose input is attributed in the image tower (0 = after `ln_pre`).
    pub image_layer: usize,
    /// Number of path points N (α = 1, 1 − 1/N, …, 1/N).
    pub steps: usize,
    /// Which function is integrated along the path.
    pub mode: Mode,
    /// Number of filler tokens (id 0, "!") in the text reference `[SOT, 0 × n, EOT, pad…]`.
    pub text_reference_len: usize,
    /// The image reference input.
    pub image_reference: ImageReference,
    /// Upper bound on the elements of the largest batched activation of one JVP call (tangents ×
    /// path points × its per-tangent size); bounds peak memory. Work is split into chunks under it.
    pub max_batch_elements: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            text_layer: 0,
            image_layer: 0,
            steps: 10,
            mode: Mode::Exclip,
            text_reference_len: 1,
            image_reference: ImageReference::Zeros,
            max_batch_elements: 8 << 20,
        }
    }
}

impl Settings {
    /// Default layers = the last block of each tower (exclip's default 11/11 on ViT-B); for an
    /// image tower with an attention-pooling head (SigLIP), the head's input.
    pub fn for_model(model: &ClipModel) -> Self {
        Settings {
            text_layer: model.text.config.transformer.layers - 1,
            image_layer: model.vision.config.last_split(),
            ..Settings::default()
        }
    }

    /// Reject settings the model cannot honour, with a message that says the valid range.
    pub fn validate(&self, model: &ClipModel) -> Result<()> {
        let text_layers = model.text.config.transformer.layers;
        let image_layers = model.vision.config.transformer.layers;
        let image_last = model.vision.config.last_split();
        if self.text_layer >= text_layers {
            return Err(Error::InvalidArgument(format!(
                "text layer {} is out of range: the text tower has {text_layers} blocks (valid: 0..={})",
                self.text_layer,
                text_layers - 1
            )));
        }
        if self.image_layer > image_last {
            let head = match image_last == image_layers {
                true => format!(" and a pooling head (valid: 0..={image_last}, {image_last} = the head's input)"),
                false => format!(" (valid: 0..={image_last})"),
            };
            return Err(Error::InvalidArgument(format!(
                "image layer {} is out of range: the image tower has {image_layers} blocks{head}",
                self.image_layer
            )));
        }
        if self.steps == 0 {
            return Err(Error::InvalidArgument("steps must be at least 1".into()));
        }
        if self.steps > MAX_STEPS {
            return Err(Error::InvalidArgument(format!(
                "steps {} is too many: at most {MAX_STEPS} (the residual falls like 1/N; N = 10–50 \
                 usually suffices)",
                self.steps
            )));
        }
        if self.text_reference_len + 2 > model.text.config.context_length {
            return Err(Error::InvalidArgument(format!(
                "text reference length {} does not fit the context length {}",
                self.text_reference_len, model.text.config.context_length
            )));
        }
        if let ImageReference::Tensor(t) = &self.image_reference {
            let (h, w) = model.vision.config.image_size;
            if t.dims() != [3, h, w] {
                return Err(Error::InvalidArgument(format!(
                    "image reference has shape {:?}, expected [3, {h}, {w}]",
                    t.dims()
                )));
            }
        }
        Ok(())
    }

    /// A warning for valid settings that will be slow for no benefit: more than [`LARGE_STEPS`]
    /// path points where a split lies below its tower's last block. There every path point is a
    /// batch of tangents through all the blocks after the split, so the time grows in proportion
    /// to N; at the last block the closed form makes N nearly free, and no warning is given.
    pub fn cost_warning(&self, model: &ClipModel) -> Option<String> {
        let text_deep = !model.text.config.transformer.is_last(self.text_layer);
        let image_deep = self.image_layer < model.vision.config.last_split();
        if self.steps <= LARGE_STEPS || !(text_deep || image_deep) {
            return None;
        }
        let below = match (text_deep, image_deep) {
            (true, true) => format!(
                "text layer {} and image layer {}",
                self.text_layer, self.image_layer
            ),
            (true, false) => format!("text layer {}", self.text_layer),
            _ => format!("image layer {}", self.image_layer),
        };
        let defaults = Settings::default().steps;
        Some(format!(
            "N = {} path points at {below} (below the last block): each point costs a pass \
             through every later block, so this takes about {}× as long as N = {defaults}; \
             N = 10–50 usually suffices (the residual shows how close the sum is)",
            self.steps,
            self.steps.div_ceil(defaults)
        ))
    }

    /// α_n = 1 − n/N, n = 0, 1, …, as exclip's `torch.arange(1, 0, -1/N)`: N points, α = 1
    /// first, α = 0 excluded — except that torch computes the length as ceil(1 / (1/N)) in
    /// floating point, which gives N + 1 points for some N (49, 98, 103, 107, 196, …; the extra
    /// α ≈ 1e-16 is the reference itself, and the integral is divided by N + 1). pairlens follows
    /// the same rule so that it matches exclip for every N.
    pub fn alphas(&self) -> Vec<f32> {
        let step = 1.0 / self.steps as f64;
        let count = (1.0 / step).ceil() as usize;
        (0..count).map(|n| (1.0 - n as f64 * step) as f32).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ClipConfig, ClipWeights, TextTower, VisionTower};

    fn model() -> ClipModel {
        let config = ClipConfig::tiny();
        let w = ClipWeights::random(&config, 3).unwrap();
        ClipModel {
            text: TextTower {
                config: config.text.clone(),
                weights: w.text,
            },
            vision: VisionTower {
                config: config.vision.clone(),
                weights: w.vision,
            },
            logit_scale: w.logit_scale,
            logit_bias: w.logit_bias,
        }
    }

    /// N is capped with an error that says the limit; large N below the last block is allowed
    /// with a warning saying what it costs, at the last block silently.
    #[test]
    fn steps_limit_and_cost_warning() {
        let model = model();
        let last = Settings::for_model(&model);
        let with = |steps, layer| Settings {
            steps,
            text_layer: layer,
            image_layer: layer,
            ..last.clone()
        };
        let e = with(1_000_000, last.text_layer)
            .validate(&model)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("steps 1000000 is too many") && e.contains(&format!("at most {MAX_STEPS}")),
            "{e}"
        );
        assert!(with(MAX_STEPS, 0).validate(&model).is_ok());
        assert_eq!(with(MAX_STEPS, last.text_layer).cost_warning(&model), None);
        assert_eq!(with(LARGE_STEPS, 0).cost_warning(&model), None);
        let w = with(500, 0).cost_warning(&model).expect("a warning");
        assert!(
            w.contains("N = 500")
                && w.contains("text layer 0 and image layer 0")
                && w.contains("50×"),
            "{w}"
        );
        let only_image = Settings {
            image_layer: 0,
            ..with(200, last.text_layer)
        };
        let w = only_image.cost_warning(&model).expect("a warning");
        assert!(w.contains("at image layer 0 (below"), "{w}");
    }

    #[test]
    fn path_points_follow_torch_arange() {
        let alphas = |steps| {
            Settings {
                steps,
                ..Settings::default()
            }
            .alphas()
        };
        assert_eq!(alphas(1), vec![1.0]);
        assert_eq!(alphas(4), vec![1.0, 0.75, 0.5, 0.25]);
        assert_eq!(alphas(10).len(), 10);
        // torch.arange(1, 0, -1/49) has 50 elements, the last ≈ 8e-17.
        let a = alphas(49);
        assert_eq!(a.len(), 50);
        assert!(a[49].abs() < 1e-15);
        assert_eq!(alphas(50).len(), 50);
    }
}

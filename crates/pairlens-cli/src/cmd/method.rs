//! The method's flags, shared by every command that computes explanations.

use anyhow::Result;
use pairlens::attribution::{Mode, Settings};
use pairlens::Explainer;

#[derive(clap::Args, Debug, Clone)]
pub struct MethodArgs {
    // The help texts give the valid range, with the built-in model's block counts.
    // Negative numbers are taken as values, so that the error names the flag and the value.
    #[arg(long, value_name = "L", allow_negative_numbers = true,
          help = layer_help("text", pairlens::builtin::layers().0))]
    pub text_layer: Option<usize>,
    #[arg(long, value_name = "L", allow_negative_numbers = true,
          help = layer_help("image", pairlens::builtin::layers().1))]
    pub image_layer: Option<usize>,
    #[arg(long, default_value_t = 10, allow_negative_numbers = true, help = steps_help())]
    pub steps: usize,
    /// `exclip`: Jacobians of the raw embeddings divided by their norms (the paper);
    /// `cosine`: Jacobians of the normalised embeddings (conserves the cosine as N grows).
    #[arg(long, default_value = "exclip")]
    pub mode: Mode,
    /// Filler tokens in the text reference `[SOT, "!" × n, EOT]`.
    #[arg(long, default_value_t = 1, allow_negative_numbers = true)]
    pub text_reference_len: usize,
}

impl MethodArgs {
    /// Settings for the explainer's model, checked against it (layer ranges, steps, reference
    /// length).
    pub fn settings(&self, explainer: &Explainer) -> Result<Settings> {
        let mut settings = explainer.default_settings();
        settings.text_layer = self.text_layer.unwrap_or(settings.text_layer);
        settings.image_layer = self.image_layer.unwrap_or(settings.image_layer);
        settings.steps = self.steps;
        settings.mode = self.mode;
        settings.text_reference_len = self.text_reference_len;
        explainer.check_settings(&settings)?;
        if let Some(warning) = settings.cost_warning(explainer.model()) {
            eprintln!("warning: {warning}");
        }
        Ok(settings)
    }
}

fn layer_help(tower: &str, builtin_blocks: usize) -> String {
    let (name, zero, head) = match tower {
        "text" => ("Text", "right after the embeddings", ""),
        _ => (
            "Image",
            "right after ln_pre",
            "; a SigLIP tower also takes L = its number of blocks, the input of its pooling \
             head, which is then the default",
        ),
    };
    format!(
        "{name} block whose input is attributed: 0 ≤ L < the number of {tower} blocks (the \
         built-in model has {builtin_blocks}; 0 = {zero}{head}) [default: the last block]"
    )
}

fn steps_help() -> String {
    format!(
        "Path points N of the integrated Jacobians (α = 1, 1 − 1/N, …, 1/N), 1 ≤ N ≤ {}; \
         N = 10–50 usually suffices",
        pairlens::attribution::MAX_STEPS
    )
}

//! The method's flags, shared by every command that computes explanations.

use anyhow::Result;
use pairlens::attribution::{Mode, Settings};
use pairlens::Explainer;

#[derive(clap::Args, Debug, Clone)]
pub struct MethodArgs {
    /// Text block whose input is attributed [default: the last block].
    #[arg(long)]
    pub text_layer: Option<usize>,
    /// Image block whose input is attributed [default: the last block].
    #[arg(long)]
    pub image_layer: Option<usize>,
    /// Path points N of the integrated Jacobians (α = 1, 1 − 1/N, …, 1/N).
    #[arg(long, default_value_t = 10)]
    pub steps: usize,
    /// `exclip`: Jacobians of the raw embeddings divided by their norms (the paper);
    /// `cosine`: Jacobians of the normalised embeddings (conserves the cosine as N grows).
    #[arg(long, default_value = "exclip")]
    pub mode: Mode,
    /// Filler tokens in the text reference `[SOT, "!" × n, EOT]`.
    #[arg(long, default_value_t = 1)]
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
        Ok(settings)
    }
}

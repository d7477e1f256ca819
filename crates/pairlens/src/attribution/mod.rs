//! Second-order token × patch attributions (Möller et al., TMLR'25), computed the cheap way.
//!
//! For a split layer `l` of each tower, with x, y the states entering block `l` and r_x, r_y
//! those of the reference inputs, the interaction of text token s and image token t is
//!
//! `A[s, t] = Σ_k U[k, s] V[k, t] / (|e_x| |e_y|)`, with
//! `U[:, s] = (1/N) Σ_n JVP(e, h_n, (x − r_x) masked to token s)`, `h_n = r_x + α_n (x − r_x)`,
//! `α_n = 1 − n/N` (n = 0..N−1), and V likewise for the image tower.
//!
//! This is exactly exclip's result (which builds `J_xᵀ J_y` explicitly) reordered: contract each
//! integrated Jacobian with its input difference first, and get the contraction by forward-mode
//! JVPs, one tangent per token, batched.
//!
//! Modules: `settings` (what to compute), `side` (one tower's contraction U or V by batched
//! JVPs), `last_block` (the same in closed form when the split is a tower's last block),
//! `explanation` (combining both sides: interactions, score, reference terms, residual, and the
//! span and box queries), [`export`] (safetensors).

mod explanation;
pub mod export;
mod last_block;
mod settings;
mod side;

pub use explanation::{
    cosine, patch_weights, region_scores, span_rows, ExclipTerms, Explanation, ReferenceTerms,
    SpanHeatmap,
};
pub use settings::{ImageReference, Mode, Settings, LARGE_STEPS, MAX_STEPS};
pub use side::{image_side, text_side, TowerSide};

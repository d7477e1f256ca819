//! `pairlens embed`: the plain forward pass of both towers, to check a checkpoint and its
//! preprocessing against the reference library before explaining anything.

use std::path::PathBuf;

use anyhow::{Context, Result};
use pairlens::Explainer;

#[derive(clap::Args)]
pub struct Args {
    /// Caption to embed.
    #[arg(long, value_parser = super::utf8_text())]
    pub caption: String,
    /// Image file (JPEG, PNG, WebP).
    #[arg(long)]
    pub image: PathBuf,
    #[command(flatten)]
    pub model: super::ModelArgs,
    #[command(flatten)]
    pub image_limit: super::ImageLimit,
    /// Cut captions longer than the context instead of failing.
    #[arg(long)]
    pub truncate: bool,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

pub struct Embedding {
    pub image: Vec<f32>,
    pub text: Vec<f32>,
    pub score: f32,
    /// The model's logit and, for SigLIP, its sigmoid.
    pub logit: f32,
    pub probability: Option<f32>,
    pub tokens: Vec<String>,
    pub ids: Vec<u32>,
    /// Words of the caption the model reads as `<unk>`.
    pub unknown_words: Vec<String>,
}

pub fn embed(args: &Args) -> Result<(Explainer, Embedding)> {
    let ex = args.model.open()?;
    let enc = super::truncate_hint(ex.encode(&args.caption, args.truncate))?;
    let decoded = args.image_limit.decode(&args.image)?;
    let pre = ex
        .preprocess(&decoded)
        .with_context(|| format!("preprocessing {}", args.image.display()))?;
    let e = ex.embed(&pre.pixels, &enc)?;
    let unknown_words = args.model.unknown_words(&ex, &args.caption)?;
    let embedding = Embedding {
        image: e.image,
        text: e.text,
        score: e.score,
        logit: e.logit,
        probability: e.probability,
        tokens: enc.tokens,
        ids: enc.ids[..enc.len].to_vec(),
        unknown_words,
    };
    Ok((ex, embedding))
}

pub fn run(args: Args) -> Result<()> {
    let (ex, e) = embed(&args)?;
    let mut text = String::new();
    if args.json {
        let out = serde_json::json!({
            "model": args.model.json_name(),
            "format": ex.format().to_string(),
            "image": args.image,
            "caption": args.caption,
            "image_embedding": e.image,
            "text_embedding": e.text,
            "score": e.score,
            "logit_scale": ex.model().logit_scale.exp(),
            "logit_bias": ex.model().logit_bias,
            "logit": e.logit,
            "probability": e.probability,
            "tokens": e.tokens,
            "ids": e.ids,
            "unknown_words": e.unknown_words,
        });
        text = serde_json::to_string(&out)? + "\n";
    } else {
        use std::fmt::Write;
        let fmt = |v: &[f32]| {
            v.iter()
                .map(|x| format!("{x:.6}"))
                .collect::<Vec<_>>()
                .join(" ")
        };
        writeln!(text, "model: {} ({})", args.model.name(), ex.format())?;
        writeln!(
            text,
            "tokens ({}): {}",
            e.tokens.len(),
            e.tokens.join(" | ")
        )?;
        writeln!(text, "score (cosine): {:.6}", e.score)?;
        match e.probability {
            Some(p) => writeln!(text, "logit: {:.6}  (sigmoid: {p:.6})", e.logit)?,
            None => writeln!(text, "logit: {:.6}", e.logit)?,
        }
        writeln!(
            text,
            "image embedding ({}): {}",
            e.image.len(),
            fmt(&e.image)
        )?;
        writeln!(text, "text embedding ({}): {}", e.text.len(), fmt(&e.text))?;
    }
    super::print(&text)
}

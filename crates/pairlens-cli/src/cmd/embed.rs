//! `pairlens embed`: the plain forward pass of both towers, to check a checkpoint and its
//! preprocessing against the reference library before explaining anything.

use std::path::PathBuf;

use anyhow::{anyhow, Context, Result};
use candle_core::{Device, Tensor};
use pairlens::io::preprocess::preprocess_file;

#[derive(clap::Args)]
pub struct Args {
    /// Checkpoint directory (Hugging Face CLIP or open_clip hub layout)
    /// [default: the built-in Fashion-MNIST model].
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Image file (JPEG, PNG, WebP).
    #[arg(long)]
    pub image: PathBuf,
    /// Caption to embed.
    #[arg(long)]
    pub caption: String,
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
    pub tokens: Vec<String>,
    pub ids: Vec<u32>,
}

pub fn embed(args: &Args) -> Result<(pairlens::io::checkpoint::LoadedModel, Embedding)> {
    let loaded = super::load_model(args.model.as_deref())?;
    let model = &loaded.model;

    let enc = loaded.tokenizer.encode(&args.caption, args.truncate)?;
    let pool = model.config.text.pooling.index(&enc.ids).ok_or_else(|| {
        anyhow!(
            "caption {:?}: no token to pool ({:?}) in its ids",
            args.caption,
            model.config.text.pooling
        )
    })?;
    let ids = Tensor::from_vec(enc.ids.clone(), (1, enc.ids.len()), &Device::Cpu)?;
    let text = model.text.forward(&ids, &[pool]).context("text tower")?;

    let pre = preprocess_file(&args.image, &loaded.preprocess)?;
    let image = model
        .vision
        .forward(&pre.pixels.unsqueeze(0)?)
        .context("vision tower")?;

    let text: Vec<f32> = text.squeeze(0)?.to_vec1()?;
    let image: Vec<f32> = image.squeeze(0)?.to_vec1()?;
    let score = cosine(&image, &text);
    let tokens = enc.tokens.clone();
    let ids = enc.ids[..enc.len].to_vec();
    Ok((
        loaded,
        Embedding {
            image,
            text,
            score,
            tokens,
            ids,
        },
    ))
}

/// Cosine similarity, accumulated in f64.
fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
    let na: f64 = a.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    (dot / (na * nb).max(1e-12)) as f32
}

pub fn run(args: Args) -> Result<()> {
    let (loaded, e) = embed(&args)?;
    let mut text = String::new();
    if args.json {
        let out = serde_json::json!({
            "model": loaded.dir,
            "format": loaded.format.to_string(),
            "image": args.image,
            "caption": args.caption,
            "image_embedding": e.image,
            "text_embedding": e.text,
            "score": e.score,
            "logit_scale": loaded.model.logit_scale.exp(),
            "tokens": e.tokens,
            "ids": e.ids,
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
        writeln!(text, "model: {} ({})", loaded.dir.display(), loaded.format)?;
        writeln!(
            text,
            "tokens ({}): {}",
            e.tokens.len(),
            e.tokens.join(" | ")
        )?;
        writeln!(text, "score (cosine): {:.6}", e.score)?;
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

//! `pairlens vocab`: the tokens a model's vocabulary holds, so that a caption can be written
//! in words the model knows (a word it does not know is read as `<unk>`; `explain` and `embed`
//! warn about those).

use anyhow::{Context, Result};

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub model: super::ModelArgs,
    /// Print one JSON array instead of one token per line.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: Args) -> Result<()> {
    let ex = args.model.open()?;
    let tokenizer = ex
        .tokenizer()
        .with_context(|| format!("loading {}", ex.source()))?;
    let tokens = tokenizer.vocabulary();
    let text = if args.json {
        serde_json::to_string(&tokens)? + "\n"
    } else {
        tokens.iter().map(|t| format!("{t}\n")).collect()
    };
    eprintln!(
        "{}: {} tokens (special tokens left out)",
        args.model.name(),
        tokens.len()
    );
    super::print(&text)
}

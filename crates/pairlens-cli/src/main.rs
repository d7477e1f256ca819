//! `pairlens`: command-line front end. One module per subcommand under `cmd/`; adding one means
//! a variant in [`Command`] and a `run` function.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod cmd;

#[derive(Parser)]
#[command(name = "pairlens", version, about = "Second-order token x patch attributions for CLIP-style dual encoders")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Embed one image and one caption; print both embeddings, their cosine score and the tokens.
    Embed(cmd::embed::Args),
    /// Explain why an image and captions match: second-order token × patch interactions.
    Explain(cmd::explain::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Embed(args) => cmd::embed::run(args),
        Command::Explain(args) => cmd::explain::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

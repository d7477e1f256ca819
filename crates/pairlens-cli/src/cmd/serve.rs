//! `pairlens serve`: the interactive viewer (page + JSON API, see the `pairlens-serve` crate).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use pairlens_serve::{examples, AppState, Config};

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub model: super::ModelArgs,
    #[command(flatten)]
    pub image_limit: super::ImageLimit,
    /// Address to listen on; port 0 picks a free one. Anything but loopback exposes the server.
    #[arg(long, default_value = "127.0.0.1:7878")]
    pub addr: SocketAddr,
    /// Example images: a directory with `data.jsonl` (mosaics format) and the images it names
    /// [default: the examples built into the binary].
    #[arg(long)]
    pub examples: Option<PathBuf>,
    /// Largest upload in megabytes (MiB).
    #[arg(long, default_value_t = 8)]
    pub max_upload_mb: usize,
    /// Explanations kept in memory (least recently used go first).
    #[arg(long, default_value_t = 64)]
    pub cache: usize,
}

pub fn run(args: Args) -> Result<()> {
    if args.cache == 0 {
        anyhow::bail!("--cache must be at least 1");
    }
    if args.max_upload_mb == 0 || args.max_upload_mb > 1024 {
        anyhow::bail!("--max-upload-mb must be between 1 and 1024");
    }
    // A server fails at start, not at its first request: the tokenizer and every weight are
    // checked now.
    let explainer = args.model.open()?;
    let loading = || format!("loading {}", explainer.source());
    explainer.tokenizer().with_context(loading)?;
    explainer.check_weights().with_context(loading)?;
    let model_name = match &args.model.model {
        Some(dir) => dir.display().to_string(),
        None => "built-in".to_string(),
    };
    let example_files = match &args.examples {
        Some(dir) => examples::from_dir(dir)
            .with_context(|| format!("loading examples from {}", dir.display()))?,
        None => examples::embedded()?,
    };
    let config = Config {
        max_upload_bytes: args.max_upload_mb << 20,
        cache_entries: args.cache,
        max_image_pixels: args.image_limit.max_pixels,
        hosts: pairlens_serve::guard::Hosts {
            any_address: !args.addr.ip().is_loopback(),
        },
        ..Config::default()
    };
    let state = Arc::new(AppState::new(explainer, model_name, example_files, config)?);

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let result = runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(args.addr)
            .await
            .with_context(|| format!("cannot listen on {}", args.addr))?;
        let addr = listener.local_addr().context("reading the bound address")?;
        if !addr.ip().is_loopback() {
            eprintln!("warning: listening on {addr}, which is not a loopback address: anyone who can reach it can use the server");
        }
        super::print(&format!("listening on http://{addr}/\n"))?;
        pairlens_serve::serve(listener, state).await.context("serving")
    });
    // A computation still running on a blocking thread is not waited for.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    result
}

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
    /// Address to listen on, IP:PORT or a name of this machine's loopback interface such as
    /// localhost:PORT; port 0 picks a free one. Anything but loopback exposes the server.
    #[arg(long, default_value = "127.0.0.1:7878", value_parser = parse_addr)]
    pub addr: SocketAddr,
    /// Example images: a directory with `data.jsonl` (mosaics format) and the images it names
    /// [default: the examples built into the binary].
    #[arg(long)]
    pub examples: Option<PathBuf>,
    /// Largest upload in megabytes (MiB).
    #[arg(long, default_value_t = 8)]
    pub max_upload_mb: usize,
    /// Memory for cached explanations and image sides, in MiB (least recently used go first).
    #[arg(long, default_value_t = 256, value_name = "MIB")]
    pub cache_mb: u64,
    /// Explanations and uploads computed at once (each already uses every core).
    #[arg(long, default_value_t = 2, value_name = "N")]
    pub jobs: usize,
    /// Requests that may wait for a free job; more are refused (503, Retry-After).
    #[arg(long, default_value_t = 8, value_name = "N")]
    pub queue: usize,
    /// A secret every request must show (as `?token=…` in the URL, printed at start, or
    /// `Authorization: Bearer …`). Required beyond loopback: one is made up when not given.
    #[arg(long, value_name = "SECRET")]
    pub token: Option<String>,
}

/// `--addr`'s parser: an IP address and port, or a host name and port where the name resolves
/// to a loopback address (`localhost`). A name that resolves beyond loopback is refused: which
/// interface it would expose depends on name resolution, so exposing the server takes an
/// explicit address.
fn parse_addr(s: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = s.parse::<SocketAddr>() {
        return Ok(addr);
    }
    let example = "e.g. 127.0.0.1:7878 or localhost:7878";
    let (host, port) = s
        .rsplit_once(':')
        .ok_or_else(|| format!("{s:?}: expected HOST:PORT, {example}"))?;
    let port: u16 = port
        .parse()
        .map_err(|_| format!("{s:?}: {port:?} is not a port number (0–65535)"))?;
    if host.is_empty() {
        return Err(format!("{s:?}: no host name before the port, {example}"));
    }
    let resolved: Vec<SocketAddr> = std::net::ToSocketAddrs::to_socket_addrs(&(host, port))
        .map_err(|e| format!("{s:?}: cannot resolve {host:?}: {e}"))?
        .collect();
    // IPv4 first: browsers opening http://localhost:PORT/ try it as well as ::1.
    let loopback = resolved
        .iter()
        .filter(|a| a.ip().is_loopback())
        .min_by_key(|a| a.is_ipv6())
        .copied();
    loopback.ok_or_else(|| {
        format!(
            "{s:?}: {host:?} does not resolve to a loopback address; to listen beyond this \
             machine give an IP address, e.g. 0.0.0.0:{port}"
        )
    })
}

pub fn run(args: Args) -> Result<()> {
    if args.cache_mb == 0 || args.cache_mb > 1 << 20 {
        anyhow::bail!("--cache-mb must be between 1 and 1048576");
    }
    if args.jobs == 0 || args.jobs > 64 {
        anyhow::bail!("--jobs must be between 1 and 64");
    }
    if args.queue > 10_000 {
        anyhow::bail!("--queue must be at most 10000");
    }
    if let Some(t) = &args.token {
        if t.len() < 8
            || !t
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.~".contains(&b))
        {
            anyhow::bail!(
                "--token must be at least 8 characters of letters, digits, '-', '_', '.' or '~' \
                 (it travels in a URL and a cookie)"
            );
        }
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
    let beyond_loopback = !args.addr.ip().is_loopback();
    let token = match args.token.clone() {
        Some(t) => Some(t),
        None if beyond_loopback => {
            Some(pairlens_serve::guard::new_token().context("making up an access token")?)
        }
        None => None,
    };
    // Three quarters for explanations (many per image), a quarter for image sides.
    let cache_bytes = args.cache_mb << 20;
    let config = Config {
        max_upload_bytes: args.max_upload_mb << 20,
        explanation_bytes: cache_bytes - cache_bytes / 4,
        image_side_bytes: cache_bytes / 4,
        max_image_pixels: args.image_limit.max_pixels,
        workers: args.jobs,
        queued: args.queue,
        access: pairlens_serve::guard::Access {
            hosts: pairlens_serve::guard::Hosts {
                any_address: beyond_loopback,
            },
            token: token.clone(),
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
            eprintln!("warning: listening on {addr}, which is not a loopback address: anyone who can reach it and has the token can use the server");
        }
        let query = token.map(|t| format!("?token={t}")).unwrap_or_default();
        super::print(&format!("listening on http://{addr}/{query}\n"))?;
        pairlens_serve::serve(listener, state).await.context("serving")
    });
    // A computation still running on a blocking thread is not waited for.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_and_loopback_names() {
        assert_eq!(
            parse_addr("127.0.0.1:7878").unwrap().to_string(),
            "127.0.0.1:7878"
        );
        assert_eq!(parse_addr("[::1]:80").unwrap().to_string(), "[::1]:80");
        let local = parse_addr("localhost:7878").unwrap();
        assert!(local.ip().is_loopback() && local.port() == 7878, "{local}");
        for (bad, why) in [
            ("localhost", "expected HOST:PORT"),
            ("localhost:http", "not a port number"),
            (":7878", "no host name"),
            ("localhost:70000", "not a port number"),
        ] {
            let e = parse_addr(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }
}

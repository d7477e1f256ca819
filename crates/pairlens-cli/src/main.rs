//! `pairlens`: command-line front end. One module per subcommand under `cmd/`; adding one means
//! a variant in [`Command`] and a `run` function.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod cmd;

/// Weights straight from the checkpoint file's pages instead of copied (see the module docs).
#[global_allocator]
static ALLOCATOR: pairlens::io::mapped::MappingAllocator = pairlens::io::mapped::MappingAllocator;

#[derive(Parser)]
#[command(
    name = "pairlens",
    version,
    about = "Second-order token x patch attributions for CLIP-style dual encoders"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Per-class grounding of two eval-grounding runs side by side (table + chart).
    CompareGrounding(cmd::compare_grounding::Args),
    /// Embed one image and one caption; print both embeddings, their cosine score and the tokens.
    Embed(cmd::embed::Args),
    /// Held-out Fashion-MNIST numbers: mosaic retrieval R@1/R@5 and zero-shot accuracy.
    EvalRetrieval(cmd::eval_retrieval::Args),
    /// Phrase grounding on a mosaic JSONL: pointing game, box mass, reverse direction.
    EvalGrounding(cmd::eval_grounding::Args),
    /// Explain why an image and captions match: second-order token × patch interactions.
    Explain(cmd::explain::Args),
    /// Continue contrastive training of a checkpoint on in-domain Fashion-MNIST mosaics.
    Finetune(cmd::finetune::Args),
    /// Write seeded Fashion-MNIST captioned mosaics (PNG + data.jsonl) with boxes and phrase spans.
    Mosaics(cmd::mosaics::Args),
    /// Interactive viewer: a local web page and JSON API to explain images and query spans and boxes.
    Serve(cmd::serve::Args),
    /// Train the built-in CLIP model on Fashion-MNIST mosaics; writes a Hugging Face checkpoint.
    Train(cmd::train::Args),
    /// List the tokens a model's vocabulary holds (words outside it are read as <unk>).
    Vocab(cmd::vocab::Args),
}

fn main() -> ExitCode {
    tune_allocator();
    let cli = Cli::parse();
    if matches!(
        cli.command,
        Command::Train(_) | Command::Finetune(_) | Command::Explain(_) | Command::EvalGrounding(_)
    ) {
        single_threaded_ops();
    }
    let result = match cli.command {
        Command::CompareGrounding(args) => cmd::compare_grounding::run(args),
        Command::Embed(args) => cmd::embed::run(args),
        Command::EvalRetrieval(args) => cmd::eval_retrieval::run(args),
        Command::EvalGrounding(args) => cmd::eval_grounding::run(args),
        Command::Explain(args) => cmd::explain::run(args),
        Command::Finetune(args) => cmd::finetune::run(args),
        Command::Mosaics(args) => cmd::mosaics::run(args),
        Command::Serve(args) => cmd::serve::run(args),
        Command::Train(args) => cmd::train::run(args),
        Command::Vocab(args) => cmd::vocab::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// Keep freed memory in the process for reuse instead of returning every large block to the
/// kernel: each fresh page costs a fault and a kernel zeroing, which on virtual machines is as
/// expensive as the arithmetic (measured: ~0.3 s per 600 MB). The first 256 MiB of the heap are
/// also marked for transparent huge pages, so the activations of an explanation fault in 2 MiB
/// at a time instead of 4 KiB (ViT-B/32 at layers 11/11: 26k → 15k page faults, image side
/// 0.232 → 0.200 s, best of 8). Where the kernel offers no huge pages the advice is ignored.
fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes glibc malloc's tuning parameters, before any thread starts;
    // the advised range lies inside a block this function owns until it frees it (and the
    // advice changes how pages are backed, not their contents).
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 256 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
        // Below the mmap threshold, so from the heap; freed, it stays there (trim threshold).
        const RESERVE: usize = (256 << 20) - 4096;
        const HUGE: usize = 2 << 20;
        let block = libc::malloc(RESERVE) as usize;
        if block != 0 {
            let start = block.div_ceil(HUGE) * HUGE;
            let end = (block + RESERVE) / HUGE * HUGE;
            libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_HUGEPAGE);
            libc::free(block as *mut libc::c_void);
        }
    }
}

/// Training runs one shard of each batch per core, every op of a shard on one thread
/// (`pairlens::train::Trainer::gradients`). candle's own pool for large elementwise ops would
/// make the shards queue for it (measured: 2.4 instead of 4.0 steps/s), so it is turned off by
/// its documented variable, unless the user set one. `explain` and `eval-grounding` too: their
/// heavy work is matmuls on rayon's threads, and candle's pool thread spinning between ops took
/// a tenth of the CPU from them (ViT-B/32, layers 11/11: total 0.517 → 0.502 s best of 8;
/// layers 6/6 unchanged; eval-grounding on 1000 mosaics, built-in model: 74 → 83 images/s).
fn single_threaded_ops() {
    if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
        // Before any thread or tensor exists: nothing reads the environment concurrently.
        std::env::set_var("CANDLE_NUM_THREADS", "1");
    }
}

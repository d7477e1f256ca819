//! Where an explanation's time goes, phase by phase, in one process (so the weights are loaded
//! once and every phase is timed warm): loading, the plain forward of image + reference up to
//! the split, the whole image side (V), the whole text side (U); and one vision block's six
//! matmuls at the forward's row count and 4× and 16× it, three ways: `x·Wᵀ` with the weights as
//! loaded (`W` `[out, in]`), `(W·xᵀ)ᵀ` with the same weights, and `x·W` with `W` stored
//! `[in, out]`, to size what the weights' layout and the product's order cost.
//!
//! ```sh
//! PAIRLENS_BENCH_MODEL=/tmp/pairlens-bench/ViT-B-32 PAIRLENS_BENCH_IMAGE=/tmp/pairlens-bench/image.png \
//!     cargo bench -p pairlens --bench engine
//! ```
//! Optional: `PAIRLENS_BENCH_LAYERS=11/11`, `PAIRLENS_BENCH_STEPS=10`, `PAIRLENS_BENCH_REPEATS=5`.
//! Models come from `scripts/bench/explain_bench.py`; without `PAIRLENS_BENCH_MODEL` the bench
//! says so and exits. Prints best and median seconds per phase.

use std::path::PathBuf;
use std::time::Instant;

use candle_core::{Device, Tensor};
use pairlens::attribution::{image_side, side::NoProgress, text_side, Settings};
use pairlens::io::checkpoint;
use pairlens::io::preprocess::preprocess_file;

/// As in the `pairlens` binary: weights are the checkpoint file's pages, not copies.
#[global_allocator]
static ALLOCATOR: pairlens::io::mapped::MappingAllocator = pairlens::io::mapped::MappingAllocator;

const CAPTION: &str = "a brown dog and a small black cat sit together on green grass";

fn env(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
}

/// Best and median of `repeats` runs of `f`, in seconds.
fn time(repeats: usize, mut f: impl FnMut()) -> (f64, f64) {
    let mut ts: Vec<f64> = (0..repeats)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .collect();
    ts.sort_by(f64::total_cmp);
    (ts[0], ts[ts.len() / 2])
}

fn main() {
    let Ok(model_dir) = std::env::var("PAIRLENS_BENCH_MODEL") else {
        eprintln!(
            "engine bench: set PAIRLENS_BENCH_MODEL=DIR (and PAIRLENS_BENCH_IMAGE=FILE); skipped"
        );
        return;
    };
    let image = PathBuf::from(env("PAIRLENS_BENCH_IMAGE", "/tmp/pairlens-bench/image.png"));
    let layers = env("PAIRLENS_BENCH_LAYERS", "11/11");
    let (tl, il) = layers
        .split_once('/')
        .expect("PAIRLENS_BENCH_LAYERS is TEXT/IMAGE");
    let repeats: usize = env("PAIRLENS_BENCH_REPEATS", "5").parse().expect("repeats");
    let settings = Settings {
        text_layer: tl.parse().expect("text layer"),
        image_layer: il.parse().expect("image layer"),
        steps: env("PAIRLENS_BENCH_STEPS", "10").parse().expect("steps"),
        ..Settings::default()
    };
    let dir = PathBuf::from(&model_dir);
    let load = time(repeats, || {
        checkpoint::load(&dir, &Device::Cpu).expect("load");
    });
    let loaded = checkpoint::load(&dir, &Device::Cpu).expect("load");
    let model = &loaded.model;
    settings.validate(model).expect("settings");
    let pixels = preprocess_file(&image, &loaded.preprocess)
        .expect("image")
        .pixels;
    let caption = loaded.tokenizer.encode(CAPTION, false).expect("caption");
    let reference = loaded.tokenizer.reference(settings.text_reference_len);

    let batch = Tensor::stack(&[&pixels, &pixels.zeros_like().unwrap()], 0).unwrap();
    let forward = time(repeats, || {
        model
            .vision
            .hidden_at(settings.image_layer, &batch)
            .expect("forward");
    });
    let image_s = time(repeats, || {
        image_side(model, &pixels, &settings, &mut NoProgress).expect("image side");
    });
    let text_s = time(repeats, || {
        text_side(model, &caption, &reference, &settings, &mut NoProgress).expect("text side");
    });
    // One vision block's six matmuls at several row counts, in the three weight layouts.
    let block = &model.vision.weights.blocks[0];
    let rows = batch.dim(0).unwrap() * model.config.vision.seq_len();
    let linears = [
        &block.q, &block.k, &block.v, &block.out, &block.fc1, &block.fc2,
    ];
    let mut matmul_rows = Vec::new();
    for rows in [rows, 4 * rows, 16 * rows] {
        let inputs: Vec<Tensor> = linears
            .iter()
            .map(|l| Tensor::randn(0f32, 1.0, (rows, l.weight.dim(1).unwrap()), &Device::Cpu).unwrap())
            .collect();
        let matmuls = |rhs: &[Tensor]| {
            time(repeats, || {
                for (x, w) in inputs.iter().zip(rhs) {
                    x.matmul(w).unwrap();
                }
            })
        };
        let as_loaded = matmuls(&linears.map(|l| l.weight.t().unwrap()));
        let weight_first = time(repeats, || {
            for (x, l) in inputs.iter().zip(&linears) {
                l.weight.matmul(&x.t().unwrap()).unwrap().t().unwrap().contiguous().unwrap();
            }
        });
        let transposed = matmuls(&linears.map(|l| l.weight.t().unwrap().contiguous().unwrap()));
        matmul_rows.push((rows, as_loaded, weight_first, transposed));
    }
    println!(
        "{model_dir}, layers {layers}, N = {}, {} caption tokens, {repeats} repeats (best / median):",
        settings.steps,
        caption.len
    );
    for (name, (best, median)) in [
        ("load", load),
        ("image + reference forward to the split", forward),
        ("image side (V)", image_s),
        ("text side (U)", text_s),
    ] {
        println!("  {name:40} {best:.4} s / {median:.4} s");
    }
    println!("one vision block's six matmuls (best / median):");
    for (rows, as_loaded, weight_first, transposed) in matmul_rows {
        for (name, (best, median)) in [
            ("x·Wᵀ, W [out, in] as loaded", as_loaded),
            ("(W·xᵀ)ᵀ, W as loaded", weight_first),
            ("x·W, W stored [in, out]", transposed),
        ] {
            println!("  {rows:5} rows, {name:28} {best:.4} s / {median:.4} s");
        }
    }
}

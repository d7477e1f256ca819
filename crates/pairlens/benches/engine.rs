//! Where an explanation's time goes, phase by phase, in one process (so the weights are loaded
//! once and every phase is timed warm): loading, the plain forward of image + reference up to
//! the split, the whole image side (V), the whole text side (U); and one vision block's six
//! matmuls at the forward's row count and 4× and 16× it, three ways: `x·Wᵀ` with the weights as
//! loaded (`W` `[out, in]`) through candle, through pairlens' own kernel (`ops::linear`), and `x·W` with `W` stored
//! `[in, out]`, to size what the weights' layout and the product's order cost; and one vision
//! block's forward op by op (norms, linears, head copies, attention, activation).
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
use pairlens::attribution::{image_side, text_side, Settings};
use pairlens::io::checkpoint;
use pairlens::io::preprocess::preprocess_file;
use pairlens::model::ops;
use pairlens::NoProgress;

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
    let rows = batch.dim(0).unwrap() * model.vision.config.seq_len();
    let linears = [
        &block.q, &block.k, &block.v, &block.out, &block.fc1, &block.fc2,
    ];
    let mut matmul_rows = Vec::new();
    for rows in [rows, 4 * rows, 16 * rows] {
        let inputs: Vec<Tensor> = linears
            .iter()
            .map(|l| {
                Tensor::randn(0f32, 1.0, (rows, l.weight.dim(1).unwrap()), &Device::Cpu).unwrap()
            })
            .collect();
        let matmuls = |rhs: &[Tensor]| {
            time(repeats, || {
                for (x, w) in inputs.iter().zip(rhs) {
                    x.matmul(w).unwrap();
                }
            })
        };
        let as_loaded = matmuls(&linears.map(|l| l.weight.t().unwrap()));
        let kernel = time(repeats, || {
            for (x, l) in inputs.iter().zip(&linears) {
                ops::linear_tangent(x, l).unwrap();
            }
        });
        let transposed = matmuls(&linears.map(|l| l.weight.t().unwrap().contiguous().unwrap()));
        matmul_rows.push((rows, as_loaded, kernel, transposed));
    }
    // One vision block's forward op by op, on the hidden states entering block 1 (as
    // `block::Stack::block_forward` runs them), to see which ops the forward's time is in.
    let h1 = model.vision.hidden_at(1, &batch).expect("hidden");
    let cfg = &model.vision.config.transformer;
    let (b, s, width) = h1.dims3().unwrap();
    let (nh, hd) = (cfg.heads, cfg.head_dim());
    let w = &model.vision.weights.blocks[1];
    let eps = cfg.layer_norm_eps;
    let heads = |y: &Tensor| {
        y.reshape((b, s, nh, hd))
            .unwrap()
            .transpose(1, 2)
            .unwrap()
            .contiguous()
            .unwrap()
    };
    let ln1 = ops::layer_norm(&h1, &w.ln_1, eps).unwrap();
    let (q, k, v) = (
        heads(&ops::linear(&ln1, &w.q).unwrap()),
        heads(&ops::linear(&ln1, &w.k).unwrap()),
        heads(&ops::linear(&ln1, &w.v).unwrap()),
    );
    let scale = 1.0 / (hd as f64).sqrt();
    let o = ops::attention(&q, &k, &v, None, scale).unwrap();
    let merged = o
        .transpose(1, 2)
        .unwrap()
        .contiguous()
        .unwrap()
        .reshape((b, s, width))
        .unwrap();
    let x1 = (&h1 + ops::linear(&merged, &w.out).unwrap()).unwrap();
    let ln2 = ops::layer_norm(&x1, &w.ln_2, eps).unwrap();
    let f1 = ops::linear(&ln2, &w.fc1).unwrap();
    let act = ops::activation(&f1, cfg.activation).unwrap();
    let block_reps = 4 * repeats;
    let block_ops: Vec<(&str, (f64, f64))> = vec![
        (
            "layer norms (2)",
            time(block_reps, || {
                ops::layer_norm(&h1, &w.ln_1, eps).unwrap();
                ops::layer_norm(&x1, &w.ln_2, eps).unwrap();
            }),
        ),
        (
            "q, k, v linears",
            time(block_reps, || {
                for l in [&w.q, &w.k, &w.v] {
                    ops::linear(&ln1, l).unwrap();
                }
            }),
        ),
        (
            "split and merge heads (4 copies)",
            time(block_reps, || {
                for y in [&ln1, &ln1, &ln1] {
                    heads(y);
                }
                o.transpose(1, 2).unwrap().contiguous().unwrap();
            }),
        ),
        (
            "attention (scores, softmax, values)",
            time(block_reps, || {
                ops::attention(&q, &k, &v, None, scale).unwrap();
            }),
        ),
        (
            "out linear + residual",
            time(block_reps, || {
                (&h1 + ops::linear(&merged, &w.out).unwrap()).unwrap();
            }),
        ),
        (
            "fc1 linear",
            time(block_reps, || {
                ops::linear(&ln2, &w.fc1).unwrap();
            }),
        ),
        (
            "activation",
            time(block_reps, || {
                ops::activation(&f1, cfg.activation).unwrap();
            }),
        ),
        (
            "fc2 linear + residual",
            time(block_reps, || {
                (&x1 + ops::linear(&act, &w.fc2).unwrap()).unwrap();
            }),
        ),
    ];

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
    println!(
        "one vision block's forward op by op, {} rows (best / median):",
        b * s
    );
    let (mut best, mut median) = (0.0, 0.0);
    for (name, (b, m)) in &block_ops {
        println!("  {name:40} {b:.5} s / {m:.5} s");
        (best, median) = (best + b, median + m);
    }
    println!("  {:40} {best:.5} s / {median:.5} s", "sum");
    println!("one vision block's six matmuls (best / median):");
    for (rows, as_loaded, kernel, transposed) in matmul_rows {
        for (name, (best, median)) in [
            ("x·Wᵀ, W [out, in] as loaded", as_loaded),
            ("ops::linear (AVX-512 kernel)", kernel),
            ("x·W, W stored [in, out]", transposed),
        ] {
            println!("  {rows:5} rows, {name:28} {best:.4} s / {median:.4} s");
        }
    }
}

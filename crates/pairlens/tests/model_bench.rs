//! Timing of ViT-B/32-size blocks (ignored by default; run in release):
//! `cargo test --release -p pairlens --test model_bench -- --ignored --nocapture`

use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use pairlens::model::Rng;
use pairlens::model::{ClipConfig, ClipWeights, Tangents, VisionTower};

fn time<T>(label: &str, reps: usize, mut f: impl FnMut() -> T) -> f64 {
    f(); // warm-up
    let t0 = Instant::now();
    for _ in 0..reps {
        std::hint::black_box(f());
    }
    let s = t0.elapsed().as_secs_f64() / reps as f64;
    eprintln!("{label}: {:.1} ms", s * 1e3);
    s
}

#[test]
#[ignore]
fn vit_b32_block_timing() {
    let mut cfg = ClipConfig::vit_b32_like();
    cfg.vision.transformer.layers = 2; // one full block + the pooled last block
    cfg.text.transformer.layers = 0;
    cfg.text.vocab_size = 1;
    let w = ClipWeights::random(&cfg, 1).unwrap();
    let tower = VisionTower::new(cfg.vision.clone(), w.vision).unwrap();
    let (s, width) = (cfg.vision.seq_len(), cfg.vision.transformer.width);
    let mut rng = Rng::new(2);
    let px = rng.tensor(&[1, 3, 224, 224], 0.0, 1.0).unwrap();
    let h = tower.hidden_at(0, &px).unwrap();
    eprintln!("threads: {}", candle_core::utils::get_num_threads());

    let x = rng.tensor(&[64 * s, width], 0.0, 1.0).unwrap();
    let wt = rng.tensor(&[3072, width], 0.0, 0.03).unwrap();
    let wtt = wt.t().unwrap().contiguous().unwrap();
    let gf = 2.0 * (64 * s * width * 3072) as f64 / 1e9;
    let a = time("matmul x·Wᵀ (strided W), 3200x768x3072", 3, || {
        x.matmul(&wt.t().unwrap()).unwrap()
    });
    let b = time("matmul x·W (pre-transposed)", 3, || {
        x.matmul(&wtt).unwrap()
    });
    eprintln!("  {:.1} / {:.1} GFLOP/s", gf / a, gf / b);

    for t in [49usize, 196] {
        let dense = Tangents::Dense(rng.tensor(&[t, 1, s, width], 0.0, 1.0).unwrap());
        let rows: Vec<usize> = (0..t).map(|i| 1 + i % (s - 1)).collect();
        let single = Tangents::SingleRow {
            rows,
            values: rng.tensor(&[t, 1, width], 0.0, 1.0).unwrap(),
        };
        let last_d = time(&format!("T={t} dense, last block only (pooled)"), 2, || {
            tower.jvp_from(1, &h, &dense).unwrap()
        });
        let both_d = time(&format!("T={t} dense, full block + last"), 2, || {
            tower.jvp_from(0, &h, &dense).unwrap()
        });
        let both_s = time(&format!("T={t} single-row, full block + last"), 2, || {
            tower.jvp_from(0, &h, &single).unwrap()
        });
        let flops = 2.0 * (t * s) as f64 * 12.0 * (width * width) as f64 / 1e9;
        eprintln!(
            "  full dense block ≈ {:.0} ms ({:.1} GFLOP/s on its linears), first block single-row ≈ {:.0} ms",
            (both_d - last_d) * 1e3,
            flops / (both_d - last_d),
            (both_s - last_d) * 1e3
        );
    }
    let _ = (
        DType::F32,
        Device::Cpu,
        Tensor::zeros(1, DType::F32, &Device::Cpu),
    );
}

#!/usr/bin/env python
"""Benchmark: pairlens explain on a random-weight SigLIP B/16 (google/siglip-base-patch16-224's
geometry: 224 px, 196 patches, 64 text tokens) beside a random open_clip ViT-B/16, same image,
caption, N and thread count, runs interleaved, wall time and peak RSS of the whole process.

  /work/venv/bin/python scripts/bench/siglip_bench.py [--repeats 5] [--deep-repeats K] [--quick]

Reuses explain_bench.py's helpers (imported as a module: make_model, make_image, settle, timed,
median_run, BIN, CAPTION, OUT = $BENCH_DIR, default /tmp/pairlens-bench, never the repository).
The SigLIP checkpoint is transformers' `SiglipModel(SiglipConfig(...))` with its own seeded
initialisation, saved with `save_pretrained`, plus SiglipImageProcessor's 224 px
preprocessor_config.json and the tiny SentencePiece tokenizer of fixtures/tokenizers/siglip-spm
(300 pieces; the model's 32000-row embedding is larger, which pairlens accepts).

Rows: default layers of each model (SigLIP: text 11, image 12 = the input of the attention-
pooling head; CLIP: 11/11), SigLIP image layer 11 (last encoder block + head, batched JVPs),
SigLIP 6/6 and CLIP 6/6 (`--deep-repeats K` runs these deeper rows only K times, in the first K
repeats: they take 0.5-5 min each on 2 cores). Every repeat runs every configuration once, in the order of the table,
so the two models see the same machine state. 2 threads (RAYON_NUM_THREADS=2, as explain_bench).
"""
import argparse
import importlib.util
import json
import os
import platform
import shlex
import shutil
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]

# explain_bench: on import it drops scripts/ and scripts/bench/ from sys.path, imports numpy,
# torch, PIL and safetensors, and loads scripts/fixtures/models.py (which turns torch's autograd
# off globally); it writes nothing. Nothing here needs autograd, so no adjustment is needed.
_spec = importlib.util.spec_from_file_location("explain_bench", HERE / "explain_bench.py")
eb = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(eb)

import torch  # noqa: E402

SIGLIP_TOKENIZER = REPO / "fixtures" / "tokenizers" / "siglip-spm"
TOKENIZER_FILES = ["spiece.model", "tokenizer_config.json", "special_tokens_map.json"]
PREPROCESSOR = {
    "do_resize": True, "size": {"height": 224, "width": 224}, "resample": 3,
    "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True,
    "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5],
    "image_processor_type": "SiglipImageProcessor",
}


def make_siglip():
    """Random SigLIP base-patch16-224 under $BENCH_DIR (reused when already there)."""
    from transformers import SiglipConfig, SiglipModel

    d = eb.OUT / "siglip-base-patch16-224-random"
    if (d / "model.safetensors").exists() and (d / "preprocessor_config.json").exists():
        return d
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir(parents=True)
    block = dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
                 hidden_act="gelu_pytorch_tanh", layer_norm_eps=1e-6)
    cfg = SiglipConfig(text_config=dict(block, vocab_size=32000, max_position_embeddings=64),
                       vision_config=dict(block, image_size=224, patch_size=16, num_channels=3))
    torch.manual_seed(0)  # transformers' own SigLIP initialisation, seeded
    model = SiglipModel(cfg).eval()
    for name, p in model.named_parameters():
        if not torch.isfinite(p).all():
            sys.exit(f"non-finite initial weight {name}")
    model.save_pretrained(str(d), safe_serialization=True)
    (d / "preprocessor_config.json").write_text(json.dumps(PREPROCESSOR, indent=2) + "\n")
    for f in TOKENIZER_FILES:
        shutil.copy(SIGLIP_TOKENIZER / f, d / f)
    return d


def command(model_dir, image, tl=None, il=None, n=10):
    c = [eb.BIN, "explain", "--model", model_dir, "--image", image, "--caption", eb.CAPTION, "--steps", n]
    if tl is not None:
        c += ["--text-layer", tl]
    if il is not None:
        c += ["--image-layer", il]
    return [str(x) for x in c] + ["--json"]


def run_once(cmd, env):
    """timed() exits on failure; keep the message instead, so the other rows still run."""
    try:
        return eb.timed(cmd, env), None
    except SystemExit as e:
        return None, str(e.code)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=5, help="runs per configuration (median, best)")
    ap.add_argument("--quick", action="store_true", help="only the default-layer rows")
    ap.add_argument("--deep-repeats", type=int, help="runs of the deeper rows (34 s to ~5 min each on 2 "
                    "cores); default --repeats. They run in the first repeats, after the default rows")
    args = ap.parse_args()
    if not eb.BIN.exists():
        sys.exit(f"{eb.BIN} missing: run `cargo build --release -p pairlens-cli` first")
    eb.OUT.mkdir(parents=True, exist_ok=True)
    image = eb.make_image()
    siglip = make_siglip()
    clip = eb.make_model("ViT-B-16")
    eb.settle(siglip / "model.safetensors")
    eb.settle(clip / "open_clip_model.safetensors")

    deep = args.repeats if args.deep_repeats is None else min(args.deep_repeats, args.repeats)
    configs = [
        ("SigLIP B/16, N=10, default layers (text 11, image 12 = pooling head input)", command(siglip, image)),
        ("CLIP ViT-B/16, N=10, default layers (11/11)", command(clip, image)),
    ]
    if not args.quick:
        configs += [
            ("SigLIP B/16, N=10, text 11, image 11 (last block + head)", command(siglip, image, il=11)),
            ("SigLIP B/16, N=10, layers 6/6", command(siglip, image, 6, 6)),
            ("CLIP ViT-B/16, N=10, layers 6/6", command(clip, image, 6, 6)),
        ]
    env = dict(os.environ, RAYON_NUM_THREADS="2")
    runs = {name: [] for name, _ in configs}
    errors = {}
    started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    for r in range(args.repeats):
        for i, (name, cmd) in enumerate(configs):
            if name in errors or (i >= 2 and r >= deep):
                continue
            got, err = run_once(cmd, env)
            if err:
                errors[name] = err
                print(f"FAILED: {name}\n{err}\n", flush=True)
                continue
            runs[name].append(got)
            print(f"{time.strftime('%H:%M:%S', time.gmtime())} [{r + 1}/{args.repeats}] {name}: "
                  f"{got[1]:.3f} s, {got[2]:.0f} MiB", flush=True)

    results = {}
    for name, _ in configs:
        if runs[name] and name not in errors:
            summary, wall, best, rss = eb.median_run(runs[name])
            walls = sorted(x[1] for x in runs[name])
            results[name] = dict(wall=wall, best=best, worst=walls[-1], rss=rss,
                                 rss_all=sorted(x[2] for x in runs[name]), summary=summary)

    print(f"\nstarted {started}, finished {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}; "
          f"{platform.node()} ({os.cpu_count()} CPUs), RAYON_NUM_THREADS=2")
    print(f"binary {eb.BIN} (mtime {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime(eb.BIN.stat().st_mtime))})")
    print(f"{args.repeats} runs of the default-layer rows"
          + ("" if args.quick else f", {deep} of the deeper rows, interleaved in that order")
          + "; median (best) wall, peak RSS of the median run\n")
    print("| configuration | wall, median (best) | peak RSS |")
    print("|---|---|---|")
    for name, _ in configs:
        if name in results:
            x = results[name]
            k = len(runs[name])
            print(f"| {name}{'' if k == args.repeats else f' ({k} runs)'} | {x['wall']:.2f} s ({x['best']:.2f}) | "
                  f"{x['rss']:.0f} MiB |")
        else:
            print(f"| {name} | failed | – |")
    s, c = (results.get(configs[0][0]), results.get(configs[1][0]))
    if s and c:
        print(f"\nSigLIP / CLIP at the default layers: wall {s['wall'] / c['wall']:.2f}x "
              f"(best {s['best'] / c['best']:.2f}x), peak RSS {s['rss'] / c['rss']:.2f}x")
    print("\nspread (worst wall; all peak RSS, MiB):")
    for name, x in results.items():
        print(f"  {name}: worst {x['worst']:.2f} s; RSS {', '.join(f'{v:.0f}' for v in x['rss_all'])}")
    print("\nwhat ran (from --json of the median run: format, layers, text tokens, patch grid, timings in s):")
    for name, x in results.items():
        j = x["summary"]
        st = j.get("settings", {})
        toks = (j.get("captions") or [{}])[0].get("tokens") or []
        tm = " ".join(f"{k[:-2]} {v:.2f}" for k, v in j.get("timings", {}).items())
        print(f"  {name}: {j.get('format')}, text {st.get('text_layer')} image {st.get('image_layer')}, "
              f"{len(toks)} tokens, grid {st.get('grid')}; {tm}")
    print("\ncommands (each run with RAYON_NUM_THREADS=2 under /usr/bin/time -v):")
    for name, cmd in configs:
        print(f"  {shlex.join(cmd)}")
    for name, err in errors.items():
        print(f"\nERROR in {name}:\n  {shlex.join(dict(configs)[name])}\n{err}")


if __name__ == "__main__":
    main()

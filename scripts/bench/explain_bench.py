#!/usr/bin/env python
"""Benchmark: pairlens explain vs exclip 1.1 on random-weight ViT-B/32 (and ViT-B/16) open_clip
checkpoints, 2 threads each, wall time and peak RSS of the whole process (/usr/bin/time -v).

  /path/to/venv/bin/python scripts/bench/explain_bench.py [--no-exclip] [--quick] [--baseline BIN]

Needs the release binary (cargo build --release) and the reference Python environment
(README: "Regenerating fixtures"). Models go to $BENCH_DIR (default /tmp/pairlens-bench),
never into the repository. Prints a markdown table with ratios, and checks that pairlens'
interactions equal exclip's on the full-size model.

pairlens runs --repeats times per configuration (the table shows the median, the best in
brackets); exclip once. `--baseline BIN` times another pairlens build (say, main's) on the same
configurations, its runs interleaved with this build's, and adds the ratio of the medians. Before any timing, every model file is settled in the page cache the way
a checkpoint read from disk is (see `settle`), the same for both tools.
"""
import argparse
import importlib.util
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path = [p for p in sys.path if Path(p or ".").resolve() not in (HERE, REPO / "scripts")]

import numpy as np
import torch
from PIL import Image
from safetensors.numpy import load_file
from safetensors.torch import save_file

OUT = Path(os.environ.get("BENCH_DIR", "/tmp/pairlens-bench"))
BIN = REPO / "target" / "release" / "pairlens"
# 15 tokens with SOT and EOT in the CLIP vocabulary.
CAPTION = "a brown dog and a small black cat sit together on green grass"

spec = importlib.util.spec_from_file_location("fixture_models", REPO / "scripts" / "fixtures" / "models.py")
fixture_models = importlib.util.module_from_spec(spec)
spec.loader.exec_module(fixture_models)


def make_model(name, image_size=None):
    import open_clip
    from open_clip.model import CLIP

    d = OUT / name.replace("/", "-")
    if (d / "open_clip_model.safetensors").exists():
        return d
    d.mkdir(parents=True, exist_ok=True)
    cfg = open_clip.get_model_config(name)
    if image_size:
        cfg["vision_cfg"]["image_size"] = image_size
    torch.manual_seed(0)
    with torch.no_grad():
        model = CLIP(**cfg).eval()
        fixture_models.randomize(model, seed=5, token_std=0.02)
    pp = {"size": cfg["vision_cfg"]["image_size"], "mode": "RGB", "mean": list(open_clip.OPENAI_DATASET_MEAN),
          "std": list(open_clip.OPENAI_DATASET_STD), "interpolation": "bicubic", "resize_mode": "shortest",
          "fill_color": 0}
    (d / "open_clip_config.json").write_text(json.dumps({"model_cfg": cfg, "preprocess_cfg": pp}, indent=2))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(d / "open_clip_model.safetensors"))
    return d


def make_image():
    p = OUT / "image.png"
    if not p.exists():
        rng = np.random.default_rng(3)
        h, w = 300, 400
        y, x = np.mgrid[0:h, 0:w]
        img = np.stack([x * 255 / w, y * 255 / h, 128 + 100 * np.sin(x / 19.0) * np.cos(y / 13.0)], -1)
        img += rng.normal(0, 10, img.shape)
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8), "RGB").save(p)
    return p


def settle(path):
    """Put `path` in the page cache as if read from disk, not as just written.

    A file this script has just written sits in the page cache in 4 KiB pages; read back from
    disk (a downloaded checkpoint on any later day) it sits in 2 MiB folios, which a memory map
    covers with one entry each. Mapping ViT-B/32's 605 MB and tearing the map down at exit takes
    ~80 ms in 4 KiB pages and ~5 ms in 2 MiB folios here (measured with a C probe). Dropping the
    written pages and reading the file back gives the second state, for both tools alike.
    """
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        while os.read(fd, 8 << 20):
            pass
    finally:
        os.close(fd)


def timed(cmd, env=None):
    """Run under /usr/bin/time -v; return (stdout, wall seconds, peak RSS MiB). The wall time is
    measured here (time -v prints hundredths of a second, too coarse for runs of 0.2 s); it
    includes starting /usr/bin/time, the same few milliseconds for every command."""
    start = time.perf_counter()
    r = subprocess.run(["/usr/bin/time", "-v"] + [str(c) for c in cmd], capture_output=True, text=True, env=env)
    secs = time.perf_counter() - start
    if r.returncode != 0:
        sys.exit(f"failed: {' '.join(map(str, cmd))}\n{r.stderr[-3000:]}")
    rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", r.stderr).group(1)) / 1024
    return r.stdout, secs, rss


REPEATS = 5
BASELINE = None


def median_run(runs):
    """(summary, median wall, best wall, peak RSS of the median run) of timed() results."""
    runs = sorted(runs, key=lambda r: r[1])
    stdout, wall, rss = runs[len(runs) // 2]
    return json.loads(stdout), wall, runs[0][1], rss


def pairlens(model_dir, image, tl, il, n, out=None):
    """REPEATS runs of this build, and as many of BASELINE interleaved with them when set:
    (median_run of this build, median_run of the baseline or None)."""
    def cmd(binary):
        c = [binary, "explain", "--model", model_dir, "--image", image, "--caption", CAPTION,
             "--text-layer", tl, "--image-layer", il, "--steps", n, "--json", "--force"]
        return c + ["--out", out] if out else c
    env = dict(os.environ, RAYON_NUM_THREADS="2")
    ours, theirs = [], []
    for _ in range(REPEATS):
        ours.append(timed(cmd(BIN), env))
        if BASELINE:
            theirs.append(timed(cmd(BASELINE), env))
    return median_run(ours), (median_run(theirs) if BASELINE else None)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--no-exclip", action="store_true", help="skip the reference (70-100 s, ~9 GB)")
    ap.add_argument("--quick", action="store_true", help="only the headline configuration")
    ap.add_argument("--repeats", type=int, default=5, help="pairlens runs per configuration")
    ap.add_argument("--baseline", type=Path, help="another pairlens binary to time beside this build")
    args = ap.parse_args()
    global REPEATS, BASELINE
    REPEATS = args.repeats
    BASELINE = args.baseline
    if not BIN.exists():
        sys.exit(f"{BIN} missing: run `cargo build --release` first")
    OUT.mkdir(parents=True, exist_ok=True)
    image = make_image()
    b32 = make_model("ViT-B-32")
    settle(b32 / "open_clip_model.safetensors")
    rows = []

    def entry(config, measured):
        (_, wall, best, rss), base = measured
        r = {"config": config, "pairlens_s": wall, "pairlens_best_s": best, "pairlens_mib": rss}
        if base:
            r.update(baseline_s=base[1], baseline_best_s=base[2])
        return r

    measured = pairlens(b32, image, 11, 11, 10, OUT / "pairlens_b32.safetensors")
    tokens = len(measured[0][0]["captions"][0]["tokens"])
    head = entry("ViT-B/32, N=10, layers 11/11", measured)
    if not args.no_exclip:
        stdout, ewall, erss = timed([sys.executable, HERE / "run_exclip.py", b32, image, CAPTION, 11, 11, 10,
                                     OUT / "exclip_b32.safetensors"])
        info = json.loads(stdout.strip().splitlines()[-1])
        ours = load_file(str(OUT / "pairlens_b32.safetensors"))["interactions"][:, 1:]
        ref = load_file(str(OUT / "exclip_b32.safetensors"))["interactions"]
        ref = ref.reshape(ref.shape[0], -1)
        rel = float(np.abs(ours - ref).max() / np.abs(ref).max())
        head.update(exclip_s=ewall, exclip_mib=erss, exclip_explain_s=info["explain_s"], parity_rel=rel)
    rows.append(head)
    print(f"caption tokens (SOT..EOT): {tokens}", flush=True)

    if not args.quick:
        def row(config, model_dir, tl, il, n):
            rows.append(entry(config, pairlens(model_dir, image, tl, il, n)))

        for n in [1, 5, 20, 50]:
            row(f"ViT-B/32, N={n}, layers 11/11", b32, 11, 11, n)
        row("ViT-B/32, N=10, layers 6/6", b32, 6, 6, 10)
        row("ViT-B/32, N=10, layers 0/0", b32, 0, 0, 10)
        b16 = make_model("ViT-B-16")
        settle(b16 / "open_clip_model.safetensors")
        row("ViT-B/16 (197 image tokens), N=10, layers 11/11", b16, 11, 11, 10)
        b16_320 = make_model("ViT-B-16", image_size=320)
        settle(b16_320 / "open_clip_model.safetensors")
        row("ViT-B/16 at 320 px (401 image tokens), N=10, layers 11/11", b16_320, 11, 11, 10)

    print(f"\npairlens: median of {REPEATS} runs (best in brackets); exclip: one run")
    print("\n| configuration | pairlens wall | pairlens peak RSS | exclip wall | exclip peak RSS | speed-up | memory ratio |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        ex = r.get("exclip_s")
        print(f"| {r['config']} | {r['pairlens_s']:.3f} s ({r['pairlens_best_s']:.3f}) | {r['pairlens_mib']:.0f} MiB | "
              + (f"{ex:.1f} s | {r['exclip_mib']:.0f} MiB | {ex / r['pairlens_s']:.0f}x | "
                 f"{r['exclip_mib'] / r['pairlens_mib']:.1f}x |" if ex else "– | – | – | – |"))
    if BASELINE:
        print(f"\nthis build vs {BASELINE}, runs interleaved, medians of {REPEATS} (best in brackets)")
        print("\n| configuration | this build | baseline | this / baseline |")
        print("|---|---|---|---|")
        for r in rows:
            print(f"| {r['config']} | {r['pairlens_s']:.3f} s ({r['pairlens_best_s']:.3f}) | "
                  f"{r['baseline_s']:.3f} s ({r['baseline_best_s']:.3f}) | {r['pairlens_s'] / r['baseline_s']:.3f} |")
    if "parity_rel" in head:
        print(f"\nexclip explain() alone: {head['exclip_explain_s']:.1f} s; "
              f"pairlens vs exclip max |diff| / max |A| = {head['parity_rel']:.2e}")


if __name__ == "__main__":
    main()

#!/usr/bin/env python
"""What any explainer must spend on this machine before it attributes anything: PyTorch (2
threads, oneDNN/MKL kernels) reading the checkpoint and running the plain forward passes that
exclip and pairlens both need at layers 11/11 (image and all-zero reference image through the
vision tower; caption and reference caption, cut after their EOT, through the text tower).

  /path/to/venv/bin/python scripts/bench/floor.py [MODEL_DIR=/tmp/pairlens-bench/ViT-B-32] [REPEATS=5]

MODEL_DIR is an open_clip directory made by explain_bench.py. Prints the best and median of
REPEATS for each part, and the wall time a 300x speed-up over a given exclip time would allow.
"""
import json
import statistics
import sys
import time
from pathlib import Path

import torch

torch.set_num_threads(2)
from open_clip.model import CLIP
from safetensors.torch import load_file

d = Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/pairlens-bench/ViT-B-32")
repeats = int(sys.argv[2]) if len(sys.argv) > 2 else 5
cfg = json.loads((d / "open_clip_config.json").read_text())["model_cfg"]
weights = d / "open_clip_model.safetensors"


def best_median(f):
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        f()
        ts.append(time.perf_counter() - t0)
    return min(ts), statistics.median(ts)


load = best_median(lambda: load_file(str(weights)))
# load_file maps the file; the pages are faulted in when first read. Every weight but the token
# embedding (whose rows are only looked up) is read by a forward pass.
touch = best_median(lambda: sum(float(v.float().sum()) for k, v in load_file(str(weights)).items()
                                if "token_embedding" not in k))
model = CLIP(**cfg).eval()
model.load_state_dict(load_file(str(weights)))
size = cfg["vision_cfg"]["image_size"]
pixels = torch.randn(2, 3, size, size)
pixels[1] = 0
ids = torch.zeros(2, 16, dtype=torch.long)
ids[:, 0] = 49406
ids[0, 1:15] = torch.arange(1, 15) * 1000
ids[0, 15] = 49407
ids[1, 2] = 49407


def image_forward():
    with torch.no_grad():
        model.encode_image(pixels)


def text_forward():
    # open_clip's encode_text, cut after the last EOT (exact under the causal mask).
    with torch.no_grad():
        s = ids.shape[1]
        x = model.token_embedding(ids) + model.positional_embedding[:s]
        x = model.transformer(x, attn_mask=model.attn_mask[:s, :s])
        x = model.ln_final(x)
        x[torch.arange(2), ids.argmax(dim=-1)] @ model.text_projection


image_forward()
text_forward()
img = best_median(image_forward)
txt = best_median(text_forward)
print(f"model: {d}")
print(f"map the checkpoint ({weights.stat().st_size / 2**20:.0f} MiB, page cache warm): best {load[0]:.3f} s, median {load[1]:.3f} s")
print(f"map it and read every weight but the token embedding: best {touch[0]:.3f} s, median {touch[1]:.3f} s")
print(f"image + reference forward (2 x {(size // cfg['vision_cfg']['patch_size']) ** 2 + 1} tokens): best {img[0]:.3f} s, median {img[1]:.3f} s")
print(f"caption + reference forward (2 x 16 tokens): best {txt[0]:.3f} s, median {txt[1]:.3f} s")
floor = touch[0] + img[0] + txt[0]
print(f"sum of bests: {floor:.3f} s")
for exclip_s in (52.0, 101.0):  # exclip measured here (explain_bench.py), and the figure
    print(f"300x over an exclip run of {exclip_s:.0f} s allows {exclip_s / 300:.3f} s")

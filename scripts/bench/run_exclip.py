#!/usr/bin/env python
"""One exclip explanation on an open_clip checkpoint directory (used by explain_bench.py).

  run_exclip.py DIR IMAGE CAPTION TEXT_LAYER IMAGE_LAYER N OUT.safetensors
Prints a JSON line with the explain() wall time; writes exclip's matrix to OUT.
"""
import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path = [p for p in sys.path if Path(p or ".").resolve() != HERE]

import torch

torch.set_num_threads(2)
import open_clip
from exclip.explanation import OpenClipExplainer
from open_clip.model import CLIP
from open_clip.transform import PreprocessCfg, image_transform_v2
from PIL import Image
from safetensors.torch import load_file, save_file

d, image, caption, tl, il, n, out = sys.argv[1:8]
t0 = time.time()
cfg = json.loads((Path(d) / "open_clip_config.json").read_text())
model = CLIP(**cfg["model_cfg"]).eval()
model.load_state_dict(load_file(str(Path(d) / "open_clip_model.safetensors")))
for p in model.parameters():
    p.requires_grad_(True)
ctx = cfg["model_cfg"]["text_cfg"].get("context_length", 77)
size = cfg["model_cfg"]["vision_cfg"]["image_size"]
ids = open_clip.tokenize([caption], context_length=ctx)
pp = PreprocessCfg(**cfg["preprocess_cfg"])
px = image_transform_v2(pp, is_train=False)(Image.open(image)).unsqueeze(0)
explainer = OpenClipExplainer(model, image_dim=size, text_seq_len=ctx, device=torch.device("cpu"))
t1 = time.time()
A, score, *_ = explainer.explain(ids, px, text_layer=int(tl), image_layer=int(il), N=int(n), compute_lhs_terms=True)
t2 = time.time()
save_file({"interactions": A.contiguous()}, out)
print(json.dumps({"load_s": t1 - t0, "explain_s": t2 - t1, "score": score, "tokens": int(ids.argmax()) + 1}))

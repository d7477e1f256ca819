#!/usr/bin/env python
"""Full-size (ViT-B/32) random-weight checkpoints in both directory formats, for the manual check
run by scripts/fullsize_check.sh. Everything goes to $OUT (default /tmp/pairlens-fullsize), never
into the repository.

  <OUT>/image.png                      a 320x240 test image
  <OUT>/hf/                            transformers CLIPModel(CLIPConfig()) = ViT-B/32 geometry,
                                       tokenizer.json = pairlens' bundled CLIP BPE tokenizer
  <OUT>/open_clip/                     open_clip CLIP(**get_model_config('ViT-B-32'))
  <OUT>/{hf,open_clip}.expected.json   image/text embeddings and cosine score from PyTorch, run through
                                       each library's own tokenizer and image preprocessing
"""

import gzip
import importlib.util
import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors.torch import save_file

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path = [p for p in sys.path if Path(p or ".").resolve() not in (HERE, HERE / "fixtures")]
OUT = Path(os.environ.get("OUT", "/tmp/pairlens-fullsize"))
CAPTION = "a photo of two dogs playing in the snow"

spec = importlib.util.spec_from_file_location("fixture_models", HERE / "fixtures" / "models.py")
fixture_models = importlib.util.module_from_spec(spec)
spec.loader.exec_module(fixture_models)
randomize = fixture_models.randomize

torch.set_grad_enabled(False)


def image():
    rng = np.random.default_rng(11)
    h, w = 240, 320
    y, x = np.mgrid[0:h, 0:w]
    img = np.stack([x * 255 / w, y * 255 / h, 128 + 100 * np.sin(x / 17.0) * np.cos(y / 11.0)], -1)
    img += rng.normal(0, 12, img.shape)
    p = OUT / "image.png"
    Image.fromarray(np.clip(img, 0, 255).astype(np.uint8), "RGB").save(p)
    return p


def write_expected(name, img_emb, txt_emb, ids):
    score = torch.nn.functional.cosine_similarity(img_emb, txt_emb).item()
    (OUT / f"{name}.expected.json").write_text(json.dumps({
        "caption": CAPTION, "image_embedding": img_emb[0].tolist(), "text_embedding": txt_emb[0].tolist(),
        "score": score, "ids": ids,
    }) + "\n")


def hf(img_path):
    from transformers import CLIPConfig, CLIPModel, CLIPTokenizerFast
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    d = OUT / "hf"
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir(parents=True)
    with gzip.open(REPO / "crates/pairlens/assets/clip_bpe_tokenizer.json.gz", "rb") as f:
        (d / "tokenizer.json").write_bytes(f.read())
    model = CLIPModel(CLIPConfig()).eval()  # defaults = openai/clip-vit-base-patch32 geometry
    randomize(model, seed=101)
    model.save_pretrained(d, safe_serialization=True)
    proc = CLIPImageProcessorPil(size={"shortest_edge": 224}, crop_size={"height": 224, "width": 224})
    proc.save_pretrained(d)
    tok = CLIPTokenizerFast(tokenizer_file=str(d / "tokenizer.json"))
    ids = tok([CAPTION], padding="max_length", max_length=77, return_tensors="pt")["input_ids"]
    px = proc(images=Image.open(img_path), return_tensors="pt")["pixel_values"]
    t = model.get_text_features(input_ids=ids).pooler_output
    i = model.get_image_features(pixel_values=px).pooler_output
    write_expected("hf", i, t, ids[0].tolist())


def open_clip_dir(img_path):
    import open_clip
    from open_clip.model import CLIP
    from open_clip.transform import PreprocessCfg, image_transform_v2

    d = OUT / "open_clip"
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir(parents=True)
    model_cfg = open_clip.get_model_config("ViT-B-32")
    model = CLIP(**model_cfg).eval()
    randomize(model, seed=102, token_std=0.02)
    pp = {"size": 224, "mode": "RGB", "mean": list(open_clip.OPENAI_DATASET_MEAN),
          "std": list(open_clip.OPENAI_DATASET_STD), "interpolation": "bicubic", "resize_mode": "shortest",
          "fill_color": 0}
    (d / "open_clip_config.json").write_text(json.dumps({"model_cfg": model_cfg, "preprocess_cfg": pp}, indent=2))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(d / "open_clip_model.safetensors"))
    ids = open_clip.tokenize([CAPTION], context_length=model_cfg["text_cfg"].get("context_length", 77))
    px = image_transform_v2(PreprocessCfg(**pp), is_train=False)(Image.open(img_path)).unsqueeze(0)
    write_expected("open_clip", model.encode_image(px), model.encode_text(ids), ids[0].tolist())


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    img = image()
    hf(img)
    open_clip_dir(img)
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()

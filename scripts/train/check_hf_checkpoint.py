"""Check that a checkpoint written by pairlens (`pairlens train`, `save_hf`) loads in
transformers as a CLIPModel and embeds exactly like pairlens.

    python scripts/train/check_hf_checkpoint.py CKPT_DIR IMAGE "a caption" [PAIRLENS_BIN]

Loads CKPT_DIR with transformers.CLIPModel / CLIPImageProcessor / PreTrainedTokenizerFast,
embeds IMAGE and the caption, runs `pairlens embed --json` on the same inputs and prints the
largest absolute differences. Exit status 1 if they exceed 1e-4.
"""

import json
import subprocess
import sys

import numpy as np
import torch
from PIL import Image
from transformers import CLIPImageProcessor, CLIPModel, PreTrainedTokenizerFast


def features(out):
    # transformers 5 may return a model output instead of a tensor.
    if isinstance(out, torch.Tensor):
        return out
    return out.pooler_output


def main():
    ckpt, image, caption = sys.argv[1:4]
    binary = sys.argv[4] if len(sys.argv) > 4 else "target/release/pairlens"
    model = CLIPModel.from_pretrained(ckpt).eval()
    proc = CLIPImageProcessor.from_pretrained(ckpt)
    tok = PreTrainedTokenizerFast(tokenizer_file=f"{ckpt}/tokenizer.json")
    ids = torch.tensor([tok(caption)["input_ids"]])
    pixels = proc(images=Image.open(image), return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        text = features(model.get_text_features(input_ids=ids))[0].numpy()
        img = features(model.get_image_features(pixel_values=pixels))[0].numpy()
    out = subprocess.run(
        [binary, "embed", "--model", ckpt, "--image", image, "--caption", caption, "--json"],
        check=True, capture_output=True, text=True,
    ).stdout
    ours = json.loads(out)
    ids_ours = ours.get("ids")
    if ids_ours is not None:
        n = ids.shape[1]
        print("ids transformers", ids[0].tolist(), "pairlens", ids_ours[:n])
    dt = np.abs(np.array(ours["text_embedding" if "text_embedding" in ours else "text"]) - text).max()
    di = np.abs(np.array(ours["image_embedding" if "image_embedding" in ours else "image"]) - img).max()
    print(f"max |diff| text {dt:.3e}  image {di:.3e}  (|text| max {np.abs(text).max():.3f})")
    sys.exit(0 if max(dt, di) < 1e-4 else 1)


if __name__ == "__main__":
    main()

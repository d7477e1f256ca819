#!/usr/bin/env python3
"""Writes the generated seed inputs of fuzz/corpus/ (standard library only; deterministic).

    python3 fuzz/seeds/make_seeds.py

checkpoint: minimal but loadable checkpoint directories (one-layer towers of width 4, an 8x8
image of 2x2 patches, the 15-token word-level tokenizer of fixtures/tokenizers) in the input
format of fuzz/fuzz_targets/checkpoint.rs, a few KB each, plus broken variants.
image_decode, tokenize and api_request seeds are small hand-made files, written here too so that
the corpus can be regenerated in one go.
"""

import hashlib
import json
import math
import struct
import zlib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CORPUS = ROOT / "fuzz" / "corpus"
SEP = b"\0PART\0"

# Geometry of the seed model.
W = 4  # both towers' width (1 head)
MLP = 8
VOCAB = 15
CTX = 8
PATCH = 4
IMAGE = 8
SEQ = 1 + (IMAGE // PATCH) ** 2
PROJ = 4


def values(n, seed):
    return [round(math.sin(seed * 7.1 + i * 1.3) * 0.5, 4) for i in range(n)]


def safetensors(tensors, dtype="F32"):
    """tensors: list of (name, shape); values are deterministic small floats."""
    header, data = {}, b""
    size = {"F32": 4, "F16": 2, "BF16": 2, "F64": 8}[dtype]
    for k, (name, shape) in enumerate(tensors):
        n = math.prod(shape)
        vals = values(n, k)
        if dtype == "F32":
            raw = struct.pack(f"<{n}f", *vals)
        elif dtype == "F64":
            raw = struct.pack(f"<{n}d", *vals)
        elif dtype == "F16":
            raw = struct.pack(f"<{n}e", *vals)
        else:  # BF16: the high half of the f32
            raw = b"".join(struct.pack("<f", v)[2:] for v in vals)
        assert len(raw) == n * size
        header[name] = {"dtype": dtype, "shape": list(shape),
                        "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + data


def block(prefix, hf):
    if hf:
        parts = [("layer_norm1", [W]), ("self_attn.q_proj", [W, W]), ("self_attn.k_proj", [W, W]),
                 ("self_attn.v_proj", [W, W]), ("self_attn.out_proj", [W, W]),
                 ("layer_norm2", [W]), ("mlp.fc1", [MLP, W]), ("mlp.fc2", [W, MLP])]
    else:
        parts = [("ln_1", [W]), ("attn.in_proj_", [3 * W, W]), ("attn.out_proj", [W, W]),
                 ("ln_2", [W]), ("mlp.c_fc", [MLP, W]), ("mlp.c_proj", [W, MLP])]
    out = []
    for name, shape in parts:
        # open_clip's packed projection is `attn.in_proj_weight`, everything else `x.weight`.
        sep = "" if name.endswith("_") else "."
        out += [(f"{prefix}{name}{sep}weight", shape), (f"{prefix}{name}{sep}bias", shape[:1])]
    return out


def hf_tensors():
    t = [("text_model.embeddings.token_embedding.weight", [VOCAB, W]),
         ("text_model.embeddings.position_embedding.weight", [CTX, W])]
    t += block("text_model.encoder.layers.0.", True)
    t += [("text_model.final_layer_norm.weight", [W]), ("text_model.final_layer_norm.bias", [W]),
          ("text_projection.weight", [PROJ, W]),
          ("vision_model.embeddings.patch_embedding.weight", [W, 3, PATCH, PATCH]),
          ("vision_model.embeddings.class_embedding", [W]),
          ("vision_model.embeddings.position_embedding.weight", [SEQ, W]),
          ("vision_model.pre_layrnorm.weight", [W]), ("vision_model.pre_layrnorm.bias", [W])]
    t += block("vision_model.encoder.layers.0.", True)
    t += [("vision_model.post_layernorm.weight", [W]), ("vision_model.post_layernorm.bias", [W]),
          ("visual_projection.weight", [PROJ, W]), ("logit_scale", [])]
    return t


def open_clip_tensors():
    t = [("token_embedding.weight", [VOCAB, W]), ("positional_embedding", [CTX, W])]
    t += block("transformer.resblocks.0.", False)
    t += [("ln_final.weight", [W]), ("ln_final.bias", [W]), ("text_projection", [W, PROJ]),
          ("visual.conv1.weight", [W, 3, PATCH, PATCH]), ("visual.class_embedding", [W]),
          ("visual.positional_embedding", [SEQ, W]),
          ("visual.ln_pre.weight", [W]), ("visual.ln_pre.bias", [W])]
    t += block("visual.transformer.resblocks.0.", False)
    t += [("visual.ln_post.weight", [W]), ("visual.ln_post.bias", [W]),
          ("visual.proj", [W, PROJ]), ("logit_scale", [])]
    return t


def hf_config(**text_extra):
    text = {"hidden_size": W, "intermediate_size": MLP, "num_hidden_layers": 1,
            "num_attention_heads": 1, "max_position_embeddings": CTX, "vocab_size": VOCAB,
            "eos_token_id": 3, "hidden_act": "quick_gelu", "layer_norm_eps": 1e-05}
    text.update(text_extra)
    vision = {"hidden_size": W, "intermediate_size": MLP, "num_hidden_layers": 1,
              "num_attention_heads": 1, "patch_size": PATCH, "image_size": IMAGE,
              "num_channels": 3, "hidden_act": "gelu"}
    return json.dumps({"model_type": "clip", "projection_dim": PROJ, "text_config": text,
                       "vision_config": vision}, indent=1).encode()


PREPROCESSOR = json.dumps({
    "crop_size": {"height": IMAGE, "width": IMAGE}, "do_center_crop": True,
    "do_convert_rgb": True, "do_normalize": True, "do_rescale": True, "do_resize": True,
    "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5], "resample": 3,
    "rescale_factor": 0.00392156862745098, "size": {"shortest_edge": IMAGE}}, indent=1).encode()


def open_clip_config(**pp):
    cfg = {"model_cfg": {
        "embed_dim": PROJ, "quick_gelu": True,
        "vision_cfg": {"image_size": IMAGE, "layers": 1, "width": W, "head_width": W,
                       "patch_size": PATCH, "mlp_ratio": 2.0},
        "text_cfg": {"context_length": CTX, "vocab_size": VOCAB, "width": W, "heads": 1,
                     "layers": 1, "mlp_ratio": 2.0, "hf_tokenizer_name": "tiny",
                     "tokenizer_kwargs": {"clean": "lower"}}},
        "preprocess_cfg": {"size": IMAGE, "mode": "RGB", "mean": [0.5, 0.5, 0.5],
                           "std": [0.5, 0.5, 0.5], "interpolation": "bicubic",
                           "resize_mode": "shortest", "fill_color": 0}}
    cfg["preprocess_cfg"].update(pp)
    return json.dumps(cfg, indent=1).encode()


def checkpoint_input(flags, parts):
    return bytes([flags]) + SEP.join(parts)


def write(target, name, data):
    d = CORPUS / target
    d.mkdir(parents=True, exist_ok=True)
    (d / name).write_bytes(data)


def checkpoints():
    tok = (ROOT / "fixtures/tokenizers/tiny_wordlevel_tokenizer.json").read_bytes()
    hf_st = safetensors(hf_tensors())
    oc_st = safetensors(open_clip_tensors())
    specials = json.dumps({"pad_token": {"content": "[PAD]"}}).encode()
    index = json.dumps({"metadata": {"total_size": len(hf_st)},
                        "weight_map": {n: "model-00001.safetensors" for n, _ in hf_tensors()}}
                       ).encode()
    seeds = {
        # Loadable: HF single file (f32, f16, bf16), HF sharded, HF without preprocessor
        # config but with a side file naming the pad token, open_clip (two preprocessings).
        "hf_f32": checkpoint_input(0, [hf_config(), hf_st, tok, PREPROCESSOR]),
        "hf_f16": checkpoint_input(0x30, [hf_config(), safetensors(hf_tensors(), "F16"), tok,
                                          PREPROCESSOR]),
        "hf_bf16_no_preprocessor": checkpoint_input(0x50, [hf_config(), safetensors(hf_tensors(), "BF16"),
                                               tok]),
        "hf_sharded": checkpoint_input(2, [hf_config(), hf_st, tok, PREPROCESSOR, index]),
        "hf_side_pad": checkpoint_input(0xf4, [hf_config(), safetensors(hf_tensors(), "F64"),
                                               tok, b"", b"", specials]),
        "open_clip": checkpoint_input(1, [open_clip_config(), oc_st, tok]),
        "open_clip_squash": checkpoint_input(0x71, [
            open_clip_config(size=[IMAGE, IMAGE], resize_mode="squash",
                             interpolation="bilinear"), oc_st, tok, specials]),
        # Broken: legacy eos id, truncated weights, header only, wrong model type, no files.
        "hf_legacy_eos": checkpoint_input(0, [hf_config(eos_token_id=2), hf_st, tok]),
        "hf_truncated_weights": checkpoint_input(0, [hf_config(), hf_st[: len(hf_st) // 2], tok]),
        "hf_header_only": checkpoint_input(0, [hf_config(), hf_st[:8], tok]),
        "hf_not_clip": checkpoint_input(0, [b'{"model_type": "siglip"}', b"", tok]),
        "open_clip_no_tokenizer": checkpoint_input(1, [open_clip_config(), oc_st]),
        "empty_hf": b"\x00",
    }
    # Regressions (each panicked on overflow): a patch grid beyond usize, a token embedding of
    # more elements than usize holds.
    big_image = json.loads(hf_config())
    big_image["vision_config"]["image_size"] = 2**40
    big_vocab = json.loads(hf_config())
    big_vocab["text_config"].update(vocab_size=2**30, hidden_size=2**40)
    for name, cfg in [("regression-image-size-overflow", big_image),
                      ("regression-element-count-overflow", big_vocab)]:
        seeds[name] = checkpoint_input(0, [json.dumps(cfg).encode(), hf_st, tok])
    for name, data in seeds.items():
        write("checkpoint", name, data)
    return seeds


def png(width, height, color_type, bit_depth, rows, extra=b""):
    def chunk(kind, body):
        return (struct.pack(">I", len(body)) + kind + body
                + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF))
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    raw = b"".join(b"\0" + r for r in rows)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + extra
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def images():
    # Tiny PNGs in the modes the decoder expands itself: palette with tRNS, grey+alpha,
    # 1-bit, 16-bit RGBA, RGB with a tRNS colour key; a header claiming a huge image; junk.
    plte = b"".join(bytes([i * 60, 255 - i * 60, i * 30]) for i in range(4))

    def ch(kind, body):
        return (struct.pack(">I", len(body)) + kind + body
                + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF))
    seeds = {
        "palette_trns.png": png(5, 3, 3, 8, [bytes([0, 1, 2, 3, 1])] * 3,
                                ch(b"PLTE", plte) + ch(b"tRNS", b"\x00\x80")),
        "gray_alpha.png": png(3, 4, 4, 8, [bytes([10, 0, 200, 128, 255, 255])] * 4),
        "bilevel.png": png(9, 2, 0, 1, [b"\xa5\x80"] * 2),
        "rgba16.png": png(2, 2, 6, 16, [bytes(range(16))] * 2),
        "rgb_trns.png": png(2, 3, 2, 8, [bytes([1, 2, 3, 4, 5, 6])] * 3,
                            ch(b"tRNS", b"\x00\x01\x00\x02\x00\x03")),
        "huge_header.png": png(100000, 100000, 2, 8, [b""]),
        "tall_thin.png": png(1, 4000, 0, 8, [b"\x80"] * 4000),
        # Regression: a thin strip was resized to its short side first (this one, 500 bytes, to
        # 32 x 6 400 000 pixels; a 1 x 4 000 000 one ran out of memory).
        "regression-thin-strip.png": png(1, 200_000, 0, 8, [b"\x80"] * 200_000),
        "truncated.png": png(4, 4, 2, 8, [bytes(12)] * 4)[:40],
        "riff_not_webp": b"RIFF\x10\x00\x00\x00WEBPVP8 \x04\x00\x00\x00\x00\x00",
        "jpeg_soi_only.jpg": b"\xff\xd8\xff\xd9",
    }
    # The decoder fixtures (every mode the tests cover, a few hundred bytes to 2 KB each), two
    # example mosaics, and truncated or corrupted copies of a JPEG and both WebP kinds.
    fixtures = sorted(p for p in (ROOT / "fixtures/images").iterdir()
                      if p.suffix in (".png", ".jpg", ".webp"))
    for p in fixtures + sorted((ROOT / "examples/mosaics").glob("*.png"))[:2]:
        seeds[p.name] = p.read_bytes()
    jpg = (ROOT / "fixtures/images/photo422_31x22.jpg").read_bytes()
    seeds["photo422_truncated.jpg"] = jpg[: len(jpg) * 2 // 3]
    seeds["photo422_corrupt.jpg"] = jpg[:400] + bytes(b ^ 0x5A for b in jpg[400:420]) + jpg[420:]
    for name in ("lossy_26x18.webp", "lossless_24x30.webp"):
        w = (ROOT / "fixtures/images" / name).read_bytes()
        seeds[name.replace(".webp", "_truncated.webp")] = w[: len(w) // 2]
    for name, data in seeds.items():
        assert len(data) < 20_000, name
        write("image_decode", name, data)


def captions():
    seeds = {
        "plain": "a running shoe next to a boot",
        "html": "Salt &amp;amp; PEPPER &lt;b&gt; &#128; &#x110000; &notit; &AMP;",
        "ftfy": "\u201cCurly\u201d \ufb02uffy \uff2c\uff2f\uff35\uff24 \x1b[36mblue\x1b[0m \u0085 caf\u00e9",
        "long": " ".join(["pair of trousers"] * 40),
        "specials": "<|startoftext|> <start_of_text>x<end_of_text> \u0345 it's they'LL \u017ft",
        "lines": "line one &amp;\nline < two &amp;\r\n\u2028 third\u00a0line",
        "emoji": "\U0001f642 \u0301e\u0301 \u00df \u0130 \u03a3\u03a3 \U0001d400",
        "whitespace": " \t\u3000\x1c\x1d ",
    }
    for name, text in seeds.items():
        write("tokenize", name, text.encode())
    write("tokenize", "invalid_utf8", b"a \xff\xfe dog \xc3")


EXPLANATION = "b9e82978c33872c4"
# The token of fuzz_targets/api_request.rs's second server, and its cookie's name.
TOKEN = "0123456789abcdef0123456789abcdef"
COOKIE = "pairlens-token-" + hashlib.sha256(TOKEN.encode()).hexdigest()[:8]


def api():
    examples = sorted((ROOT / "examples" / "mosaics").glob("*.png"))
    # The server's image ids: 16 hex digits of SHA-256 over (length as u64 LE, bytes).
    def short_hash(*parts):
        h = hashlib.sha256()
        for p in parts:
            h.update(struct.pack("<Q", len(p)))
            h.update(p)
        return h.hexdigest()[:16]
    image = short_hash(examples[0].read_bytes())

    def req(line, headers, body=b""):
        head = "\n".join([line] + [f"{k}: {v}" for k, v in headers])
        return head.encode() + b"\n\n" + body

    js = [("content-type", "application/json"), ("host", "localhost:7878")]
    seeds = {
        "info": req("GET /api/info", [("host", "127.0.0.1:7878")]),
        "index": req("GET /", []),
        "explain": req("POST /api/explain", js, json.dumps(
            {"image": image, "captions": ["a bag"], "text_layer": 3, "image_layer": 3,
             "steps": 1}).encode()),
        "explain_bad_mode": req("POST /api/explain", js, json.dumps(
            {"image": image, "captions": ["a bag", " "], "mode": "nope"}).encode()),
        "explain_unknown_field": req("POST /api/explain", js,
                                     b'{"image": "x", "captions": ["a"], "extra": 1}'),
        # The explanation fuzz_targets/api_request.rs computes when it starts (example 0,
        # "a bag", layers 3/3, N = 1), and an unknown one.
        "span": req("POST /api/span", js, f'{{"explanation": "{EXPLANATION}", "start": 1, "end": 3}}'.encode()),
        "span_reversed": req("POST /api/span", js, f'{{"explanation": "{EXPLANATION}", "start": 3, "end": 1}}'.encode()),
        "box": req("POST /api/box", js, f'{{"explanation": "{EXPLANATION}", "box": [3.5, 0, 60, 31]}}'.encode()),
        "box_odd": req("POST /api/box", js,
                       b'{"explanation": "0123456789abcdef", "box": [0, 0, 1e39, -5]}'),
        "upload_png": req("POST /api/images", [("content-type", "image/png")],
                          (CORPUS / "image_decode" / "palette_trns.png").read_bytes()),
        "upload_octets": req("POST /api/images", [("content-type", "application/octet-stream")],
                             b"\xff\xd8\xff\xd9"),
        "get_image": req(f"GET /api/images/{image}", []),
        "wrong_host": req("POST /api/explain",
                          [("content-type", "application/json; charset=utf-8"),
                           ("host", "evil.example")], b"{}"),
        "form_post": req("POST /api/span",
                         [("content-type", "application/x-www-form-urlencoded")], b"a=b"),
        "method": req("DELETE /api/explain", []),
        "empty_body": req("POST /api/explain", js, b"   "),
        "ipv6_host": req("GET /api/info", [("host", "[::1]:7878")]),
        # Regression: an image id that is not UTF-8 once percent-decoded got axum's own
        # plain-text 400, not JSON.
        "regression-path-not-utf8": req("GET /api/images/%ff", []),
        # The server with a token: shown as a bearer token, a query parameter, the cookie; not
        # shown; a wrong one.
        "token_bearer": b"@token\n" + req("POST /api/span", js + [
            ("authorization", f"Bearer {TOKEN}")],
            f'{{"explanation": "{EXPLANATION}", "start": 0, "end": 4}}'.encode()),
        "token_query": b"@token\n" + req(f"GET /api/info?x=1&token={TOKEN}", []),
        "token_cookie": b"@token\n" + req(f"GET /api/images/{image}", [
            ("cookie", f"a=b; {COOKIE}={TOKEN}")]),
        "token_missing": b"@token\n" + req("GET /api/info", [("host", "localhost")]),
        "token_wrong": b"@token\n" + req("GET /", [("authorization", "Bearer " + "0" * 32)]),
    }
    for name, data in seeds.items():
        write("api_request", name, data)


if __name__ == "__main__":
    checkpoints()
    images()
    captions()
    api()

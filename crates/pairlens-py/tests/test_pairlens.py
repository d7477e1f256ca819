"""The Python package against the CLI: the same inputs give the same numbers, bit for bit.

Needs numpy and pytest (Pillow for the PIL tests) and the CLI binary: $PAIRLENS_BIN, else
target/release/pairlens of this checkout (`cargo build --release -p pairlens-cli`).
"""

import json
import os
import struct
import subprocess
import threading
from pathlib import Path

import numpy as np
import pytest

import pairlens

ROOT = Path(__file__).resolve().parents[3]
MOSAIC = ROOT / "examples" / "mosaics" / "00000.png"
CAPTION = "a running shoe next to a boot and a pair of trousers beside a blouse"
OTHER = "a bag"
LAYERS = dict(text_layer=1, image_layer=1, steps=10)
BOX = (0.0, 8.0, 31.0, 25.0)


def cli_binary():
    path = Path(os.environ.get("PAIRLENS_BIN", ROOT / "target" / "release" / "pairlens"))
    if not path.is_file():
        pytest.fail(f"{path}: no pairlens binary; cargo build --release -p pairlens-cli")
    return path


def cli(*args, check=True):
    """Runs the CLI; returns the completed process."""
    p = subprocess.run(
        [str(cli_binary()), *map(str, args)], capture_output=True, text=True, timeout=300
    )
    if check and p.returncode != 0:
        pytest.fail(f"pairlens {' '.join(map(str, args))} failed: {p.stderr}")
    return p


def cli_error(*args):
    """The message the CLI prints after `error: ` for a command that fails."""
    p = cli(*args, check=False)
    assert p.returncode == 1, p.stderr
    lines = [line for line in p.stderr.splitlines() if line.startswith("error: ")]
    assert lines, p.stderr
    return lines[-1][len("error: ") :]


def read_safetensors(path):
    """(tensors, metadata) of a safetensors file, parsed by hand (f32 only)."""
    data = Path(path).read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    metadata = header.pop("__metadata__", {})
    body = data[8 + n :]
    tensors = {}
    for name, info in header.items():
        assert info["dtype"] == "F32"
        start, end = info["data_offsets"]
        tensors[name] = np.frombuffer(body[start:end], dtype="<f4").reshape(info["shape"])
    return tensors, metadata


def cli_explain(tmp_path, image, captions, extra=(), layers=LAYERS):
    """The CLI's --out tensors and --json output for an image and captions."""
    out = tmp_path / f"cli-{len(list(tmp_path.iterdir()))}.safetensors"
    args = ["explain", "--image", image, "--out", out, "--json"]
    for c in captions:
        args += ["--caption", c]
    args += [
        "--text-layer",
        layers["text_layer"],
        "--image-layer",
        layers["image_layer"],
        "--steps",
        layers["steps"],
        *extra,
    ]
    p = cli(*args)
    tensors, metadata = read_safetensors(out)
    return tensors, metadata, json.loads(p.stdout)


def assert_same_bits(a, b):
    a, b = np.asarray(a, dtype=np.float32), np.asarray(b, dtype=np.float32)
    assert a.shape == b.shape
    assert np.array_equal(a.view(np.uint32), b.view(np.uint32)), np.abs(a - b).max()


def assert_matches_cli(e, tensors, prefix=""):
    """An Explanation equals the CLI's --out tensors bit for bit."""
    assert e.interactions.dtype == np.float32
    assert_same_bits(e.interactions, tensors[prefix + "interactions"])
    assert_same_bits([e.score], tensors[prefix + "score"])
    assert_same_bits([e.residual], tensors[prefix + "residual"])
    for name, value in e.reference_terms.items():
        assert_same_bits([value], tensors[f"{prefix}reference_terms/{name}"])
    for name, value in e.exclip_terms.items():
        assert_same_bits([value], tensors[f"{prefix}exclip_terms/{name}"])


@pytest.fixture(scope="module")
def ex():
    return pairlens.Explainer()


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The CLI on the mosaic, layers 1/1, one caption, with a span and a box."""
    tmp = tmp_path_factory.mktemp("cli")
    return cli_explain(tmp, MOSAIC, [CAPTION], extra=["--span", "2:4", "--box", "0,8,31,25"])


def test_path_input_equals_cli_out(ex, reference):
    tensors, _, out = reference
    for image in (str(MOSAIC), MOSAIC):  # str and os.PathLike
        (e,) = ex.explain(image, [CAPTION], **LAYERS)
        assert_matches_cli(e, tensors)
        assert e.tokens == out["captions"][0]["tokens"]
        assert (e.text_layer, e.image_layer, e.steps, e.mode) == (1, 1, 10, "exclip")
        assert e.interactions.shape == (len(e.tokens), 1 + e.grid[0] * e.grid[1])


def test_pil_input_equals_cli_out(ex, reference):
    Image = pytest.importorskip("PIL.Image")
    tensors, _, _ = reference
    with Image.open(MOSAIC) as img:
        (e,) = ex.explain(img, [CAPTION], **LAYERS)
    assert_matches_cli(e, tensors)


def test_numpy_input_equals_cli_out(ex, reference):
    Image = pytest.importorskip("PIL.Image")
    tensors, _, _ = reference
    with Image.open(MOSAIC) as img:
        grey = np.asarray(img)
    assert grey.dtype == np.uint8 and grey.ndim == 2
    for array in (grey, grey[:, :, None], np.asfortranarray(grey)):
        (e,) = ex.explain(array, [CAPTION], **LAYERS)
        assert_matches_cli(e, tensors)


def test_rgb_resized_inputs_equal_cli_out(ex, tmp_path):
    """An RGB image the preprocessing resizes and crops: file, PIL and numpy agree with the
    CLI, boxes included (mapped through resize and crop)."""
    Image = pytest.importorskip("PIL.Image")
    rng = np.random.default_rng(7)
    rgb = rng.integers(0, 256, size=(70, 90, 3), dtype=np.uint8)
    path = tmp_path / "noise.png"
    Image.fromarray(rgb).save(path)
    layers = dict(text_layer=2, image_layer=2, steps=4)
    tensors, _, out = cli_explain(
        tmp_path, path, [OTHER], extra=["--box", "10,5,60,50"], layers=layers
    )
    assert out["preprocessing"]["cropped"]
    for image in (path, Image.open(path), rgb, np.ascontiguousarray(rgb[:, :, ::-1][:, :, ::-1])):
        (e,) = ex.explain(image, [OTHER], **layers)
        assert_matches_cli(e, tensors)
        assert_same_bits(e.box((10, 5, 60, 50)), out["captions"][0]["boxes"][0]["token_scores"])
    rgba = np.concatenate([rgb, np.full((70, 90, 1), 255, np.uint8)], axis=2)
    (e,) = ex.explain(rgba, [OTHER], **layers)
    assert_matches_cli(e, tensors)


@pytest.mark.parametrize("mode", ["1", "L", "LA", "P", "P-trns", "L-trns", "RGB-trns", "RGBA"])
def test_pil_modes_equal_cli_out(ex, tmp_path, mode):
    """A PIL image of each mode Pillow opens PNGs as equals the CLI on the saved file (Pillow's
    mode decides the resampling and the compositing of alpha onto white)."""
    Image = pytest.importorskip("PIL.Image")
    rng = np.random.default_rng(3)
    rgba = rng.integers(0, 256, size=(70, 90, 4), dtype=np.uint8)
    base = Image.fromarray(rgba, "RGBA")
    kind, _, trns = mode.partition("-")
    if kind == "P":
        img = base.convert("RGB").convert("P", palette=Image.Palette.ADAPTIVE, colors=64)
    else:
        img = base.convert(kind)
    path = tmp_path / f"img-{kind}.png"
    extra = {}
    if trns:
        extra["transparency"] = 0 if kind in ("P", "L") else (0, 0, 0)
    img.save(path, **extra)
    layers = dict(text_layer=3, image_layer=3, steps=10)
    tensors, _, _ = cli_explain(tmp_path, path, [OTHER], layers=layers)
    with Image.open(path) as opened:
        if trns:
            assert "transparency" in opened.info
        (e,) = ex.explain(opened, [OTHER], **layers)
    assert_matches_cli(e, tensors)


def test_span_and_box_equal_cli_json(ex, reference):
    _, _, out = reference
    c = out["captions"][0]
    (e,) = ex.explain(MOSAIC, [CAPTION], **LAYERS)
    span = e.span(2, 4)
    assert span.shape == e.grid
    assert_same_bits(span, c["spans"][0]["heatmap"])
    assert_same_bits([e.span_cls(2, 4)], [c["spans"][0]["cls"]])
    assert_same_bits(e.box(BOX), c["boxes"][0]["token_scores"])
    assert_same_bits(e.token_totals(), c["token_totals"])
    assert_same_bits(e.span(0, len(e.tokens)), c["heatmap"])
    assert e.box(BOX).shape == (len(e.tokens),)


def test_conservation(ex):
    (e,) = ex.explain(MOSAIC, [CAPTION])
    r = e.reference_terms
    total = (
        e.total
        + r["text_vs_image_reference"]
        + r["text_reference_vs_image"]
        - r["reference_vs_reference"]
        + e.residual
    )
    assert abs(total - e.score) < 1e-5
    assert abs(float(e.interactions.sum(dtype=np.float64)) - e.total) < 1e-4


def test_save_equals_cli_out(ex, tmp_path):
    captions = [CAPTION, OTHER]
    tensors, metadata, _ = cli_explain(tmp_path, str(MOSAIC), captions)
    es = ex.explain(str(MOSAIC), captions, **LAYERS)
    for k, e in enumerate(es, start=1):
        assert_matches_cli(e, tensors, prefix=f"caption{k}/")
    path = tmp_path / "py.safetensors"
    pairlens.save(es, path)
    mine, my_metadata = read_safetensors(path)
    assert mine.keys() == tensors.keys()
    for name in tensors:
        assert_same_bits(mine[name], tensors[name])
    assert my_metadata == metadata
    # One explanation: no prefix, as the CLI with one caption.
    one = tmp_path / "one.safetensors"
    es[0].save(one)
    mine, _ = read_safetensors(one)
    assert "interactions" in mine and "score" in mine
    assert_same_bits(mine["interactions"], tensors["caption1/interactions"])
    with pytest.raises(FileExistsError, match="already exists"):
        es[0].save(one)
    es[1].save(one, overwrite=True)
    assert_same_bits(read_safetensors(one)[0]["interactions"], tensors["caption2/interactions"])


def test_to_html(ex, tmp_path):
    Image = pytest.importorskip("PIL.Image")
    (e,) = ex.explain(MOSAIC, [CAPTION], **LAYERS)
    path = tmp_path / "report.html"
    e.to_html(path, spans=[(2, 4)], boxes=[BOX])
    html = path.read_text(encoding="utf-8")
    assert html.startswith("<!DOCTYPE html>") and "running shoe" in html
    assert "http://" not in html and "https://" not in html
    with pytest.raises(FileExistsError):
        e.to_html(path)
    with Image.open(MOSAIC) as img:
        (from_pil,) = ex.explain(img, [CAPTION])
    from_pil.to_html(path, overwrite=True)
    assert "in-memory image" in path.read_text(encoding="utf-8")
    with pytest.raises(ValueError, match="out of range"):
        e.to_html(tmp_path / "bad.html", spans=[(0, 99)])


def test_progress_callback(ex, reference):
    tensors, _, _ = reference
    calls = []
    (e,) = ex.explain(MOSAIC, [CAPTION], **LAYERS, progress=lambda *a: calls.append(a))
    assert_matches_cli(e, tensors)
    assert calls, "no progress reported at layers 1/1"
    labels = {label for label, _, _ in calls}
    for label in labels:
        mine = [(d, t) for name, d, t in calls if name == label]
        assert mine[0][0] == 0 and mine[-1][0] == mine[-1][1] > 0, (label, mine)
    side_calls = []
    ex.image(MOSAIC, image_layer=1, progress=lambda *a: side_calls.append(a))
    assert side_calls

    class Stop(Exception):
        pass

    def stop(label, done, total):
        if done > 0:
            raise Stop(f"stopped at {done}/{total}")

    with pytest.raises(Stop, match="stopped at"):
        ex.explain(MOSAIC, [CAPTION], **LAYERS, progress=stop)
    with pytest.raises(Stop):
        ex.image(MOSAIC, image_layer=1, progress=stop)
    # The explainer is fine afterwards.
    (again,) = ex.explain(MOSAIC, [CAPTION], **LAYERS)
    assert_same_bits(again.interactions, e.interactions)


def test_image_side_reuse_equals_fresh(ex):
    side = ex.image(MOSAIC, image_layer=1, steps=10)
    assert (side.image_layer, side.steps, side.mode) == (1, 10, "exclip")
    fresh = ex.explain(MOSAIC, [CAPTION, OTHER], **LAYERS)
    reused = ex.explain(side, [CAPTION, OTHER], text_layer=1)
    for a, b in zip(fresh, reused):
        assert_same_bits(a.interactions, b.interactions)
        assert_same_bits([a.score, a.residual], [b.score, b.residual])
        assert_same_bits(a.box(BOX), b.box(BOX))
    # Another text layer against the same image side.
    (other,) = ex.explain(side, [OTHER], text_layer=0)
    (fresh_other,) = ex.explain(MOSAIC, [OTHER], text_layer=0, image_layer=1, steps=10)
    assert_same_bits(other.interactions, fresh_other.interactions)
    with pytest.raises(ValueError, match="image layer 1"):
        ex.explain(side, [OTHER], image_layer=2)


def test_two_threads_give_the_same_numbers(ex):
    expected = ex.explain(MOSAIC, [CAPTION], **LAYERS)[0].interactions
    results, errors = {}, []

    def work(k):
        try:
            for _ in range(2):
                results.setdefault(k, []).append(
                    ex.explain(MOSAIC, [CAPTION], **LAYERS)[0].interactions
                )
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert len(results) == 2
    for runs in results.values():
        for got in runs:
            assert_same_bits(got, expected)


def test_embed_equals_cli(ex):
    out = json.loads(cli("embed", "--image", MOSAIC, "--caption", CAPTION, "--json").stdout)
    image, text = ex.embed(MOSAIC, CAPTION)
    assert image.dtype == np.float32 and text.dtype == np.float32
    assert_same_bits(image, out["image_embedding"])
    assert_same_bits(text, out["text_embedding"])
    assert ex.tokenize(CAPTION) == out["tokens"]


def test_explainer_basics(ex):
    assert ex.model == "built-in"
    assert ex.layers == (4, 4)
    assert "Explainer" in repr(ex)
    (e,) = ex.explain(MOSAIC, [CAPTION])
    assert (e.text_layer, e.image_layer) == (3, 3)
    assert "score=" in repr(e)
    assert e.caption == CAPTION
    assert ex.unknown_words("a zxqv bag") == ["zxqv"]
    assert issubclass(pairlens.InputError, pairlens.Error)
    assert issubclass(pairlens.InputError, ValueError)
    assert issubclass(pairlens.MissingFileError, FileNotFoundError)


# Error paths: the right exception type, with the message the CLI prints.


def test_missing_image_raises_file_not_found(ex, tmp_path):
    missing = tmp_path / "nope.png"
    with pytest.raises(FileNotFoundError) as info:
        ex.explain(missing, [CAPTION])
    assert isinstance(info.value, pairlens.Error)
    assert str(info.value) == cli_error("explain", "--image", missing, "--caption", CAPTION)


def test_bad_layer_raises_value_error(ex):
    with pytest.raises(ValueError) as info:
        ex.explain(MOSAIC, [CAPTION], text_layer=9)
    assert isinstance(info.value, pairlens.InputError)
    assert str(info.value) == cli_error(
        "explain", "--image", MOSAIC, "--caption", CAPTION, "--text-layer", "9"
    )
    with pytest.raises(ValueError, match="image_layer -1"):
        ex.explain(MOSAIC, [CAPTION], image_layer=-1)
    with pytest.raises(ValueError):
        ex.image(MOSAIC, image_layer=4)
    with pytest.raises(ValueError) as info:
        ex.explain(MOSAIC, [CAPTION], steps=0)
    assert str(info.value) == cli_error(
        "explain", "--image", MOSAIC, "--caption", CAPTION, "--steps", "0"
    )
    with pytest.raises(ValueError, match="unknown mode"):
        ex.explain(MOSAIC, [CAPTION], mode="sine")


def test_bad_captions_raise(ex):
    with pytest.raises(ValueError, match="empty"):
        ex.explain(MOSAIC, [""])
    with pytest.raises(ValueError, match="empty"):
        ex.explain(MOSAIC, [CAPTION, "   "])
    with pytest.raises(ValueError, match="at least one"):
        ex.explain(MOSAIC, [])
    with pytest.raises(TypeError, match="single string"):
        ex.explain(MOSAIC, CAPTION)
    with pytest.raises(ValueError, match="empty"):
        ex.embed(MOSAIC, "")
    long = " ".join(["bag"] * 200)
    with pytest.raises(ValueError, match="truncate=True"):
        ex.explain(MOSAIC, [long])
    (e,) = ex.explain(MOSAIC, [long], truncate=True)
    assert len(e.tokens) > 2


def test_not_an_image_raises(ex, tmp_path):
    bad = tmp_path / "notes.png"
    bad.write_text("not an image")
    with pytest.raises(pairlens.Error) as info:
        ex.explain(bad, [CAPTION])
    assert isinstance(info.value, ValueError)
    assert str(info.value) == cli_error("explain", "--image", bad, "--caption", CAPTION)
    with pytest.raises(pairlens.Error, match="is a directory"):
        ex.explain(tmp_path, [CAPTION])


def test_16_bit_images_raise(ex, tmp_path):
    Image = pytest.importorskip("PIL.Image")
    img = Image.fromarray(np.arange(64 * 64, dtype=np.uint16).reshape(64, 64) * 16)
    path = tmp_path / "deep.png"
    img.save(path)
    assert "16-bit" in cli_error("explain", "--image", path, "--caption", OTHER)
    with pytest.raises(ValueError, match="16-bit"):
        ex.explain(path, [OTHER])
    with Image.open(path) as opened:
        with pytest.raises(ValueError, match="8-bit"):
            ex.explain(opened, [OTHER])


def test_bad_arrays_raise(ex):
    with pytest.raises(TypeError, match="uint8"):
        ex.explain(np.zeros((32, 32, 3), np.float32), [CAPTION])
    with pytest.raises(ValueError, match="shape"):
        ex.explain(np.zeros((32, 32, 5), np.uint8), [CAPTION])
    with pytest.raises(ValueError, match="shape"):
        ex.explain(np.zeros((32,), np.uint8), [CAPTION])
    with pytest.raises(ValueError):
        ex.explain(np.zeros((0, 32, 3), np.uint8), [CAPTION])
    with pytest.raises(TypeError, match="expected a path"):
        ex.explain(42, [CAPTION])


def test_missing_model_dir_raises(tmp_path):
    missing = tmp_path / "no-model"
    with pytest.raises(FileNotFoundError) as info:
        pairlens.Explainer(missing)
    assert isinstance(info.value, pairlens.Error)
    assert str(info.value) == cli_error(
        "explain", "--model", missing, "--image", MOSAIC, "--caption", CAPTION
    )
    empty = tmp_path / "empty-model"
    empty.mkdir()
    with pytest.raises(pairlens.ModelError) as info:
        pairlens.Explainer(empty)
    assert str(info.value) == cli_error(
        "explain", "--model", empty, "--image", MOSAIC, "--caption", CAPTION
    )
    with pytest.raises(ValueError, match="device"):
        pairlens.Explainer(device="tpu")


def test_bad_span_and_box_raise(ex):
    (e,) = ex.explain(MOSAIC, [CAPTION])
    n = len(e.tokens)
    for start, end in [(3, 3), (0, n + 1), (-1, 2)]:
        with pytest.raises(ValueError, match="out of range"):
            e.span(start, end)
    with pytest.raises(ValueError, match="empty"):
        e.box((10, 10, 5, 20))
    with pytest.raises(ValueError, match="outside"):
        e.box((100, 100, 200, 200))
    with pytest.raises(ValueError, match="finite"):
        e.box((0, 0, float("nan"), 10))


def test_readme_example(capsys):
    """The README's Python example, exactly as written there, run from the checkout's root."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("### From Python") :]
    start = section.index("```python\n") + len("```python\n")
    code = section[start : section.index("```", start)]
    assert code.count("\n") == 3, code
    cwd = os.getcwd()
    os.chdir(ROOT)
    try:
        exec(compile(code, "README.md", "exec"), {})
    finally:
        os.chdir(cwd)
    printed = capsys.readouterr().out
    assert "['running', 'shoe']" in printed, printed


def test_siglip_equals_cli():
    """A SigLIP checkpoint: every text position is a row, no CLS column, same numbers as the
    CLI's JSON (its default layers: the last text block, the image tower's pooling head)."""
    model = ROOT / "fixtures" / "models" / "siglip-a"
    image = ROOT / "fixtures" / "siglip" / "gradient_45x30.png"
    sig = pairlens.Explainer(model)
    (e,) = sig.explain(image, ["a cat"])
    out = json.loads(
        cli("explain", "--model", model, "--image", image, "--caption", "a cat",
            "--span", "0:2", "--json").stdout
    )
    c = out["captions"][0]
    assert not e.class_token
    assert e.interactions.shape == (16, 16)
    assert e.tokens == c["tokens"]
    assert_same_bits(e.span(0, 2), c["spans"][0]["heatmap"])
    assert e.span_cls(0, 2) is None and c["spans"][0]["cls"] is None
    assert_same_bits(e.token_totals(), c["token_totals"])


def test_quickstart_example(tmp_path):
    """examples/quickstart.py runs as its docstring says and writes what it announces."""
    import sys

    p = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "quickstart.py"), str(tmp_path)],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
    )
    assert p.returncode == 0, p.stderr
    assert "'a running shoe': strongest patch" in p.stdout, p.stdout
    assert "tokens strongest with the shoe's box" in p.stdout, p.stdout
    assert (tmp_path / "report.html").stat().st_size > 1000
    assert (tmp_path / "explanation.safetensors").is_file()

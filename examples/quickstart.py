"""pairlens from Python, on the built-in model: which words of a caption match which regions of
an image, and how faithful that account is.

    pip install ./crates/pairlens-py
    python examples/quickstart.py [OUT_DIR]      # from the checkout's root

It explains the first example mosaic against its caption and a wrong one, checks that the
interactions add up to the score, finds where the phrase "a running shoe" lands, scores the
tokens against the box the phrase's object occupies, and writes an HTML report and the
interactions (safetensors) into OUT_DIR (default: a new temporary directory).
"""

import json
import sys
import tempfile
from pathlib import Path

import numpy as np

import pairlens

ROOT = Path(__file__).resolve().parent
MOSAICS = ROOT / "mosaics"


def main() -> None:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp(prefix="pairlens-"))
    out.mkdir(parents=True, exist_ok=True)
    first = json.loads((MOSAICS / "data.jsonl").read_text().splitlines()[0])
    image = MOSAICS / first["image"]
    phrase = first["phrases"][0]  # "a running shoe": token span and box in pixels
    (start, end), box = phrase["span"], phrase["boxes"][0]

    ex = pairlens.Explainer()  # no argument: the built-in Fashion-MNIST model
    print(f"model: {ex.model}, blocks (text, image): {ex.layers}")

    # The image side is computed once and reused for every caption.
    side = ex.image(image)
    right, wrong = ex.explain(side, [first["caption"], "a bag and a pair of sandals"])

    for e in (right, wrong):
        r = e.reference_terms
        rebuilt = (
            e.total
            + r["text_vs_image_reference"]
            + r["text_reference_vs_image"]
            - r["reference_vs_reference"]
            + e.residual
        )
        print(f"{e.caption!r}: score {e.score:+.4f} = sum of A {e.total:+.4f} + reference "
              f"terms, residual {e.residual:+.2e} (rebuilt {rebuilt:+.4f})")

    # Where does "a running shoe" land? The heatmap over the patch grid and its strongest cell.
    words = right.tokens[start:end]
    heat = right.span(start, end)
    row, col = np.unravel_index(np.argmax(heat), heat.shape)
    print(f"{' '.join(words)!r}: strongest patch at row {row}, column {col} of {heat.shape}")

    # Which tokens interact most with the region the shoe occupies?
    scores = right.box(tuple(box))
    best = np.argsort(-scores)[:3]
    print("tokens strongest with the shoe's box:", [right.tokens[i] for i in best])

    right.to_html(out / "report.html", spans=[(start, end)], boxes=[tuple(box)], overwrite=True)
    right.save(out / "explanation.safetensors", overwrite=True)
    print(f"wrote {out / 'report.html'} and {out / 'explanation.safetensors'}")


if __name__ == "__main__":
    main()

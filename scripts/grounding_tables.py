#!/usr/bin/env python3
"""The grounding report's per-class tables from three `pairlens eval-grounding` runs
(standard library only).

  scripts/grounding_tables.py PAIRLENS_DIR IG_DIR SIMILARITY_DIR

Prints a markdown table (pointing game and box mass per class, best of the three in bold),
then the reverse hit and span share lines, read from each directory's summary.json.
"""
import json
import sys
from pathlib import Path

METHODS = ["pairlens", "ig", "similarity"]


def load(d):
    return json.loads((Path(d) / "summary.json").read_text())["summary"]


def value(entry, metric):
    m = entry.get(metric)
    if m is None:
        return None
    return m["rate"] if "rate" in m else m["mean"]


def cells(values):
    best = max(v for v in values if v is not None)
    return ["–" if v is None else (f"**{v:.3f}**" if v == best else f"{v:.3f}") for v in values]


def main():
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    runs = [load(d) for d in sys.argv[1:]]
    print("| class | n | " + " | ".join(f"pointing: {m}" for m in METHODS) + " | "
          + " | ".join(f"box mass: {m}" for m in METHODS) + " |")
    print("|---|---:|" + "---:|" * 6)
    rows = [(c, [r["per_class"][c] for r in runs]) for c in sorted(runs[0]["per_class"])]
    rows.append(("**all**", [r["overall"] for r in runs]))
    for name, entries in rows:
        n = entries[0]["pointing_game"]["n"]
        point = cells([value(e, "pointing_game") for e in entries])
        mass = cells([value(e, "box_mass") for e in entries])
        print(f"| {name} | {n} | " + " | ".join(point + mass) + " |")
    print()
    for name, r in zip(METHODS, runs):
        o = r["overall"]
        for metric in ["reverse_hit", "span_share"]:
            if o.get(metric) and value(o, metric) is not None:
                lo, hi = o[metric]["ci95"]
                print(f"{name} {metric}: {value(o, metric):.3f} [{lo:.3f}, {hi:.3f}]")


if __name__ == "__main__":
    main()

#!/usr/bin/env bash
# Full-size check, run by hand: random ViT-B/32 checkpoints in both formats (scripts/fullsize_check.py,
# written under $OUT, default /tmp/pairlens-fullsize), then the release `pairlens embed` on each under
# /usr/bin/time -v. Prints the max abs difference to PyTorch's embeddings, wall time and peak RSS.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-/work/venv/bin/python}
export OUT=${OUT:-/tmp/pairlens-fullsize}

if [[ "${SKIP_PY:-0}" != 1 ]]; then
    "$PY" scripts/fullsize_check.py
fi
cargo build --release -p pairlens-cli
BIN=target/release/pairlens

for fmt in hf open_clip; do
    /usr/bin/time -v "$BIN" embed --model "$OUT/$fmt" --image "$OUT/image.png" \
        --caption "$(jq -r .caption "$OUT/$fmt.expected.json" 2>/dev/null || "$PY" -c "import json;print(json.load(open('$OUT/$fmt.expected.json'))['caption'])")" \
        --json >"$OUT/$fmt.pairlens.json" 2>"$OUT/$fmt.time.txt" || { cat "$OUT/$fmt.time.txt"; exit 1; }
    "$PY" - "$OUT" "$fmt" <<'EOF'
import json, re, sys
out, fmt = sys.argv[1], sys.argv[2]
exp = json.load(open(f"{out}/{fmt}.expected.json"))
got = json.load(open(f"{out}/{fmt}.pairlens.json"))
d = lambda k: max(abs(a - b) for a, b in zip(exp[k], got[k]))
t = open(f"{out}/{fmt}.time.txt").read()
wall = re.search(r"Elapsed \(wall clock\) time.*: (.*)", t).group(1)
rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", t).group(1))
ids_ok = got["ids"] == exp["ids"][: len(got["ids"])]
print(f"{fmt:10s} max|dimg| {d('image_embedding'):.2e}  max|dtxt| {d('text_embedding'):.2e}  "
      f"|dscore| {abs(exp['score'] - got['score']):.2e}  ids {'same' if ids_ok else 'DIFFER'}  "
      f"wall {wall}  peak RSS {rss / 1024:.0f} MiB")
EOF
done
du -sh "$OUT"/hf/model.safetensors "$OUT"/open_clip/open_clip_model.safetensors

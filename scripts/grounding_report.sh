#!/usr/bin/env bash
# Numbers for the grounding report (issue 5), rerunnable when the built-in model changes:
#   1. `pairlens eval-grounding` with each method (pairlens, ig, similarity) on COUNT test
#      mosaics, default layers, N = 10  →  OUT/<method>/{results.csv,summary.json,per_class.png}
#      and OUT/<method>.txt (the printed table, with explanations/s);
#   2. the conservation residual vs N ∈ {1, 5, 10, 25, 50} in both modes on the first RCOUNT
#      mosaics (`pairlens explain --json`)  →  OUT/residual.csv (one row per image) and
#      OUT/residual_summary.csv (mean |residual| and mean |residual| / |score| per mode and N).
#
# Usage: scripts/grounding_report.sh OUT [MOSAICS_DIR=/tmp/m1000] [COUNT=1000] [RCOUNT=100]
# Env: PAIRLENS (binary, default target/release/pairlens), MODEL (checkpoint dir; default the
# built-in model). MOSAICS_DIR is created with `pairlens mosaics` from the Fashion-MNIST test
# split if it holds no data.jsonl. No Python needed.
set -euo pipefail

out=${1:?usage: scripts/grounding_report.sh OUT [MOSAICS_DIR] [COUNT] [RCOUNT]}
data=${2:-/tmp/m1000}
count=${3:-1000}
rcount=${4:-100}
bin=${PAIRLENS:-target/release/pairlens}
model=()
if [ -n "${MODEL:-}" ]; then model=(--model "$MODEL"); fi

mkdir -p "$out"
if [ ! -f "$data/data.jsonl" ]; then
    "$bin" mosaics --data /usr/share/datasets/fashion-mnist --split test --count "$count" --out "$data"
fi

for method in pairlens ig similarity; do
    echo "== $method on $count mosaics" >&2
    "$bin" eval-grounding "${model[@]}" --data "$data/data.jsonl" --method "$method" --steps 10 \
        --limit "$count" --out "$out/$method" --force | tee "$out/$method.txt"
done

echo "== residual vs N on $rcount mosaics" >&2
echo "mode,steps,image,score,residual" > "$out/residual.csv"
head -n "$rcount" "$data/data.jsonl" | while IFS= read -r line; do
    image=$(printf '%s' "$line" | sed -n 's/.*"image":"\([^"]*\)".*/\1/p')
    caption=$(printf '%s' "$line" | sed -n 's/.*"caption":"\([^"]*\)".*/\1/p')
    for mode in exclip cosine; do
        for steps in 1 5 10 25 50; do
            json=$("$bin" explain "${model[@]}" --image "$data/$image" --caption "$caption" \
                --steps "$steps" --mode "$mode" --json)
            score=$(printf '%s' "$json" | grep -o '"score":[-0-9.eE+]*' | tail -n 1 | cut -d: -f2)
            residual=$(printf '%s' "$json" | grep -o '"residual":[-0-9.eE+]*' | head -n 1 | cut -d: -f2)
            echo "$mode,$steps,$image,$score,$residual" >> "$out/residual.csv"
        done
    done
done
awk -F, 'NR > 1 {
        k = $1 "," $2; n[k]++; r = ($5 < 0 ? -$5 : $5); s = ($4 < 0 ? -$4 : $4)
        abs[k] += r; if (s > 0) rel[k] += r / s
    }
    END {
        print "mode,steps,images,mean_abs_residual,mean_abs_residual_over_abs_score"
        for (k in n) printf "%s,%d,%.6g,%.6g\n", k, n[k], abs[k] / n[k], rel[k] / n[k]
    }' "$out/residual.csv" | (read -r header; echo "$header"; sort -t, -k1,1 -k2,2n) \
    > "$out/residual_summary.csv"
cat "$out/residual_summary.csv"

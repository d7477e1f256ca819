#!/usr/bin/env bash
# Fine-tuning monitored by grounding (issue 5, point 4), end to end:
#   (a) train a base model on a SHIFTED distribution: some classes rare in the training mosaics;
#   (b) export in-domain test mosaics (test split, default generator);
#   (c) fine-tune the base on in-domain mosaics (checkpoint-0 = the base's weights, plus an
#       intermediate checkpoint);
#   (d) eval-grounding (pointing game, box mass, reverse; default layers, N steps) of the
#       starting weights, the intermediate and the final checkpoint;
#   (e) compare-grounding before → after (and before → intermediate), per class;
#   (f) eval-retrieval (mosaic retrieval + per-class zero-shot) before and after.
#
# Usage: scripts/finetune_experiment.sh OUT_DIR
# Needs Fashion-MNIST: `apt-get install dataset-fashion-mnist` (→ /usr/share/datasets/fashion-mnist)
# and a built binary (`cargo build --release -p pairlens-cli`). Every stage is skipped when its
# output exists, so an interrupted run continues where it stopped. Knobs (environment):
#   DATA RARE RARE_WEIGHT BASE_STEPS FT_STEPS FT_MID FT_LR BATCH N COUNT PAIRLENS
# Results: OUT_DIR/compare/comparison.{md,png,json}, OUT_DIR/zero_shot.md, OUT_DIR/timings.tsv.
set -euo pipefail

OUT=${1:?usage: scripts/finetune_experiment.sh OUT_DIR}
DATA=${DATA:-/usr/share/datasets/fashion-mnist}
# Two look-alike classes (coat ~ pullover/shirt, sandal ~ sneaker/ankle boot) and one distinct
# one (bag), so a rare-class gap can show both as confusion and as plain unfamiliarity.
RARE=${RARE:-coat,sandal,bag}
RARE_WEIGHT=${RARE_WEIGHT:-0.03}
BASE_STEPS=${BASE_STEPS:-900}
FT_STEPS=${FT_STEPS:-300}
FT_MID=${FT_MID:-100}
FT_LR=${FT_LR:-3e-4}
BATCH=${BATCH:-64}
N=${N:-10}
COUNT=${COUNT:-1000}
SRC_BIN=${PAIRLENS:-target/release/pairlens}

if [ ! -f "$DATA/train-images-idx3-ubyte.gz" ] && [ ! -f "$DATA/train-images-idx3-ubyte" ]; then
    echo "Fashion-MNIST not found in $DATA: apt-get install dataset-fashion-mnist (or set DATA=)" >&2
    exit 1
fi
mkdir -p "$OUT"
# A private copy of the binary: a rebuild during the run must not change it half-way.
if [ ! -x "$OUT/pairlens" ]; then
    [ -x "$SRC_BIN" ] || { echo "$SRC_BIN not found: cargo build --release -p pairlens-cli" >&2; exit 1; }
    cp "$SRC_BIN" "$OUT/pairlens"
fi
P="$OUT/pairlens"
cat > "$OUT/settings.env" <<EOF
RARE=$RARE RARE_WEIGHT=$RARE_WEIGHT BASE_STEPS=$BASE_STEPS FT_STEPS=$FT_STEPS FT_MID=$FT_MID
FT_LR=$FT_LR BATCH=$BATCH N=$N COUNT=$COUNT DATA=$DATA
EOF

# timed NAME DONE_FILE CMD…: run CMD unless DONE_FILE exists; log its wall time.
timed() {
    local name=$1 done=$2
    shift 2
    if [ -e "$done" ]; then
        echo "== $name: done already ($done)"
        return
    fi
    echo "== $name: $*"
    local t0=$(date +%s)
    "$@"
    local t1=$(date +%s)
    printf '%s\t%s\n' "$name" $((t1 - t0)) >> "$OUT/timings.tsv"
}

# (a) The base model on the shifted distribution. --force: a partial run left no final model.
timed base "$OUT/base/model.safetensors" \
    "$P" train --data "$DATA" --out "$OUT/base" --steps "$BASE_STEPS" --batch "$BATCH" \
    --seed 0 --rare "$RARE" --rare-weight "$RARE_WEIGHT" --checkpoint-every 0 --eval-every 100 \
    --force

# (b) In-domain test mosaics (test split, seed 1, default generator).
timed mosaics "$OUT/test-mosaics/data.jsonl" \
    "$P" mosaics --data "$DATA" --split test --count "$COUNT" --out "$OUT/test-mosaics" --force

# (c) Fine-tuning on in-domain training mosaics (seed 1: other mosaics than the base saw).
timed finetune "$OUT/finetuned/model.safetensors" \
    "$P" finetune --model "$OUT/base" --data "$DATA" --out "$OUT/finetuned" --steps "$FT_STEPS" \
    --batch "$BATCH" --lr "$FT_LR" --save-at "0,$FT_MID" --eval-every 50 --force

# (d) Grounding: the starting weights (checkpoint-0), the intermediate and the final model.
ground() {
    timed "grounding-$1" "$OUT/grounding/$1/summary.json" \
        "$P" eval-grounding --model "$2" --data "$OUT/test-mosaics/data.jsonl" \
        --out "$OUT/grounding/$1" --steps "$N"
}
ground before "$OUT/finetuned/checkpoint-0"
ground after "$OUT/finetuned"
ground "step$FT_MID" "$OUT/finetuned/checkpoint-$FT_MID"

# (e) Per-class before → after.
"$P" compare-grounding --before "$OUT/grounding/before" --after "$OUT/grounding/after" \
    --label-before "base (rare: $RARE)" --label-after "fine-tuned $FT_STEPS steps" \
    --out "$OUT/compare" --force > /dev/null
"$P" compare-grounding --before "$OUT/grounding/before" --after "$OUT/grounding/step$FT_MID" \
    --label-before "base (rare: $RARE)" --label-after "fine-tuned $FT_MID steps" \
    --out "$OUT/compare-step$FT_MID" --force > /dev/null

# (f) Retrieval and per-class zero-shot before and after.
mkdir -p "$OUT/retrieval"
timed retrieval-before "$OUT/retrieval/before.json" \
    sh -c "\"$P\" eval-retrieval --model \"$OUT/finetuned/checkpoint-0\" --data \"$DATA\" \
        --count $COUNT --json > \"$OUT/retrieval/before.json.tmp\" \
        && mv \"$OUT/retrieval/before.json.tmp\" \"$OUT/retrieval/before.json\""
timed retrieval-after "$OUT/retrieval/after.json" \
    sh -c "\"$P\" eval-retrieval --model \"$OUT/finetuned\" --data \"$DATA\" \
        --count $COUNT --json > \"$OUT/retrieval/after.json.tmp\" \
        && mv \"$OUT/retrieval/after.json.tmp\" \"$OUT/retrieval/after.json\""

# Zero-shot per class and retrieval as a markdown table (Python's standard library only).
python3 - "$OUT" "$RARE" > "$OUT/zero_shot.md" <<'PY'
import json, sys
out, rare = sys.argv[1], sys.argv[2].split(",")
b = json.load(open(f"{out}/retrieval/before.json"))
a = json.load(open(f"{out}/retrieval/after.json"))
print("| class | rare in base training | zero-shot before | after | Δ |")
print("|---|---|---:|---:|---:|")
for x, y in zip(b["zero_shot"]["per_class"], a["zero_shot"]["per_class"]):
    r = "yes" if x["key"] in rare else ""
    d = y["accuracy"] - x["accuracy"]
    print(f"| {x['key']} | {r} | {x['accuracy']:.3f} | {y['accuracy']:.3f} | {d:+.3f} |")
zb, za = b["zero_shot"]["accuracy"], a["zero_shot"]["accuracy"]
print(f"| **all** | | {zb:.3f} | {za:.3f} | {za - zb:+.3f} |")
print()
print("| mosaic retrieval (1000 test mosaics) | before | after |")
print("|---|---:|---:|")
for d in ["image_to_text", "text_to_image"]:
    for k in ["r1", "r5"]:
        print(f"| {d} {k.upper()} | {b['retrieval'][d][k]:.3f} | {a['retrieval'][d][k]:.3f} |")
PY

echo "== done: $OUT/compare/comparison.md, $OUT/zero_shot.md"
cat "$OUT/compare/comparison.md" "$OUT/zero_shot.md"
cat "$OUT/timings.tsv"

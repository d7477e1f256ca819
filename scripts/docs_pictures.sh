#!/usr/bin/env bash
# Regenerates the README's pictures from the built-in model (rerun after shipping a new model):
#   docs/running-shoe.png   the README main command's span heatmap (`explain --png`)
#   docs/report.png         that command's `--html` report, screenshotted by headless Chromium
#   docs/viewer.png, docs/viewer-box.png   the viewer's browser test (`serve_browser`), which
#                           saves them under target/e2e-screenshots/
# Needs /usr/bin/chromium, Node.js and `npm ci --prefix e2e` (as .ci/run installs them).
# Usage: scripts/docs_pictures.sh   (from the repository root; builds the release binary)
set -euo pipefail

cargo build --release -p pairlens-cli
bin=target/release/pairlens
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

"$bin" explain --image examples/mosaics/00000.png \
    --caption "a running shoe next to a boot and a pair of trousers beside a blouse" \
    --text-layer 1 --image-layer 1 --span 2:4 --box 0,8,31,25 \
    --png "$tmp/png" --html "$tmp/report.html" > "$tmp/explain.txt"
cp "$tmp/png/caption1_span2-4.png" docs/running-shoe.png

chromium --headless --no-sandbox --disable-gpu --hide-scrollbars \
    --screenshot="$tmp/report.png" --window-size=1200,1730 "file://$tmp/report.html" 2> /dev/null
cp "$tmp/report.png" docs/report.png

PAIRLENS_E2E=require cargo test --release -p pairlens-cli --test serve_browser
cp target/e2e-screenshots/viewer.png target/e2e-screenshots/viewer-box.png docs/

cat "$tmp/explain.txt"
echo "updated docs/running-shoe.png, docs/report.png, docs/viewer.png, docs/viewer-box.png" >&2

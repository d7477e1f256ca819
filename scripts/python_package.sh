#!/usr/bin/env bash
# The Python package (crates/pairlens-py) as a user gets it: a fresh venv, `pip install` of the
# checkout (maturin comes from PyPI through the build backend and builds the abi3 wheel in this
# workspace's target/, reusing its compiled dependencies), then the pytest suite, which checks
# the package against the CLI's --out/--json bit for bit, and mypy's stubtest, which checks the
# type stubs against the module. Prints the wheel size and import time.
#
#   scripts/python_package.sh            (from anywhere in the checkout)
#
# Environment: PYTHON (default python3, ≥ 3.9), PAIRLENS_BIN (default target/release/pairlens,
# built when missing), KEEP_VENV=1 keeps the venv and prints where it is.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
started=$SECONDS

python=${PYTHON:-python3}
if ! "$python" -c 'import ensurepip, venv' 2>/dev/null; then
  echo "$python cannot create virtual environments (Debian/Ubuntu: apt-get install python3-venv)" >&2
  exit 1
fi
bin=${PAIRLENS_BIN:-$root/target/release/pairlens}
if [ ! -x "$bin" ]; then
  cargo build --release -p pairlens-cli
fi

tmp=$(mktemp -d)
if [ "${KEEP_VENV:-}" = 1 ]; then
  echo "venv kept in $tmp/venv"
else
  trap 'rm -rf "$tmp"' EXIT
fi
"$python" -m venv "$tmp/venv"
venv_python=$tmp/venv/bin/python
"$venv_python" -m pip install --quiet --upgrade pip

# The wheel, built once: its size is reported, and pip installs exactly it.
"$venv_python" -m pip wheel --quiet --no-deps --wheel-dir "$tmp/wheels" ./crates/pairlens-py
wheel=$(ls "$tmp"/wheels/pairlens-*.whl)
"$venv_python" -m pip install --quiet "$wheel" numpy pytest pillow mypy
built=$SECONDS

# The type stubs agree with the module (every name, signature and default).
(cd "$tmp" && "$venv_python" -m mypy.stubtest pairlens)

# Tests from a directory outside the checkout's python/ sources: the installed package is tested.
(cd "$tmp" && PAIRLENS_BIN=$bin "$venv_python" -m pytest -q -p no:cacheprovider \
  "$root/crates/pairlens-py/tests")

size=$(du -k "$wheel" | cut -f1)
import_ms=$(cd "$tmp" && "$venv_python" -c '
import time
t = time.perf_counter()
import pairlens
print(round((time.perf_counter() - t) * 1000))')
echo "python package: wheel $(basename "$wheel") ${size} KiB; import pairlens ${import_ms} ms;" \
  "build+install $((built - started)) s, tests $((SECONDS - built)) s"

#!/usr/bin/env bash
# Builds the libFuzzer targets in fuzz/ with stable Rust (no cargo-fuzz, no nightly) and runs them.
#
#   scripts/fuzz.sh build                 build only (release profile)
#   scripts/fuzz.sh smoke                 build (profile fuzz-smoke), every seed once, then
#                                         FUZZ_SMOKE_SECONDS (default 20) of fuzzing per target
#   scripts/fuzz.sh long [SECONDS] [TARGET...]
#                                         SECONDS (default 600) of fuzzing per target
#   scripts/fuzz.sh run TARGET [LIBFUZZER ARGS...]
#                                         one target with the usual options plus yours (e.g. a
#                                         crash file to reproduce, -runs=N, -jobs=N)
#
# New corpus entries go to fuzz/scratch/corpus/TARGET (git-ignored, kept from run to run; smoke
# starts from an empty fuzz/scratch/smoke-corpus/TARGET instead; the committed seeds in
# fuzz/corpus/TARGET are only read), crashes to fuzz/scratch/artifacts/TARGET/, logs to
# fuzz/scratch/logs/. Environment: FUZZ_SMOKE_SECONDS, FUZZ_TARGET_DIR (default fuzz/target),
# FUZZ_PROFILE (cargo profile; default fuzz-smoke for smoke, release otherwise), FUZZ_JOBS (cargo
# build jobs).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
FUZZ=$ROOT/fuzz
TARGETS=(image_decode checkpoint tokenize api_request)
TARGET_DIR=${FUZZ_TARGET_DIR:-$FUZZ/target}
SCRATCH=$FUZZ/scratch

# Coverage instrumentation as cargo-fuzz sets it up, all of it stable rustc options
# (SanitizerCoverage's module pass with inline 8-bit counters, a PC table and comparison tracing,
# plus debug assertions and overflow checks), added by fuzz/rustc-wrapper.sh to the crates under
# test but not to the numeric and runtime crates below them; `cfg(fuzzing)` everywhere (png, for
# one, then ignores checksums). The wrapper's hash is in RUSTFLAGS so that editing it rebuilds.
WRAPPER=$FUZZ/rustc-wrapper.sh
WRAPPER_HASH=$(cksum <"$WRAPPER" | cut -d' ' -f1)
RUSTFLAGS_FUZZ="--cfg fuzzing --cfg pairlens_fuzz_wrapper=\"$WRAPPER_HASH\""
HOST=$(rustc -vV | sed -n 's/^host: //p')
cmd=${1:-smoke}
shift || true
# smoke builds with opt-level 1 (profile fuzz-smoke in fuzz/Cargo.toml: 30% less build time),
# everything else with release.
PROFILE=${FUZZ_PROFILE:-$([ "$cmd" = smoke ] && echo fuzz-smoke || echo release)}
BIN_DIR=$TARGET_DIR/$HOST/$PROFILE

build() {
  # An explicit --target keeps RUSTFLAGS off build scripts and proc macros (as cargo-fuzz does).
  # Not --locked: when pairlens or pairlens-serve gain a dependency, cargo adds it to
  # fuzz/Cargo.lock (keeping every version already there) instead of failing.
  RUSTFLAGS="$RUSTFLAGS_FUZZ" RUSTC_WRAPPER="$WRAPPER" cargo build --profile "$PROFILE" \
    --manifest-path "$FUZZ/Cargo.toml" --target "$HOST" --target-dir "$TARGET_DIR" \
    ${FUZZ_JOBS:+--jobs "$FUZZ_JOBS"} --bins
}

# Per-target libFuzzer options (into OPTS): memory limits, input size bound, per-input timeout,
# dictionary, findings next to the scratch corpus.
set_options() {
  local t=$1 max_len timeout=10
  case $t in
    image_decode) max_len=65536 ;;
    checkpoint) max_len=65536 ;;
    tokenize) max_len=4096 ;;
    api_request) max_len=16384; timeout=20 ;;
    *) echo "fuzz: unknown target $t (targets: ${TARGETS[*]})" >&2; exit 2 ;;
  esac
  OPTS=(-rss_limit_mb=2048 -malloc_limit_mb=2048 -max_len="$max_len" -timeout="$timeout"
    -print_final_stats=1 -artifact_prefix="$SCRATCH/artifacts/$t/")
  if [ -f "$FUZZ/dict/$t.dict" ]; then OPTS+=(-dict="$FUZZ/dict/$t.dict"); fi
}

run_target() {
  local t=$1
  shift
  set_options "$t"
  mkdir -p "$SCRATCH/corpus/$t" "$SCRATCH/artifacts/$t" "$SCRATCH/logs"
  "$BIN_DIR/$t" "${OPTS[@]}" "$@"
}

# fuzz_for TARGET SECONDS CORPUS: fuzzing from CORPUS (where new inputs go) and the seeds.
fuzz_for() {
  local t=$1 seconds=$2 corpus=$3 log
  log=$SCRATCH/logs/$t.log
  echo "== $t: ${seconds}s of fuzzing (log: ${log#"$ROOT"/})"
  mkdir -p "$corpus"
  if ! run_target "$t" -max_total_time="$seconds" "$corpus" "$FUZZ/corpus/$t" >"$log" 2>&1; then
    tail -n 60 "$log"
    echo "fuzz: $t failed; the input is in ${SCRATCH#"$ROOT"/}/artifacts/$t/" >&2
    return 1
  fi
  grep -E '^(#[0-9]+[[:space:]]+DONE|stat::number_of_executed_units|stat::average_exec_per_sec)' "$log" || tail -n 3 "$log"
}

case $cmd in
  build)
    build
    ;;
  smoke)
    started=$SECONDS
    build
    seconds=${FUZZ_SMOKE_SECONDS:-20}
    for t in "${TARGETS[@]}"; do
      # Every committed seed (regression inputs included) once, then fuzzing from them.
      echo "== $t: seeds"
      mkdir -p "$SCRATCH/logs"
      if ! run_target "$t" -runs=0 "$FUZZ/corpus/$t" >"$SCRATCH/logs/$t.seeds.log" 2>&1; then
        tail -n 60 "$SCRATCH/logs/$t.seeds.log"
        echo "fuzz: a seed of $t fails" >&2
        exit 1
      fi
      grep -E '^#[0-9]+[[:space:]]+INITED' "$SCRATCH/logs/$t.seeds.log" || true
      # From the seeds alone (a fresh corpus each time, so the run takes the same time however
      # long earlier runs were).
      rm -rf "$SCRATCH/smoke-corpus/$t"
      fuzz_for "$t" "$seconds" "$SCRATCH/smoke-corpus/$t"
    done
    echo "fuzz smoke: all targets passed in $((SECONDS - started)) s"
    ;;
  long)
    seconds=${1:-600}
    shift || true
    build
    targets=("$@")
    [ ${#targets[@]} -gt 0 ] || targets=("${TARGETS[@]}")
    failed=()
    for t in "${targets[@]}"; do
      fuzz_for "$t" "$seconds" "$SCRATCH/corpus/$t" || failed+=("$t")
    done
    if [ ${#failed[@]} -gt 0 ]; then
      echo "fuzz: findings in ${failed[*]}" >&2
      exit 1
    fi
    ;;
  run)
    t=${1:?usage: scripts/fuzz.sh run TARGET [LIBFUZZER ARGS...]}
    shift
    build >&2 # (a second when nothing changed)
    run_target "$t" "$@"
    ;;
  *)
    echo "usage: scripts/fuzz.sh build | smoke | long [SECONDS] [TARGET...] | run TARGET [ARGS...]" >&2
    exit 2
    ;;
esac

#!/usr/bin/env bash
# RUSTC_WRAPPER for scripts/fuzz.sh: adds libFuzzer's coverage instrumentation, debug assertions
# and overflow checks to the crates being fuzzed and not to the numeric and runtime crates under
# them (candle and its matmul kernels, rayon, tokio, hashing, random numbers) nor to the regex
# engines (fuzzed upstream; comparison tracing in their search loops halves the tokenize
# target's speed), whose code is hot and not what these targets are after.
# Build scripts and proc macros (compiled without --target) are left alone.
# Changing the list below changes this file's hash, which scripts/fuzz.sh puts into RUSTFLAGS
# so that cargo rebuilds.
set -euo pipefail
rustc=$1
shift
crate=
target=0
prev=
for a in "$@"; do
  case $prev in --crate-name) crate=$a ;; esac
  case $a in --target | --target=*) target=1 ;; esac
  prev=$a
done
case $crate in
  "" | ___ | candle_core | gemm | gemm_* | pulp | pulp_* | dyn_stack | reborrow | raw_cpuid | \
    seq_macro | half | float8 | num_complex | num_traits | libm | rand | rand_* | ppv_lite86 | \
    rayon | rayon_core | rayon_cond | crossbeam_* | tokio | mio | parking_lot | parking_lot_core | \
    sha2 | digest | block_buffer | generic_array | typenum | cpufeatures | zip | libfuzzer_sys | \
    regex | regex_automata | regex_syntax | fancy_regex | aho_corasick | memchr)
    target=0 ;;
esac
if [ "$target" = 1 ]; then
  exec "$rustc" "$@" \
    -Cpasses=sancov-module \
    -Cllvm-args=-sanitizer-coverage-level=4 \
    -Cllvm-args=-sanitizer-coverage-inline-8bit-counters \
    -Cllvm-args=-sanitizer-coverage-pc-table \
    -Cllvm-args=-sanitizer-coverage-trace-compares \
    -Cdebug-assertions \
    -Coverflow-checks
fi
exec "$rustc" "$@"

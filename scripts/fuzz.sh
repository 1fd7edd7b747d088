#!/usr/bin/env bash
# Runs every fuzz target (fuzz/fuzz_targets) for a while with libFuzzer
# through cargo-fuzz, starting from the committed seed corpora
# (fuzz/seeds/<target>) and growing a local corpus (fuzz/corpus, not
# committed). Prints each target's executions; exits non-zero on the first
# crash, whose input cargo-fuzz keeps in fuzz/artifacts/<target>/.
#
#   scripts/fuzz.sh                 # 60 s per target
#   scripts/fuzz.sh 600 signature   # 10 minutes, one target
#   scripts/fuzz.sh build           # only build the targets
#
# JETEDGE_FUZZ_PROFILE=dev builds without optimisation: half the build time
# and a tenth of the executions, enough for the test suite's brief run.
#
# A crash found here becomes a regression test: copy its input to
# fuzz/regressions/<target>/, which scripts/test.sh replays every run.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
seconds="${1:-60}"
shift || true
cargo_fuzz=$(scripts/install-fuzz.sh | tail -1)
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=(signature envelope rules config record)
fi
# The targets need sanitizer-coverage flags, unstable on this toolchain.
export RUSTC_BOOTSTRAP=1
profile=--release
if [ "${JETEDGE_FUZZ_PROFILE:-release}" = dev ]; then
  profile=--dev
fi
"$cargo_fuzz" build --sanitizer none "$profile"
if [ "$seconds" = build ]; then
  exit 0
fi
for t in "${targets[@]}"; do
  mkdir -p "fuzz/corpus/$t" "fuzz/seeds/$t" "fuzz/regressions/$t"
  log=$(mktemp)
  # Inputs of every corpus directory run first: the seeds, and the
  # regressions (each a crash once found, fixed since).
  if ! "$cargo_fuzz" run --sanitizer none "$profile" "$t" \
      "fuzz/corpus/$t" "fuzz/seeds/$t" "fuzz/regressions/$t" -- \
      -max_total_time="$seconds" -max_len=16384 -timeout=10 -rss_limit_mb=1024 \
      -print_final_stats=1 >"$log" 2>&1; then
    tail -40 "$log"
    echo "fuzz: $t crashed; input in fuzz/artifacts/$t/" >&2
    rm -f "$log"
    exit 1
  fi
  execs=$(grep -Eo 'stat::number_of_executed_units: *[0-9]+' "$log" | grep -Eo '[0-9]+$' || true)
  last=$(grep -E '^#[0-9]+' "$log" | tail -1 || true)
  echo "fuzz: $t ${seconds}s: ${execs:-?} executions; ${last}"
  rm -f "$log"
done

#!/usr/bin/env bash
# A CPU profile of the core benchmark's ingest line (c): signed webhooks into
# a node with forwarding on, the load client in the same process. Installs
# Debian's linux-perf if perf is missing and inferno (crates.io) into .tools,
# records with perf (task-clock, DWARF call graphs: this machine has no
# hardware counters) and writes a flame graph.
#
#   scripts/profile.sh                 -> target/profile/ingest.svg, ingest.folded
#   JETEDGE_PROFILE_SECONDS=30 scripts/profile.sh
#
# The (a) and (b) lines run with 2,000 events first, so nearly all of the
# profile is (c); the requests are signed before the clock starts (they show
# as core::requests_tagged and standardwebhooks, the client's cost, not
# the node's).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
if ! command -v perf >/dev/null; then
  apt-get install -y -q linux-perf >&2
fi
tools="$root/.tools"
if [ ! -x "$tools/bin/inferno-flamegraph" ]; then
  cargo install --quiet --locked --root "$tools" --version "${INFERNO_VERSION:-0.12.3}" inferno >&2
fi
NATS_SERVER_BIN=$("$root/scripts/install-nats.sh" | tail -n 1)
export NATS_SERVER_BIN
cargo bench --locked --bench core --no-run >&2
bench=$(ls -t target/release/deps/core-* | grep -v '\.d$' | head -n 1)
out="$root/target/profile"
mkdir -p "$out"
seconds="${JETEDGE_PROFILE_SECONDS:-22}"
JETEDGE_BENCH_EVENTS=2000 JETEDGE_BENCH_REQUESTS="${JETEDGE_PROFILE_REQUESTS:-250000}" JETEDGE_BENCH_ROUNDS=1 \
  perf record -e task-clock -F 499 --call-graph dwarf,16384 -o "$out/perf.data" -- \
  timeout -s INT "$seconds" "$bench" --bench || true
perf script -i "$out/perf.data" 2>/dev/null | "$tools/bin/inferno-collapse-perf" >"$out/ingest.folded"
"$tools/bin/inferno-flamegraph" --title "jetedge ingest (c)" <"$out/ingest.folded" >"$out/ingest.svg"
echo "$out/ingest.svg"

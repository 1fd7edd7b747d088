#!/usr/bin/env bash
# The core path benchmark (release build): a bare JetStream publisher as the
# ceiling, jetedge's outbox drain and its signed-webhook ingest, all in one
# run against one local nats-server. Prints events/s and the ratios.
#
#   scripts/bench.sh
#   JETEDGE_BENCH_EVENTS=50000 JETEDGE_BENCH_REQUESTS=20000 scripts/bench.sh   (quicker)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
NATS_SERVER_BIN=$("$root/scripts/install-nats.sh" | tail -n 1)
export NATS_SERVER_BIN
cargo bench --locked --bench core "$@"

#!/usr/bin/env bash
# An hour's soak of the release binary (benches/soak.rs): steady mixed
# traffic, an upstream outage every ten minutes, a kill -9 every few
# minutes; prints accepted, delivered, lost (0), doubled (0), peak RSS and
# disk, and ingest latency percentiles. Not part of the test suite.
#
#   scripts/soak.sh                              # one hour
#   JETEDGE_SOAK_SECONDS=600 scripts/soak.sh     # ten minutes
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
NATS_SERVER_BIN=$("$root/scripts/install-nats.sh" | tail -n 1)
export NATS_SERVER_BIN
cargo bench --locked --bench soak

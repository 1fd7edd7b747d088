#!/usr/bin/env bash
# The buffer's footprint (release build, the node as a separate process):
# idle RSS; buffering N events offline (rate, peak RSS, disk per backlog
# byte); restart with the backlog (time to /readyz, peak RSS); drain
# (rate against a bare publisher, peak RSS, data dir once drained).
#
#   scripts/footprint.sh
#   JETEDGE_FOOTPRINT_EVENTS=200000 scripts/footprint.sh   (quicker)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
NATS_SERVER_BIN=$("$root/scripts/install-nats.sh" | tail -n 1)
export NATS_SERVER_BIN
cargo bench --locked --bench footprint "$@"

#!/usr/bin/env bash
# The fleet test (tests/it/fleet.rs) at a larger size, with release builds:
# a 3-node R3 hub and N edge nodes, each a jetedge process with its own site
# nats-server, senders and subscriptions, through kills, link cuts and a
# stream leader change. Prints the fleet's aggregate ingest rate, each cut
# site's drain time, hub figures (stream size, consumers) and peak RSS.
#
#   scripts/fleet.sh                  # 20 sites
#   JETEDGE_FLEET_SITES=40 JETEDGE_FLEET_ORDERS=1000 scripts/fleet.sh
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
NATS_SERVER_BIN=$("$root/scripts/install-nats.sh" | tail -n 1)
export NATS_SERVER_BIN
export JETEDGE_FLEET_SITES="${JETEDGE_FLEET_SITES:-20}"
export JETEDGE_FLEET_ORDERS="${JETEDGE_FLEET_ORDERS:-500}"
export JETEDGE_FLEET_SCANS="${JETEDGE_FLEET_SCANS:-100}"
export JETEDGE_FLEET_PACE_MS="${JETEDGE_FLEET_PACE_MS:-5}"
# Many processes: more open files than the default soft limit allows.
ulimit -n 65536 2>/dev/null || true
cargo test --release --locked --test it -- fleet:: --nocapture 2>&1 | grep -E '^fleet:|^test |panicked|test result'

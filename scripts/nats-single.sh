#!/usr/bin/env bash
# Runs one JetStream server on 127.0.0.1:4222 (monitoring on :8222) with its
# store under data/nats-single, for local development and `scripts/bench.sh`.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
bin=$("$root/scripts/install-nats.sh" | tail -n 1)
mkdir -p data
exec "$bin" -c conf/nats/single.conf "$@"

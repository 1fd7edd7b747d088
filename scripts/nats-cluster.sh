#!/usr/bin/env bash
# Runs a 3-node JetStream cluster on loopback (clients on 4222-4224,
# monitoring on 8222-8224) with stores under data/nats-cluster. Ctrl-C stops
# all three.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
bin=$("$root/scripts/install-nats.sh" | tail -n 1)
mkdir -p data
pids=()
for i in 1 2 3; do
  "$bin" -c "conf/nats/cluster-$i.conf" &
  pids+=($!)
done
trap 'kill "${pids[@]}" 2>/dev/null; wait' INT TERM EXIT
wait

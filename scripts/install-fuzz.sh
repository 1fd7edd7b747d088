#!/usr/bin/env bash
# Installs cargo-fuzz (from crates.io) into a project-local root (.tools),
# unless it is there already. Prints the path of the binary on its last line.
#
# cargo-fuzz drives libFuzzer; the fuzz targets need unstable compiler flags
# (sanitizer coverage), which scripts/fuzz.sh allows on the stable
# toolchain with RUSTC_BOOTSTRAP=1.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
tools="$root/.tools"
version="${CARGO_FUZZ_VERSION:-0.13.1}"
bin="$tools/bin/cargo-fuzz"

if [ -x "$bin" ] && "$bin" --version 2>/dev/null | grep -q "$version"; then
  echo "$bin"
  exit 0
fi
cargo install --quiet --locked --root "$tools" --version "$version" cargo-fuzz >&2
echo "$bin"

#!/usr/bin/env bash
# Fetches the official AsyncAPI JSON Schemas (the @asyncapi/specs package
# on the npm registry) into .tools/asyncapi-specs, once, and prints the path
# of the AsyncAPI 3.0.0 schema, which the tests validate the node's
# generated documents against.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
version="${ASYNCAPI_SPECS_VERSION:-6.11.1}"
dir="$root/.tools/asyncapi-specs/$version"
schema="$dir/package/schemas/3.0.0.json"
if [ ! -s "$schema" ]; then
  mkdir -p "$dir"
  (cd "$dir" && npm pack --silent "@asyncapi/specs@$version" >/dev/null && tar xzf asyncapi-specs-*.tgz)
fi
echo "$schema"

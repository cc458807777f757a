#!/usr/bin/env bash
# `make bench`: the start-up table (shim vs runc busybox vs in-process floor).
set -euo pipefail
cd "$(dirname "$0")/.."
WASM_EXAMPLES_DIR=$PWD/examples/build "${SHIM_BIN_DIR:-$PWD/target/release}/shim-bench"
WASM_EXAMPLES_DIR=$PWD/examples/build "${SHIM_BIN_DIR:-$PWD/target/release}/http-bench"

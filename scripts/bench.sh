#!/usr/bin/env bash
# `make bench`: the start-up, throughput and memory table (shim vs runc busybox vs in-process
# floor; JSON and an SVG chart in target/bench/), then the HTTP table. Smaller runs for a quick
# look: BENCH_RUNS, BENCH_TASKS, BENCH_WORKERS, BENCH_MEMORY_COUNT, BENCH_SETTLE_MS.
set -euo pipefail
cd "$(dirname "$0")/.."
WASM_EXAMPLES_DIR=$PWD/examples/build "${SHIM_BIN_DIR:-$PWD/target/release}/shim-bench"
WASM_EXAMPLES_DIR=$PWD/examples/build "${SHIM_BIN_DIR:-$PWD/target/release}/http-bench"

#!/usr/bin/env bash
# Runs the hello example image under a private containerd with ctr, the way a user would.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/private-containerd.sh
start_containerd
echo "+ ctr images import --platform wasi/wasm examples/build/hello.tar"
$CTR images import --platform wasi/wasm examples/build/hello.tar
echo "+ ctr run --rm --runtime io.containerd.wasmtime.v1 docker.io/library/wasm-hello:latest demo"
$CTR run --rm --runtime io.containerd.wasmtime.v1 docker.io/library/wasm-hello:latest demo
echo "+ ctr run --rm --runtime io.containerd.wasmtime.v1 ... wasm-printenv a b"
$CTR images import --platform wasi/wasm examples/build/printenv.tar >/dev/null
$CTR run --rm --runtime io.containerd.wasmtime.v1 --env GREETING=hi \
    docker.io/library/wasm-printenv:latest demo2 /printenv.wasm a b

# Sourced by demo.sh and bench.sh: a private containerd whose root, state and sockets live
# in a temp dir, with the freshly built shim first on its PATH. Never touches a system
# containerd.
#   start_containerd   sets CTD_DIR, CTD_SOCK and CTR ("ctr -a SOCK")
#   stop_containerd    stops it and removes the dir (registered on EXIT by start)

start_containerd() {
    local bin_dir=${SHIM_BIN_DIR:-$PWD/target/release}
    CTD_DIR=$(mktemp -d /tmp/wasmtime-shim-ctd.XXXXXX)
    CTD_SOCK=$CTD_DIR/containerd.sock
    mkdir -p "$CTD_DIR/bin"
    ln -s "$bin_dir/containerd-shim-wasmtime-v1" "$CTD_DIR/bin/"
    cat > "$CTD_DIR/config.toml" <<TOML
version = 2
root = "$CTD_DIR/root"
state = "$CTD_DIR/state"
[grpc]
  address = "$CTD_SOCK"
[ttrpc]
  address = "$CTD_SOCK.ttrpc"
[plugins."io.containerd.grpc.v1.cri"]
  disable_tcp_service = true
TOML
    PATH="$CTD_DIR/bin:$PATH" containerd --config "$CTD_DIR/config.toml" \
        > "$CTD_DIR/containerd.log" 2>&1 &
    CTD_PID=$!
    trap stop_containerd EXIT
    for _ in $(seq 100); do
        ctr -a "$CTD_SOCK" version >/dev/null 2>&1 && break
        sleep 0.1
    done
    CTR="ctr -a $CTD_SOCK"
    $CTR version >/dev/null || { cat "$CTD_DIR/containerd.log"; return 1; }
}

stop_containerd() {
    [ -n "${CTD_PID:-}" ] || return 0
    kill "$CTD_PID" 2>/dev/null || true
    wait "$CTD_PID" 2>/dev/null || true
    # Anything still mounted under the private root (a snapshot of a crashed run).
    grep -o " $CTD_DIR[^ ]*" /proc/self/mounts | sort -r | while read -r m; do umount -l "$m"; done || true
    rm -rf "$CTD_DIR"
    CTD_PID=
    return 0
}

#!/bin/sh
# RUSTC_WRAPPER of `make fuzz`: cargo runs it as `rustc-wrapper.sh RUSTC ARGS...` for every
# crate. cargo-fuzz instruments every crate for coverage, at -O3 in one codegen unit. The
# runtime crate links wasmtime, cranelift, tokio and hyper, which no fuzz target ever runs:
# built that way they would be most of the build's time (cranelift-codegen alone takes
# minutes) for no coverage. Every crate not listed here (or in FUZZ_INSTRUMENT) is built
# uninstrumented (a later -sanitizer-coverage-level=0 overrides cargo-fuzz's), at -O1 in 16
# codegen units. The sanitizer flag is left alone: rustc refuses to link crates built with
# different ones.
[ -n "${CARGO_PKG_NAME:-}" ] || exec "$@"
for crate in containerd-wasmtime-fuzz containerd-wasmtime-runtime oci-spec serde serde_json \
             tar arbitrary ${FUZZ_INSTRUMENT:-}; do
  [ "$crate" = "$CARGO_PKG_NAME" ] && exec "$@"
done
exec "$@" -Cllvm-args=-sanitizer-coverage-level=0 -Copt-level=1 -Ccodegen-units=16

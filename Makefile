# containerd-shim-wasmtime: build, examples, demo, tests, benchmarks.
# Everything runs from a fresh Debian 12 machine: `make demo` and `make test` install what
# is missing first (root needed for apt-get). protobuf-compiler is for the CRI client of the
# pod test (k8s-cri generates its code with protoc).

CARGO        ?= cargo
PROFILE      ?= release
TARGET_DIR   ?= $(CURDIR)/target
BIN_DIR      := $(TARGET_DIR)/$(PROFILE)
SHIM         := $(BIN_DIR)/containerd-shim-wasmtime-v1
PACK         := $(BIN_DIR)/wasm-oci-pack
WASM_CC      ?= clang-14
WASM_CFLAGS  ?= --target=wasm32-wasi -O2 -Wall -Wextra
WASM_OUT     := examples/build
PREFIX       ?= /usr/local

EXAMPLES     := hello printenv filetool ticker
# WASI 0.2 components, built from C through generated WIT bindings and the preview-1 adapter.
COMPONENTS   := http-hello cli-exit
TEST_PROGRAMS := exitcode trap spin bigout cat podapp ttycheck grow
NATIVE_CC    ?= clang-14
NATIVE_CFLAGS ?= -static -O2 -Wall -Wextra
DEB_PACKAGES := containerd runc clang-14 lld-14 wasi-libc libclang-rt-14-dev-wasm32 libc6-dev \
                busybox-static jq hyperfine protobuf-compiler

# Build helper for the components (C bindings from WIT, core module to component): its own
# workspace and lock file under tools/, always built in release, outside the shim's target.
TOOLS_TARGET_DIR := $(TARGET_DIR)/tools
WASM_COMPONENT := $(TOOLS_TARGET_DIR)/release/wasm-component
BINDINGS     := $(WASM_OUT)/bindings
CORE_OUT     := $(WASM_OUT)/core

# The WASI 0.2 WIT (wasi:http, wasi:cli, ... in wit/deps) of the wasmtime-wasi-http crate the
# runtime depends on, so components target exactly the interfaces the shim's host provides.
# `cargo metadata` finds its source in cargo's registry (downloading it if needed, building
# nothing). Expanded at most once, and only by the rules that need it, so other targets never
# run cargo metadata.
WASI_WIT = $(eval WASI_WIT := $(call find_wasi_wit))$(WASI_WIT)
find_wasi_wit = $(or $(patsubst %/Cargo.toml,%/wit,$(shell $(CARGO) metadata --format-version 1 \
  --quiet --manifest-path $(CURDIR)/Cargo.toml | jq -r '[.packages[] | select(.name == "wasmtime-wasi-http")][0].manifest_path // empty')),\
  $(error cannot locate the wasmtime-wasi-http crate with cargo metadata and jq))

.PHONY: all deps build examples images install demo test check bench bench-tools clean

all: build examples

# Installs only what is missing, so a machine that has everything makes no apt call.
deps:
	@missing=""; for p in $(DEB_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi
	@command -v $(CARGO) >/dev/null || { echo "cargo (Rust 1.95) is required"; exit 1; }

build:
	$(CARGO) build --profile $(PROFILE) --workspace --bins

$(WASM_OUT)/%.wasm: examples/%/*.c | $(WASM_OUT)
	$(WASM_CC) $(WASM_CFLAGS) -o $@ $<

$(WASM_OUT)/%.wasm: test/programs/%.c | $(WASM_OUT)
	$(WASM_CC) $(WASM_CFLAGS) -o $@ $<

# The pod sandbox's pause: native, static, so an image needs nothing else.
$(WASM_OUT)/pause: examples/pause/pause.c | $(WASM_OUT)
	$(NATIVE_CC) $(NATIVE_CFLAGS) -o $@ $<

$(WASM_OUT):
	mkdir -p $@

# Cargo rebuilds it when a source changed. When cargo finds nothing to do it leaves the
# binary's timestamp alone, so make may ask again later: a silent no-op of a fraction of a
# second.
$(WASM_COMPONENT): tools/wasm-component/Cargo.toml tools/wasm-component/Cargo.lock \
                   $(wildcard tools/wasm-component/src/*.rs)
	$(CARGO) build --quiet --release --locked --manifest-path tools/wasm-component/Cargo.toml \
	  --target-dir $(TOOLS_TARGET_DIR)

# C bindings: WORLD.c, WORLD.h and WORLD_component_type.o (the world's type, which the
# component encoder reads from the linked core module). The header stands for all three.
$(BINDINGS)/http-hello/proxy.h: $(WASM_COMPONENT)
	$(WASM_COMPONENT) bindings --wit $(WASI_WIT) --world wasi:http/proxy@0.2.12 --out $(@D)

$(BINDINGS)/cli-exit/exit_code.h: $(WASM_COMPONENT) $(wildcard examples/cli-exit/wit/*.wit)
	$(WASM_COMPONENT) bindings --wit examples/cli-exit/wit --deps $(WASI_WIT)/deps \
	  --world exit-code --out $(@D)

# Core modules: an HTTP handler is a reactor (no main; the host calls its export per
# request), cli-exit a command (wasi-libc's _start runs main).
$(CORE_OUT)/http-hello.wasm: examples/http-hello/http_hello.c $(BINDINGS)/http-hello/proxy.h
	@mkdir -p $(@D)
	$(WASM_CC) $(WASM_CFLAGS) -mexec-model=reactor -I$(BINDINGS)/http-hello -o $@ $< \
	  $(BINDINGS)/http-hello/proxy.c $(BINDINGS)/http-hello/proxy_component_type.o

$(CORE_OUT)/cli-exit.wasm: examples/cli-exit/cli_exit.c $(BINDINGS)/cli-exit/exit_code.h
	@mkdir -p $(@D)
	$(WASM_CC) $(WASM_CFLAGS) -I$(BINDINGS)/cli-exit -o $@ $< \
	  $(BINDINGS)/cli-exit/exit_code.c $(BINDINGS)/cli-exit/exit_code_component_type.o

# Components: the adapter matching each core module's shape (proxy: a reactor that imports
# only what wasi:http/proxy allows).
$(WASM_OUT)/http-hello.wasm: $(CORE_OUT)/http-hello.wasm $(WASM_COMPONENT)
	$(WASM_COMPONENT) new --adapter proxy $< -o $@

$(WASM_OUT)/cli-exit.wasm: $(CORE_OUT)/cli-exit.wasm $(WASM_COMPONENT)
	$(WASM_COMPONENT) new --adapter command $< -o $@

examples: $(addprefix $(WASM_OUT)/,$(addsuffix .wasm,$(EXAMPLES) $(TEST_PROGRAMS) $(COMPONENTS))) \
          $(WASM_OUT)/pause

# One OCI image tarball per example, importable with `ctr images import`. Components say
# `os.version: wasip2` (still platform wasi/wasm; see wasm-oci-pack's image::Platform).
images: build examples
	@for e in $(EXAMPLES); do \
	  $(PACK) --name wasm-$$e:latest --output $(WASM_OUT)/$$e.tar $(WASM_OUT)/$$e.wasm >/dev/null && \
	  echo "$(WASM_OUT)/$$e.tar -> docker.io/library/wasm-$$e:latest"; \
	done
	@for c in $(COMPONENTS); do \
	  $(PACK) --os-version wasip2 --name wasm-$$c:latest --output $(WASM_OUT)/$$c.tar \
	    $(WASM_OUT)/$$c.wasm >/dev/null && \
	  echo "$(WASM_OUT)/$$c.tar -> docker.io/library/wasm-$$c:latest"; \
	done

install: build
	install -m 0755 $(SHIM) $(PREFIX)/bin/containerd-shim-wasmtime-v1
	install -m 0755 $(PACK) $(PREFIX)/bin/wasm-oci-pack

# Builds everything, starts a private containerd and runs the hello image with ctr.
demo: deps build images
	scripts/demo.sh

# Unit tests of every crate, then the integration tests against a private containerd.
# `cargo test` builds the shim and packer binaries itself (their crates have integration
# tests), with the same features as the tests: a separate `cargo build` would resolve
# features differently and compile wasmtime a second time.
test: deps examples
	WASM_EXAMPLES_DIR=$(CURDIR)/$(WASM_OUT) SHIM_BIN_DIR=$(BIN_DIR) \
	  $(CARGO) test --profile $(PROFILE) --workspace --no-fail-fast

check:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets -- -D warnings
	$(CARGO) fmt --manifest-path tools/wasm-component/Cargo.toml -- --check
	$(CARGO) clippy --release --locked --manifest-path tools/wasm-component/Cargo.toml \
	  --target-dir $(TOOLS_TARGET_DIR) -- -D warnings

# Built the way `make test` builds (cargo test --no-run): same features, so wasmtime is not
# compiled a second time; that also builds the shim, the packer and shim-bench.
bench: deps examples
	$(CARGO) test --profile $(PROFILE) --workspace --no-run
	WASM_EXAMPLES_DIR=$(CURDIR)/$(WASM_OUT) SHIM_BIN_DIR=$(BIN_DIR) scripts/bench.sh

# Optional tools for `make bench`'s extra columns: the wasmtime CLI (`wasmtime serve`), from
# crates.io, of the same wasmtime line as the shim. About 10 minutes to build; not needed
# otherwise.
bench-tools:
	$(CARGO) install --locked --root $(TARGET_DIR)/bench-tools wasmtime-cli@48.0.8

clean:
	$(CARGO) clean
	rm -rf $(WASM_OUT) $(TOOLS_TARGET_DIR)

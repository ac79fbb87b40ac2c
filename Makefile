# capflow — the two commands: `make run` and `make test`. Both install what is missing first (idempotent).
SHELL := /bin/bash
ROOT := $(abspath .)
export ORT_DYLIB_PATH ?= $(ROOT)/.deps/onnxruntime/libonnxruntime.so
export CAPFLOW_PYTHON ?= $(ROOT)/.venv/bin/python
export CAPFLOW_S3S_FS ?= $(ROOT)/.deps/s3s/bin/s3s-fs
CAPFLOW := $(ROOT)/target/release/capflow

.PHONY: setup setup-s3 setup-bench setup-browser build run test bench lint fuzz model model-classical samples clean

setup:            ## system packages, ONNX Runtime library, Python readers (only what is missing)
	@tools/setup.sh

setup-s3:         ## the S3-compatible test server (s3s-fs)
	@tools/setup-s3.sh

setup-browser:    ## headless Chromium for the dashboard test (skipped with a message where it cannot be installed)
	@tools/setup-browser.sh || true

setup-bench: setup ## the baseline's extra Python package (OpenCV), only for `make bench`
	@.venv/bin/python -c "import cv2" 2>/dev/null || .venv/bin/python -m pip install -q --disable-pip-version-check -r tools/requirements-bench.txt

build: setup
	cargo build --release -p capflow

run: build        ## the bundled demo: samples/ → Parquet in ./capflow-out
	$(CAPFLOW) run

test: setup setup-s3 setup-browser  ## every test: unit, decoding, end-to-end, S3, independent readers, the dashboard in Chromium
	CAPFLOW_REQUIRE_S3=1 CAPFLOW_REQUIRE_BROWSER=$$(command -v chromium >/dev/null && echo 1 || echo 0) \
	  cargo test --workspace --no-fail-fast

bench: build setup-bench  ## every benchmark, ratios measured in one run (see docs/benchmarks.md); BENCH_ARGS="--only aggregation" for a part
	$(CAPFLOW) bench $(BENCH_ARGS)

lint:
	cargo fmt --all --check
	cargo clippy --workspace --all-targets -- -D warnings
	RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps

fuzz:             ## cargo-fuzz: config, manifest, model card and frame-preprocessing targets, FUZZ_SECONDS (60) each
	FUZZ_SECONDS=$(or $(FUZZ_SECONDS),60) tools/fuzz.sh $(FUZZ_TARGETS)

model: setup      ## retrain the learned model from a seed on the CPU (about an hour; not part of test)
	models/train/make-model.sh

model-classical: setup  ## rebuild the classical detector's ONNX graph from its script
	$(CAPFLOW_PYTHON) models/build_classical.py

samples: build    ## regenerate the bundled demo clips (deterministic)
	tools/make-samples.sh $(CAPFLOW)

clean:
	rm -rf capflow-out bench-out

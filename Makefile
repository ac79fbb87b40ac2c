# capflow — the two commands: `make run` and `make test`. Both install what is missing first (idempotent).
SHELL := /bin/bash
ROOT := $(abspath .)
export ORT_DYLIB_PATH ?= $(ROOT)/.deps/onnxruntime/libonnxruntime.so
export CAPFLOW_PYTHON ?= $(ROOT)/.venv/bin/python
export CAPFLOW_S3S_FS ?= $(ROOT)/.deps/s3s/bin/s3s-fs
CAPFLOW := $(ROOT)/target/release/capflow

.PHONY: setup setup-s3 build run test bench lint model model-classical samples clean

setup:            ## system packages, ONNX Runtime library, Python readers (only what is missing)
	@tools/setup.sh

setup-s3:         ## the S3-compatible test server (s3s-fs)
	@tools/setup-s3.sh

build: setup
	cargo build --release -p capflow

run: build        ## the bundled demo: samples/ → Parquet in ./capflow-out
	$(CAPFLOW) run

test: setup setup-s3  ## every test: unit, decoding, end-to-end, S3, independent readers
	CAPFLOW_REQUIRE_S3=1 cargo test --workspace --no-fail-fast

bench: build      ## throughput on a generated 1080p clip, with its bounds measured in the same run
	$(CAPFLOW) bench

lint:
	cargo fmt --all --check
	cargo clippy --workspace --all-targets -- -D warnings
	RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps

model: setup      ## retrain the learned model from a seed on the CPU (about an hour; not part of test)
	models/train/make-model.sh

model-classical: setup  ## rebuild the classical detector's ONNX graph from its script
	$(CAPFLOW_PYTHON) models/build_classical.py

samples: build    ## regenerate the bundled demo clips (deterministic)
	tools/make-samples.sh $(CAPFLOW)

clean:
	rm -rf capflow-out bench-out

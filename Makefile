# Pleura: the verbs a person uses. Everything builds with the release profile (dependencies
# optimised), so tests, demo and benchmarks share one build.

CARGO ?= cargo
RELEASE := target/release
DEMO := target/demo
PACK ?= models/default
FRAMES ?= 300

.PHONY: setup build demo test lint fmt default-pack montage clean-demo check-onnx

## setup: check the toolchain (Rust >= 1.95 with cargo) and fetch dependencies
setup:
	@command -v $(CARGO) >/dev/null || { echo "error: cargo not found: install Rust 1.95 or newer (rustup.rs)"; exit 1; }
	@$(CARGO) --version
	$(CARGO) fetch --locked

## build: the runtime (pleura) and the trainer (pleura-train)
build: setup
	$(CARGO) build --release --locked --workspace

## demo: phantom data -> shared backbone + heads + per-task networks -> pack -> live run with latency report
demo: build
	rm -rf $(DEMO) && mkdir -p $(DEMO)
	$(RELEASE)/pleura-train phantom --out $(DEMO)/data --clips 96 --frames 12 --seed 0
	$(RELEASE)/pleura-train build-pack --data $(DEMO)/data --out $(DEMO)/pack --seed 0
	$(RELEASE)/pleura info $(DEMO)/pack
	$(RELEASE)/pleura run --pack $(DEMO)/pack --source phantom:1 --frames $(FRAMES) \
		--output $(DEMO)/run.jsonl --summary $(DEMO)/summary.json
	@echo "per-frame records: $(DEMO)/run.jsonl (first line below); summary: $(DEMO)/summary.json"
	@head -n 1 $(DEMO)/run.jsonl

## test: unit and integration tests of both crates (release profile: burn and tract optimised)
test: setup
	$(CARGO) test --release --locked --workspace

## lint: formatting and clippy with warnings as errors
lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --release --locked --workspace --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

## default-pack: rebuild models/default from phantom data (the command recorded in its manifest)
default-pack: build
	rm -rf target/default-pack-data
	$(RELEASE)/pleura-train phantom --out target/default-pack-data --clips 96 --frames 12 --seed 0
	rm -rf $(PACK)
	$(RELEASE)/pleura-train build-pack --data target/default-pack-data --out $(PACK) --seed 0
	$(RELEASE)/pleura info $(PACK)

## montage: regenerate the README's phantom sample montage
montage: build
	$(CARGO) run --release --locked --example phantom_montage -- docs/phantom_montage.png 256 1 4 2

clean-demo:
	rm -rf $(DEMO)

## check-onnx: cross-check a pack with onnx.checker and onnxruntime (Python peers, not the product)
check-onnx:
	python3 -m pip install --quiet onnx onnxruntime numpy
	python3 tools/check_pack.py $(PACK)

# Pleura: the verbs a person uses. Everything builds with the release profile (dependencies
# optimised), so tests, demo and benchmarks share one build.

CARGO ?= cargo
RELEASE := target/release
DEMO := target/demo
PACK ?= models/default
# One pass of the phantom scan: 8 zones of 4 s (100 frames) and 0.4 s transitions.
FRAMES ?= 880
# Short self-supervised pretraining that fits a 2-core CPU in minutes (configs/phantom.toml:
# AdamW rather than the recipe's LARS, whose trust ratio makes tiny steps at batch 32; positive
# pairs from nearby frames of a clip). Then the pack: 200 steps of supervised multi-task
# fine-tuning of the shared backbone before it is frozen for the heads (docs/phantom-heads.md:
# frozen features of so short a run leave the heads at 0.70-0.87 AUC).
PRETRAIN_METHOD ?= simclr
PRETRAIN_ARGS ?= --config configs/phantom.toml --steps 600 --warmup-steps 60 --seed 0
PACK_ARGS ?= --shared-steps 200

# $(call ssl_pack,DATA,RUN,PACK): phantom cohort -> SimCLR pretraining -> heads + per-task networks -> pack
define ssl_pack
	rm -rf $(1) $(2) $(3)
	$(RELEASE)/pleura-train phantom --out $(1) --clips 192 --frames 12 --seed 0
	$(RELEASE)/pleura-train pretrain --data $(1) --out $(2) --method $(PRETRAIN_METHOD) $(PRETRAIN_ARGS)
	$(RELEASE)/pleura-train build-pack --data $(1) --pretrained $(2) --out $(3) --seed 0 $(PACK_ARGS)
endef

.PHONY: setup doctor build demo test lint fmt default-pack montage clean-demo check-onnx ssl-evidence \
	bench-pretrain bench-serve check-gpu

## setup: check what the build needs (tools/doctor.sh: Rust >= 1.95, libclang as bindgen finds
## it, ffmpeg, the plot font), install what is missing with apt-get when root, fetch dependencies
setup:
	@bash tools/doctor.sh --install
	$(CARGO) fetch --locked

## doctor: one line per prerequisite, found (where) or missing (and the command that installs it)
doctor:
	@bash tools/doctor.sh

## build: the runtime (pleura) and the trainer (pleura-train)
build: setup
	$(CARGO) build --release --locked --workspace

## demo: phantom data -> SSL pretraining -> heads + per-task networks -> pack -> live run with latency report
demo: build
	mkdir -p $(DEMO)
	$(call ssl_pack,$(DEMO)/data,$(DEMO)/pretrain,$(DEMO)/pack)
	$(RELEASE)/pleura info $(DEMO)/pack
	$(RELEASE)/pleura run --pack $(DEMO)/pack --source phantom:1 --frames $(FRAMES) \
		--output $(DEMO)/run.jsonl --summary $(DEMO)/summary.json
	@echo "per-frame records: $(DEMO)/run.jsonl (first line below); summary: $(DEMO)/summary.json"
	@head -n 1 $(DEMO)/run.jsonl

## test: unit and integration tests of both crates (release profile: burn and tract optimised)
test: setup
	$(CARGO) test --release --locked --workspace --features pleura/serve

## lint: formatting and clippy with warnings as errors
lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --release --locked --workspace --all-targets --features pleura/serve -- -D warnings

fmt:
	$(CARGO) fmt --all

## default-pack: rebuild models/default from phantom data (the command recorded in its manifest)
default-pack: build
	$(call ssl_pack,target/default-pack/data,target/default-pack/pretrain,$(PACK))
	$(RELEASE)/pleura info $(PACK)

## montage: regenerate the README's phantom sample montage
montage: build
	$(CARGO) run --release --locked --example phantom_montage -- docs/phantom_montage.png 256 1 4 2

clean-demo:
	rm -rf $(DEMO)

## soak: $(SOAK_FRAMES) phantom frames through `pleura run` (records to /dev/null) to show that
## memory stays flat: prints the summary with resident memory at start and end, and the wall time
.PHONY: soak
SOAK_FRAMES ?= 100000
SOAK_OUT := target/soak
soak:
	$(CARGO) build --release --locked -p pleura
	@mkdir -p $(SOAK_OUT)
	@start=$$(date +%s); \
	$(RELEASE)/pleura run --pack $(PACK) --frames $(SOAK_FRAMES) --output /dev/null \
		--summary $(SOAK_OUT)/summary.json 2> $(SOAK_OUT)/stderr.txt; status=$$?; \
	cat $(SOAK_OUT)/stderr.txt; echo "wall time: $$(( $$(date +%s) - start )) s"; exit $$status
	@grep -E '"rss_(start|end|peak)_kib"' $(SOAK_OUT)/summary.json

## check-onnx: cross-check a pack with onnx.checker and onnxruntime (Python peers, not the product)
check-onnx:
	python3 -m pip install --quiet onnx onnxruntime numpy
	python3 tools/check_pack.py $(PACK)

## ssl-evidence: short pretraining per SSL method vs random init, linear probes on frozen
## features, AUC on the local test split and on an external phantom cohort (another seed)
EVIDENCE := target/ssl-evidence
SSL_METHODS ?= simclr barlow vicreg
ssl-evidence: build
	rm -rf $(EVIDENCE) && mkdir -p $(EVIDENCE)
	$(RELEASE)/pleura-train phantom --out $(EVIDENCE)/data --clips 96 --frames 12 --seed 0
	$(RELEASE)/pleura-train phantom --out $(EVIDENCE)/external --clips 48 --frames 8 --seed 7
	for m in $(SSL_METHODS); do \
		$(RELEASE)/pleura-train pretrain --data $(EVIDENCE)/data --out $(EVIDENCE)/pretrain-$$m \
			$(PRETRAIN_ARGS) --method $$m || exit 1; done
	$(RELEASE)/pleura-train probe --data $(EVIDENCE)/data --head linear --seeds 0,1,2 \
		$(foreach m,$(SSL_METHODS),--backbone $(EVIDENCE)/pretrain-$(m)) \
		--external phantom-seed7=$(EVIDENCE)/external --out $(EVIDENCE)/probe

## bench: the shared backbone + heads against the serial per-task networks on $(PACK), in
## hierarchy and all-tasks modes over the same 300 phantom frames, interleaved, one thread (as on
## a board; BENCH_ARGS="--threads 2" to change); bench.json, latency.csv, latency_histogram.png
.PHONY: bench
BENCH_OUT ?= target/bench
BENCH_ARGS ?= --frames 300 --threads 1
bench:
	$(CARGO) build --release --locked -p pleura
	$(RELEASE)/pleura bench --pack $(PACK) $(BENCH_ARGS) --out $(BENCH_OUT)
	@echo "benchmark report: $(BENCH_OUT)/bench.json"

## bench-serve: what the live view costs a frame, nobody watching and one viewer reading the
## stream, against no server, interleaved (tools/bench_serve.py; docs/bedside.md)
bench-serve:
	$(CARGO) build --release --locked -p pleura --features serve
	python3 tools/bench_serve.py --pleura $(RELEASE)/pleura --pack $(PACK) --out $(BENCH_OUT)/serve.json

## bench-pretrain: one pretraining step, burn vs PyTorch + lightly (PyPI, a measuring peer),
## interleaved in one run; JSON in target/bench/pretrain_step.json
BENCH_VENV ?= target/bench/venv
bench-pretrain: build
	test -x $(BENCH_VENV)/bin/python || python3 -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/python -c "import torch, torchvision, lightly" 2>/dev/null || \
		$(BENCH_VENV)/bin/pip install --quiet torch torchvision lightly==1.6.0
	$(BENCH_VENV)/bin/python tools/bench_pretrain.py --trainer $(RELEASE)/pleura-train \
		--out target/bench/pretrain_step.json

## check-gpu: the trainer's GPU backends (cuda, wgpu) type-check on a machine without a GPU.
## DOCS_RS=1 skips the LLVM bundle that cubecl-cuda downloads when it builds for real.
check-gpu:
	DOCS_RS=1 $(CARGO) check --release --locked -p pleura-trainer --features cuda,wgpu

# Fragments: the V4L2 test VM (make test-v4l2), the ARM cross builds (make cross-aarch64 ...),
# the engines benchmark (make bench-engines) and the COVID-BLUES evaluation (make covid-blues,
# covid-blues-long, covid-blues-ablation).
include mk/v4l2.mk
include mk/cross.mk
include mk/engines.mk
include mk/covid-blues.mk

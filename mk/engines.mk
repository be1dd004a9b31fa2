# Engines benchmark (issue 8): the default pack's backbone in tract (as `pleura run` runs it),
# in the runtime's optional `ort` engine, and in onnxruntime from PyPI (a measuring peer),
# interleaved in one run -> target/bench/engines.json. See docs/performance/inference.md.
# Included by the top-level Makefile; also works alone: `make -f mk/engines.mk bench-engines`.
# Run from the repository root.

_engines_saved_goal := $(.DEFAULT_GOAL)
_engines_standalone := $(filter $(firstword $(MAKEFILE_LIST)),$(lastword $(MAKEFILE_LIST)))

ENGINES_CARGO ?= cargo
# A build of pleura with the `ort` feature, kept apart from target/release (the lean build).
ENGINES_TARGET_DIR ?= target/engines
ENGINES_PLEURA := $(ENGINES_TARGET_DIR)/release/pleura
# Python with onnxruntime, onnx and numpy: a venv made here unless ENGINES_PYTHON names one.
ENGINES_VENV ?= target/bench/venv-engines
ENGINES_PYTHON ?= $(ENGINES_VENV)/bin/python
ENGINES_PIP ?= onnxruntime==1.32.0 onnx==1.23.2 numpy
ENGINES_PACK ?= models/default
ENGINES_OUT ?= target/bench/engines.json
# Extra options of tools/bench_engines.py, e.g. `--rounds 80` or `--ort-lib none`.
ENGINES_ARGS ?= --profile

.PHONY: bench-engines bench-engines-build bench-engines-python engines-help

## engines-help: list this fragment's targets (the default goal of `make -f mk/engines.mk`)
engines-help:
	@sed -n 's/^## //p' mk/engines.mk

## bench-engines: tract vs the ort engine vs onnxruntime (PyPI) on the backbone, 128/224, 1/2 threads -> target/bench/engines.json
bench-engines: bench-engines-build bench-engines-python
	$(ENGINES_PYTHON) tools/bench_engines.py --pleura $(ENGINES_PLEURA) --pack $(ENGINES_PACK) \
		--out $(ENGINES_OUT) $(ENGINES_ARGS)

## bench-engines-build: pleura with the `ort` engine (cargo feature `ort`) into $(ENGINES_TARGET_DIR)
bench-engines-build:
	CARGO_TARGET_DIR=$(ENGINES_TARGET_DIR) $(ENGINES_CARGO) build --release --locked -p pleura --features ort

## bench-engines-python: a venv with onnxruntime, onnx and numpy (skipped when ENGINES_PYTHON already has them)
bench-engines-python:
	@if ! $(ENGINES_PYTHON) -c 'import onnxruntime, onnx, numpy' 2>/dev/null; then \
		echo "bench-engines: making $(ENGINES_VENV) with $(ENGINES_PIP)"; \
		python3 -m venv $(ENGINES_VENV) && $(ENGINES_VENV)/bin/pip install -q $(ENGINES_PIP); \
	fi

ifneq ($(_engines_standalone),)
.DEFAULT_GOAL := engines-help
else
# Included: restore the includer's goal; if it had none yet, clearing lets its next target win.
.DEFAULT_GOAL := $(_engines_saved_goal)
endif

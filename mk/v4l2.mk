# V4L2 virtual-machine harness: Debian's kernel under QEMU with the vivid capture driver.
# Works standalone (`make -f mk/v4l2.mk vm-smoke`) and included from the main Makefile; paths
# are relative to the repository root. See tools/v4l2-vm/README.md.

# Never take over the including Makefile's default goal (see the end of this file).
_v4l2_saved_goal := $(.DEFAULT_GOAL)
_v4l2_standalone := $(filter $(firstword $(MAKEFILE_LIST)),$(lastword $(MAKEFILE_LIST)))

V4L2_VM := tools/v4l2-vm/run.sh
V4L2_VM_DIR := target/v4l2-vm
V4L2_VM_TIMEOUT ?= 300
V4L2_VM_ARGS ?=
V4L2_CC ?= gcc
V4L2_SMOKE_PAYLOAD := $(V4L2_VM_DIR)/smoke-payload
# Debian packages the harness needs (gcc + libc6-dev only for the static smoke binary).
V4L2_VM_PKGS := qemu-system-x86 busybox-static kmod cpio xz-utils gcc libc6-dev

.PHONY: vm-smoke v4l2-vm-deps v4l2-vm-kernel v4l2-vm-help test-v4l2 v4l2-static

## v4l2-vm-help: list this fragment's targets (the default goal of `make -f mk/v4l2.mk`)
v4l2-vm-help:
	@sed -n 's/^## //p' mk/v4l2.mk

## vm-smoke: boot the vivid VM and stream/inject errors with tools/v4l2-vm/smoke.c
vm-smoke: $(V4L2_SMOKE_PAYLOAD)/smoke
	cp tools/v4l2-vm/smoke.sh $(V4L2_SMOKE_PAYLOAD)/smoke.sh
	bash $(V4L2_VM) --payload $(V4L2_SMOKE_PAYLOAD) --script smoke.sh \
		--timeout $(V4L2_VM_TIMEOUT) $(V4L2_VM_ARGS)

$(V4L2_SMOKE_PAYLOAD)/smoke: tools/v4l2-vm/smoke.c
	@mkdir -p $(@D)
	$(V4L2_CC) -static -O2 -Wall -Wextra -o $@ $<

# Statically linked runtime and capture tests for the VM (its initramfs has no libc).
V4L2_TRIPLE := $(shell rustc -vV 2>/dev/null | sed -n 's/^host: //p')
V4L2_STATIC := target/$(V4L2_TRIPLE)/release
V4L2_PAYLOAD := $(V4L2_VM_DIR)/payload
V4L2_CARGO_STATIC = RUSTFLAGS="-C target-feature=+crt-static" cargo

## v4l2-static: build `pleura` and the capture tests (tests/v4l2_vivid.rs) statically linked
## (one cargo call: building an integration test builds the binary too, with the same features)
v4l2-static:
	$(V4L2_CARGO_STATIC) test --release --locked -p pleura --test v4l2_vivid --no-run \
		--target $(V4L2_TRIPLE) --message-format=json \
		| sed -n 's/.*"executable":"\([^"]*v4l2_vivid[^"]*\)".*/\1/p' | tail -n 1 > $(V4L2_VM_DIR).testbin
	@test -s $(V4L2_VM_DIR).testbin || { echo "error: the v4l2_vivid test binary was not built"; exit 1; }

## test-v4l2: capture tests against a real kernel driver: vivid in Debian's kernel under QEMU
## (formats YUYV/NV12/GREY/RGB24, dropped and corrupt buffers, disconnect + reconnect,
## record/replay, `pleura devices|calibrate|record|run` on the vivid stream)
test-v4l2: v4l2-vm-deps v4l2-static
	rm -rf $(V4L2_PAYLOAD) && mkdir -p $(V4L2_PAYLOAD)
	cp $(V4L2_STATIC)/pleura $(V4L2_PAYLOAD)/pleura
	cp "$$(cat $(V4L2_VM_DIR).testbin)" $(V4L2_PAYLOAD)/v4l2_vivid
	cp -r models/default $(V4L2_PAYLOAD)/pack
	cp tests/v4l2/vm-tests.sh tests/v4l2/board.toml $(V4L2_PAYLOAD)/
	bash $(V4L2_VM) --payload $(V4L2_PAYLOAD) --script vm-tests.sh \
		--timeout $(V4L2_VM_TIMEOUT) $(V4L2_VM_ARGS)

## v4l2-vm-kernel: download/extract the Debian kernel + vivid modules into target/v4l2-vm
v4l2-vm-kernel:
	bash tools/v4l2-vm/fetch-kernel.sh $(V4L2_VM_DIR)

## v4l2-vm-deps: install the harness's Debian packages (as root), else list them
v4l2-vm-deps:
	@missing=""; \
	for p in $(V4L2_VM_PKGS); do \
		dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'install ok installed' || missing="$$missing $$p"; \
	done; \
	if [ -z "$$missing" ]; then echo "v4l2-vm-deps: all installed ($(V4L2_VM_PKGS))"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "v4l2-vm-deps: installing$$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	else echo "v4l2-vm-deps: please install:$$missing  (sudo apt-get install$$missing)"; exit 1; fi

ifneq ($(_v4l2_standalone),)
.DEFAULT_GOAL := v4l2-vm-help
else
# Included: restore the includer's goal; if it had none yet, clearing lets its next target win.
.DEFAULT_GOAL := $(_v4l2_saved_goal)
endif

# Edge targets: cross builds of the runtime for ARM boards, run and checked here under qemu-user.
# Included by the top-level Makefile; also works alone: `make -f mk/cross.mk cross-check-aarch64`.
# Run from the repository root. Profiles: targets/*.env; scripts: tools/cross/; guide:
# docs/deployment.md. BOARD=pi4|pi5|... picks a board's code generation (default: generic).

_cross_previous_goal := $(.DEFAULT_GOAL)
CROSS_BOARD = $(if $(BOARD),$(BOARD),generic)

.PHONY: cross-help cross-setup cross-setup-aarch64 cross-setup-armv7 cross cross-aarch64 \
	cross-armv7 cross-x86_64 cross-check cross-check-aarch64 cross-check-armv7 cross-check-x86_64 \
	cross-size

cross-help:
	@sed -n 's/^## \(cross[^:]*\): /  make \1\t/p' mk/cross.mk

## cross-setup: install Debian's cross toolchain (rustc-web, cargo-web, gcc cross, target std, qemu-user-static; apt as root)
cross-setup:
	tools/cross/setup.sh all
cross-setup-aarch64:
	tools/cross/setup.sh aarch64
cross-setup-armv7:
	tools/cross/setup.sh armv7

## cross: build the runtime for aarch64 and armv7 (release-lto: fat LTO, one codegen unit, stripped)
cross: cross-aarch64 cross-armv7

## cross-aarch64: build target/cross/aarch64-unknown-linux-gnu/release-lto/pleura (BOARD=pi4|pi5|... to tune)
cross-aarch64: cross-setup-aarch64
	BOARD=$(CROSS_BOARD) tools/cross/build.sh aarch64

## cross-armv7: build target/cross/armv7-unknown-linux-gnueabihf/release-lto/pleura
cross-armv7: cross-setup-armv7
	BOARD=$(CROSS_BOARD) tools/cross/build.sh armv7

## cross-x86_64: the same release-lto build for x86_64 boards (Debian's Rust, target/cross)
cross-x86_64:
	BOARD=$(CROSS_BOARD) tools/cross/build.sh x86_64

## cross-check-aarch64: run the aarch64 build under qemu-user; outputs must match x86_64's (f32 1e-4, int8 1e-3)
cross-check-aarch64: cross-setup-aarch64
	BOARD=$(CROSS_BOARD) tools/cross/check.sh aarch64

## cross-check-armv7: run the armv7 build under qemu-user; outputs must match x86_64's (f32 1e-4, int8 1e-3)
cross-check-armv7: cross-setup-armv7
	BOARD=$(CROSS_BOARD) tools/cross/check.sh armv7

cross-check-x86_64:
	BOARD=$(CROSS_BOARD) tools/cross/check.sh x86_64

cross-check: cross-check-aarch64 cross-check-armv7

## cross-size: binary size and peak RSS of a 1,000-frame run per target (table for docs/edge.md)
cross-size: cross-setup
	tools/cross/measure.sh aarch64 armv7 x86_64

# Standalone (`make -f mk/cross.mk`): list the verbs. Included: leave the including Makefile's
# default goal alone (an empty one means "the next target it defines").
ifeq ($(firstword $(MAKEFILE_LIST)),mk/cross.mk)
.DEFAULT_GOAL := cross-help
else
.DEFAULT_GOAL := $(_cross_previous_goal)
endif

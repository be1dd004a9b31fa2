#!/bin/sh
# Builds the runtime (crate pleura, binary pleura; never the trainer) for one target with the
# board profile `release-lto` (fat LTO, one codegen unit, stripped, panic=abort), using Debian's
# Rust and cross toolchain (install: tools/cross/setup.sh, or `make cross-setup`).
# Usage: [BOARD=pi5] [FEATURES=...] [OPT_LEVEL=3|2|s|z] [LINK=static|dynamic] [EXTRA_RUSTFLAGS=...]
#        [CARGO_TARGET_DIR=...]
#        tools/cross/build.sh aarch64|armv7|x86_64
# Prints the path of the binary on its last line.
set -eu
cd "$(dirname "$0")/../.."
. tools/cross/env.sh
cross_resolve "${1:?usage: $0 aarch64|armv7|x86_64}"

[ -x "$CROSS_CARGO" ] && [ -x "$RUSTC" ] || {
    echo "error: $CROSS_CARGO / $RUSTC missing: run \`make cross-setup\` (tools/cross/setup.sh)" >&2
    exit 1
}
if [ "$TRIPLE" != x86_64-unknown-linux-gnu ] && ! command -v "$LINKER" >/dev/null; then
    echo "error: linker $LINKER missing: run \`make cross-setup\`" >&2
    exit 1
fi

set -- build --locked --profile release-lto --target "$TRIPLE" -p pleura --bin pleura
if [ -n "${OPT_LEVEL:-}" ]; then
    # e.g. OPT_LEVEL=3: optimise everything for speed instead of the profile's size ("z"; tract's
    # kernels at 3).
    set -- "$@" --config "profile.release-lto.opt-level=$(echo "$OPT_LEVEL" | sed 's/^[sz]$/"&"/')"
fi
# Board builds leave out the default feature `threads` (tract's rayon pool: 2.5 MB of the
# binary): `pleura run` runs tract on the calling thread anyway. FEATURES=threads,v4l2,serve puts
# it back for `pleura bench --threads N`; FEATURES="" also drops V4L2 and the live view. The live
# view (`serve`, docs/bedside.md) is in: 0.26 MB on aarch64 (8.94 MB with it).
set -- "$@" --no-default-features --features "${FEATURES-v4l2,serve}"
echo "+ [$TRIPLE board=$BOARD${target_rustflags:+ target rustflags '$target_rustflags'}] $CROSS_CARGO $*" >&2
start=$(date +%s)
"$CROSS_CARGO" "$@"
echo "built in $(( $(date +%s) - start )) s: $(stat -c %s "$BIN") bytes" >&2
echo "$BIN"

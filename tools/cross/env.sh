# Sourced by tools/cross/*.sh: resolves a target name to its profile in targets/ and exports the
# build environment for Debian's Rust (/usr/bin/cargo, /usr/bin/rustc) and the GNU cross toolchain.
# In: $1 = aarch64 | armv7 | x86_64 | a full triple; $BOARD (default generic); optional $LINK
# (static|dynamic), $EXTRA_RUSTFLAGS (more target-only rustc flags) and
# $CARGO_TARGET_DIR (default target/cross, or target/cross-$BOARD for a tuned board build).
# Out: TRIPLE, PROFILE_FILE, BIN (the built binary), RUNNER (how to run it here), CHECK_RUNS,
# and the build environment (exported).

cross_resolve() {
    case "$1" in
        aarch64|arm64|aarch64-unknown-linux-gnu) TRIPLE=aarch64-unknown-linux-gnu ;;
        armv7|armhf|arm|armv7-unknown-linux-gnueabihf) TRIPLE=armv7-unknown-linux-gnueabihf ;;
        x86_64|amd64|x86_64-unknown-linux-gnu) TRIPLE=x86_64-unknown-linux-gnu ;;
        *) echo "error: unknown target '$1' (aarch64, armv7 or x86_64)" >&2; return 2 ;;
    esac
    PROFILE_FILE="targets/$TRIPLE.env"
    [ -f "$PROFILE_FILE" ] || { echo "error: no profile $PROFILE_FILE" >&2; return 2; }
    # shellcheck disable=SC1090
    . "./$PROFILE_FILE"

    BOARD="${BOARD:-generic}"
    # Board names may carry dashes (jetson-orin); profile variables use underscores.
    board_var="BOARD_$(echo "$BOARD" | tr '-' '_')"
    if ! eval "[ \"\${$board_var+set}\" = set ]"; then
        echo "error: board '$BOARD' is not in $PROFILE_FILE; known:" \
            "$(grep -o '^BOARD_[a-z0-9_]*' "$PROFILE_FILE" | sed 's/^BOARD_//' | tr '\n' ' ')" >&2
        return 2
    fi
    eval "BOARD_RUSTFLAGS=\"\${$board_var}\""

    if [ "$BOARD" = generic ]; then
        CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target/cross}"
    else
        CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target/cross-$BOARD}"
    fi
    export CARGO_TARGET_DIR
    BIN="$CARGO_TARGET_DIR/$TRIPLE/release-lto/pleura"

    # Debian's Rust, never rustup's: it is the one with the target's std installed.
    CROSS_CARGO="${CROSS_CARGO:-/usr/bin/cargo}"
    export RUSTC="${CROSS_RUSTC:-/usr/bin/rustc}"
    export RUSTDOC="${CROSS_RUSTDOC:-/usr/bin/rustdoc}"
    # A rustup toolchain override must not leak into /usr/bin/cargo's subprocesses.
    unset RUSTUP_TOOLCHAIN

    upper=$(echo "$TRIPLE" | tr 'a-z-' 'A-Z_')
    lower=$(echo "$TRIPLE" | tr '-' '_')
    if [ -n "$LINKER" ]; then
        export "CARGO_TARGET_${upper}_LINKER=$LINKER"
        # cc-rs (tract-linalg's assembly kernels) and bindgen (v4l2-sys-mit) for the target.
        export "CC_${lower}=$LINKER"
        export "AR_${lower}=${LINKER%-gcc}-ar"
        export "BINDGEN_EXTRA_CLANG_ARGS_${lower}=--sysroot=$SYSROOT -I$SYSROOT/include"
    fi
    # Target-only rustc flags (build scripts and proc macros stay host code): the profile's link
    # mode (LINK=dynamic drops it), then the board's tuning.
    case "${LINK:-profile}" in
        dynamic) LINK_RUSTFLAGS="" ;;
        static) LINK_RUSTFLAGS="-C target-feature=+crt-static" ;;
        *) LINK_RUSTFLAGS="${LINK_RUSTFLAGS:-}" ;;
    esac
    # No unwind tables: the profile aborts on panic, so they would only serve backtraces (0.7 MB).
    target_rustflags="$(echo "$LINK_RUSTFLAGS -C force-unwind-tables=no $BOARD_RUSTFLAGS ${EXTRA_RUSTFLAGS:-}" | xargs)"
    # The target's std: Debian's libstd-rust-web-dev:ARCH in /usr/lib/rustlib, or else the
    # private sysroot that tools/cross/setup.sh unpacks when apt cannot offer it.
    if [ ! -d "/usr/lib/rustlib/$TRIPLE/lib" ] && [ -d "target/cross-sysroot/usr/lib/rustlib/$TRIPLE/lib" ]; then
        target_rustflags="--sysroot=$(pwd)/target/cross-sysroot/usr${target_rustflags:+ $target_rustflags}"
    fi
    if [ -n "$target_rustflags" ]; then
        export "CARGO_TARGET_${upper}_RUSTFLAGS=$target_rustflags"
    fi

    # How to run the binary here: qemu-user with the target's loader and libc (-L), or natively.
    if [ -n "${QEMU:-}" ]; then
        RUNNER="$QEMU -L $SYSROOT"
    else
        RUNNER=""
    fi
    # The emulated CPUs of the check: the board's own list if the profile has one.
    eval "CHECK_RUNS=\"\${CHECK_RUNS_$(echo "$BOARD" | tr '-' '_'):-\${CHECK_RUNS:-native}}\""
}

# cross_exec SPEC BIN ARGS...: runs BIN under the runner with the check entry SPEC
# (CPU[,VAR=value...]; `native` for none), killed after $RUN_TIMEOUT seconds (default 1200):
# pleura treats SIGTERM as "finish the frame", so a hung emulation also gets SIGKILL 10 s later.
cross_exec() {
    spec="$1"; shift
    cpu="${spec%%,*}"
    vars=""
    [ "$cpu" = "$spec" ] || vars=$(echo "${spec#*,}" | tr ',' ' ')
    if [ -n "$RUNNER" ]; then
        # shellcheck disable=SC2086
        env $vars timeout -k 10 "${RUN_TIMEOUT:-1200}" $RUNNER -cpu "$cpu" "$@"
    else
        # shellcheck disable=SC2086
        env $vars timeout -k 10 "${RUN_TIMEOUT:-1200}" "$@"
    fi
}

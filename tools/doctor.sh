#!/usr/bin/env bash
# What the build and the demo need, looked for the way the build itself looks for it.
#
#   tools/doctor.sh              one line per prerequisite: found (where) or missing (and the
#                                command that installs it); exit 1 when something is missing
#   tools/doctor.sh --install    the same, then installs what is missing with apt-get when run as
#                                root (otherwise prints the command) and checks again
#   tools/doctor.sh --root DIR   looks under DIR instead of / (tests of the detection itself)
#
# Prerequisites:
#   rust      cargo and rustc >= 1.95 (burn 0.22 needs it)
#   libclang  as clang-sys (bindgen, for the V4L2 bindings of the runtime's `v4l2` feature) finds
#             it: LIBCLANG_PATH, then `llvm-config --prefix`, LD_LIBRARY_PATH, /usr/lib*,
#             /usr/local/lib* (up to two levels down) and /usr/local/llvm*/lib*, for files named
#             libclang.so, libclang-*.so, libclang.so.*, libclang-*.so.*, never libclang-cpp
#             (a different library that LLVM's packages ship without libclang), and a 64-bit ELF
#   ffmpeg    ffmpeg and ffprobe (`pleura-train prepare` decodes video clips with them)
#   font      DejaVu Sans for plot labels, or PLEURA_FONT
set -uo pipefail

ROOT=""
INSTALL=0
while [ $# -gt 0 ]; do
    case "$1" in
        --install) INSTALL=1 ;;
        --root) ROOT="${2:?--root needs a directory}"; shift ;;
        -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
        *) echo "doctor: unknown argument $1" >&2; exit 2 ;;
    esac
    shift
done
ROOT="${ROOT%/}"
RUST_MIN="1.95"

# Where each prerequisite was found (empty: missing), and the Debian package that provides it.
declare -A FOUND PACKAGE HINT
PACKAGE[libclang]="libclang-dev"
PACKAGE[ffmpeg]="ffmpeg"
PACKAGE[font]="fonts-dejavu-core"
HINT[rust]="install Rust $RUST_MIN or newer: https://rustup.rs (then: rustup update)"

# A tool on PATH, or under the fake root's bin folders.
tool() {
    if [ -n "$ROOT" ]; then
        local d
        for d in /usr/local/bin /usr/bin /bin; do
            [ -x "$ROOT$d/$1" ] && { echo "$ROOT$d/$1"; return 0; }
        done
        return 1
    fi
    command -v "$1"
}

version_at_least() { # version_at_least HAVE WANT
    [ "$(printf '%s\n%s\n' "$2" "$1" | sort -V | head -n 1)" = "$2" ]
}

check_rust() {
    local cargo rustc have
    cargo=$(tool cargo) || return 0
    rustc=$(tool rustc) || return 0
    have=$("$rustc" --version 2>/dev/null | awk '{print $2}')
    if [ -n "$have" ] && version_at_least "${have%%-*}" "$RUST_MIN"; then
        FOUND[rust]="$rustc ($have), $cargo"
    else
        HINT[rust]="rustc ${have:-?} is older than $RUST_MIN: rustup update (or install from https://rustup.rs)"
    fi
}

# True when $1 is a 64-bit ELF file (clang-sys rejects other classes on a 64-bit host).
elf64() {
    [ "$(head -c 5 "$1" 2>/dev/null | od -An -tx1 | tr -d ' \n')" = "7f454c4602" ]
}

# The libclang files of directory $1, as clang-sys's patterns match them.
libclang_in() {
    local dir="$1" f name
    [ -d "$dir" ] || return 0
    for f in "$dir"/libclang.so "$dir"/libclang-*.so "$dir"/libclang.so.* "$dir"/libclang-*.so.*; do
        [ -e "$f" ] || continue
        name=${f##*/}
        case "$name" in *-cpp.*) continue ;; esac
        elf64 "$f" && echo "$f"
    done
}

check_libclang() {
    local dirs=() d pattern hit
    if [ -n "${LIBCLANG_PATH:-}" ] && [ -z "$ROOT" ]; then
        if [ -f "$LIBCLANG_PATH" ]; then
            hit=$(libclang_in "$(dirname "$LIBCLANG_PATH")" | grep -Fx "$LIBCLANG_PATH" | head -n 1)
        else
            hit=$(libclang_in "$LIBCLANG_PATH" | head -n 1)
        fi
        if [ -n "$hit" ]; then FOUND[libclang]="$hit (LIBCLANG_PATH)"; else
            HINT[libclang]="LIBCLANG_PATH=$LIBCLANG_PATH holds no libclang: unset it or point it at libclang.so"
        fi
        return 0
    fi
    local llvm_config
    if llvm_config=$(tool llvm-config) && [ -z "$ROOT" ]; then
        d=$("$llvm_config" --prefix 2>/dev/null)
        [ -n "$d" ] && dirs+=("$d/bin" "$d/lib" "$d/lib64")
    fi
    if [ -n "${LD_LIBRARY_PATH:-}" ] && [ -z "$ROOT" ]; then
        IFS=: read -r -a ld <<< "$LD_LIBRARY_PATH"
        dirs+=("${ld[@]}")
    fi
    shopt -s nullglob
    for pattern in /usr/local/llvm*/lib* /usr/local/lib*/*/* /usr/local/lib*/* /usr/local/lib* \
        /usr/lib*/*/* /usr/lib*/* /usr/lib*; do
        for d in $ROOT$pattern; do [ -d "$d" ] && dirs+=("$d"); done
    done
    shopt -u nullglob
    for d in "${dirs[@]}"; do
        hit=$(libclang_in "$d" | head -n 1)
        [ -n "$hit" ] && { FOUND[libclang]="$hit"; return 0; }
    done
    return 0
}

check_ffmpeg() {
    local ffmpeg ffprobe
    ffmpeg=$(tool ffmpeg) || return 0
    ffprobe=$(tool ffprobe) || return 0
    FOUND[ffmpeg]="$ffmpeg, $ffprobe"
}

check_font() {
    local f
    if [ -n "${PLEURA_FONT:-}" ] && [ -z "$ROOT" ]; then
        if [ -f "$PLEURA_FONT" ]; then FOUND[font]="$PLEURA_FONT (PLEURA_FONT)"; else
            HINT[font]="PLEURA_FONT=$PLEURA_FONT is not a file"
        fi
        return 0
    fi
    # The same candidates as trainer/src/eval/plots.rs.
    for f in /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf /usr/share/fonts/dejavu/DejaVuSans.ttf \
        /usr/share/fonts/TTF/DejaVuSans.ttf; do
        [ -f "$ROOT$f" ] && { FOUND[font]="$ROOT$f"; return 0; }
    done
}

NAMES=(rust libclang ffmpeg font)
check_all() {
    FOUND=()
    check_rust; check_libclang; check_ffmpeg; check_font
}

# The command that installs what is missing (apt packages only: Rust comes from rustup).
apt_command() {
    local pkgs=() n
    for n in "${NAMES[@]}"; do
        [ -z "${FOUND[$n]:-}" ] && [ -n "${PACKAGE[$n]:-}" ] && pkgs+=("${PACKAGE[$n]}")
    done
    [ ${#pkgs[@]} -gt 0 ] && echo "apt-get install -y --no-install-recommends ${pkgs[*]}"
}

report() {
    local n missing=0 how
    for n in "${NAMES[@]}"; do
        if [ -n "${FOUND[$n]:-}" ]; then
            printf '%-8s %-9s %s\n' found "$n" "${FOUND[$n]}"
        else
            missing=1
            how="${HINT[$n]:-}"
            [ -z "$how" ] && how="apt-get install -y --no-install-recommends ${PACKAGE[$n]}"
            printf '%-8s %-9s %s\n' missing "$n" "$how"
        fi
    done
    return $missing
}

check_all
if [ $INSTALL -eq 1 ] && [ -z "$ROOT" ]; then
    cmd=$(apt_command)
    if [ -n "$cmd" ]; then
        if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
            echo "doctor: $cmd"
            apt-get update -qq && DEBIAN_FRONTEND=noninteractive $cmd -qq \
                || { echo "doctor: apt-get failed" >&2; exit 1; }
            check_all
        else
            echo "doctor: not root (or no apt-get): run as root: $cmd" >&2
        fi
    fi
fi
report

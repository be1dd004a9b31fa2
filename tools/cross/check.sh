#!/bin/sh
# Runs a cross build here under qemu-user and compares it with the x86_64 build:
#   pleura info models/default                              text, identical
#   pleura run --source phantom:1 --frames 60               f32 heads, view hierarchy
#   pleura run ... --heads int8 --all-tasks                 int8 heads, every head every frame
# (per-frame JSON lines: p and p_smoothed within 1e-4 for f32 heads and 1e-3 for int8 heads,
# classes/decisions/truth exact; summaries:
# counts and agreement exact), once per emulated CPU of the profile's CHECK_RUNS, then
#   pleura bench                                            runs to completion (times meaningless)
# Usage: [BOARD=...] [FRAMES=60] [TOL=1e-4] [INT8_TOL=1e-3] [SKIP_BUILD=1] [REF_BIN=...] [BENCH=0]
#        tools/cross/check.sh aarch64|armv7|x86_64
# The reference is the host's release build, target/release/pleura, brought up to date with
# `cargo build --release -p pleura --locked` (the host toolchain, the main target dir) unless
# REF_BIN names another binary. Outputs: target/cross-check/TRIPLE[-BOARD]/.
set -eu
cd "$(dirname "$0")/../.."
target="${1:?usage: $0 aarch64|armv7|x86_64}"
FRAMES="${FRAMES:-60}"
TOL="${TOL:-1e-4}"
# int8 heads quantise their input features: where the f32 backbone differs by ~2e-5 between
# instruction sets, a feature can land on the other side of a rounding boundary and move p by one
# quantisation step (measured up to 4.4e-4 on the default pack), so they get a looser bound.
INT8_TOL="${INT8_TOL:-1e-3}"
PACK="${PACK:-models/default}"
t0=$(date +%s)
elapsed() { echo "$(( $(date +%s) - $1 )) s"; }

# 1. The x86_64 reference, before env.sh points RUSTC and CARGO_TARGET_DIR at the cross build.
if [ -z "${REF_BIN:-}" ]; then
    REF_BIN="${CARGO_TARGET_DIR:-target}/release/pleura"
    echo "== reference: ${HOST_CARGO:-cargo} build --release -p pleura --locked"
    "${HOST_CARGO:-cargo}" build --release -p pleura --locked
fi
[ -x "$REF_BIN" ] || { echo "error: no reference binary $REF_BIN" >&2; exit 1; }

# 2. The cross build (a no-op when up to date).
. tools/cross/env.sh
cross_resolve "$target"
if [ "${SKIP_BUILD:-0}" != 1 ]; then
    echo "== build: tools/cross/build.sh $target (board $BOARD)"
    tools/cross/build.sh "$target" >/dev/null
fi
[ -f "$BIN" ] || { echo "error: no binary $BIN (build it: tools/cross/build.sh $target)" >&2; exit 1; }
out="target/cross-check/$TRIPLE$([ "$BOARD" = generic ] || echo "-$BOARD")"
rm -rf "$out" && mkdir -p "$out/ref"
echo "== $TRIPLE (board $BOARD): $BIN, $(stat -c %s "$BIN") bytes; runner: ${RUNNER:-native}"
file "$BIN" 2>/dev/null | sed 's/^[^:]*: /   /' || true

run_set() { # run_set RUNSPEC DIR: the three commands into DIR
    spec="$1"; dir="$2"; mkdir -p "$dir"
    if [ "$spec" = ref ]; then x() { "$REF_BIN" "$@"; }; else x() { cross_exec "$spec" "$BIN" "$@"; }; fi
    # (`|| return`: a caller's `if` turns `set -e` off in here.)
    x info "$PACK" > "$dir/info.txt" 2> "$dir/info.stderr" || return 1
    x run --pack "$PACK" --source phantom:1 --frames "$FRAMES" \
        --output "$dir/f32.jsonl" --summary "$dir/f32.summary.json" 2> "$dir/f32.stderr" || return 1
    x run --pack "$PACK" --source phantom:1 --frames "$FRAMES" --heads int8 --all-tasks \
        --output "$dir/int8.jsonl" --summary "$dir/int8.summary.json" 2> "$dir/int8.stderr" || return 1
}

t=$(date +%s)
run_set ref "$out/ref"
echo "== x86_64 reference runs: $(elapsed "$t")"

failed=0
first=""
for spec in $CHECK_RUNS; do
    [ -n "$first" ] || first="$spec"
    dir="$out/$(echo "$spec" | tr ',=' '__')"
    t=$(date +%s)
    echo "== $TRIPLE on ${spec} ($([ -n "$RUNNER" ] && echo "qemu-user -cpu ${spec%%,*}" || echo native))"
    if ! run_set "$spec" "$dir"; then
        echo "FAILED to run (see $dir)"; failed=1; continue
    fi
    for what in "info text info.txt" "f32 jsonl f32.jsonl" "f32-summary summary f32.summary.json" \
        "int8 jsonl int8.jsonl" "int8-summary summary int8.summary.json"; do
        set -- $what
        printf '   %-13s ' "$1"
        tol=$TOL; case "$1" in int8*) tol=$INT8_TOL ;; esac
        python3 tools/cross/compare.py "$2" "$out/ref/$3" "$dir/$3" --tol "$tol" | tee "$dir/$1.compare" \
            | sed '2,$s/^/                 /' || failed=1
        grep -q '^MATCH' "$dir/$1.compare" || failed=1
    done
    echo "   ($(elapsed "$t"))"
done

if [ "${BENCH:-1}" = 1 ]; then
    t=$(date +%s)
    note="NOTE: pleura bench ran under qemu-user (TCG emulation of ${first%%,*} on this $(uname -m) host): its latencies time the emulator, not a board; they mean nothing. This run only shows that bench completes; time it on the board."
    [ -n "$RUNNER" ] || note="NOTE: native run of the $TRIPLE build: its latencies are real."
    echo "== pleura bench on ${first}"
    echo "   $note"
    # 300 frames per mode is bench's minimum; 5 warm-up frames instead of 30 save emulated time.
    if cross_exec "$first" "$BIN" bench --pack "$PACK" --frames 300 --warmup 5 --out "$out/bench" \
        > "$out/bench.txt" 2>&1; then
        sed "s/^/   $([ -n "$RUNNER" ] && echo 'emulated' || echo 'native')| /" "$out/bench.txt"
        echo "$note" >> "$out/bench.txt"
        echo "   $note"
        echo "   bench completed ($(elapsed "$t"))"
    else
        echo "   bench FAILED ($(elapsed "$t")):"; tail -n 5 "$out/bench.txt"; failed=1
    fi
fi

echo "== $TRIPLE: $([ $failed = 0 ] && echo PASS || echo FAIL) in $(elapsed "$t0"); outputs in $out"
exit $failed

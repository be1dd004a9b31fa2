#!/bin/sh
# What the board profile's size settings cost in speed, measured natively on this x86_64 machine
# (under qemu-user ARM times mean nothing): the x86_64 `release-lto` board build (opt-level "z"
# except tract-linalg, no `threads`) against the host's release build (opt-level 3), both on one
# thread, `pleura run --source phantom:1 --frames N` alternated ROUNDS times; prints each stage's
# p50 (median over the rounds) and the ratio. docs/edge.md quotes it.
# Usage: [FRAMES=1000] [ROUNDS=3] tools/cross/size_cost.sh [SIZE_BIN] [SPEED_BIN]
set -eu
cd "$(dirname "$0")/../.."
FRAMES="${FRAMES:-1000}"
ROUNDS="${ROUNDS:-3}"
PACK="${PACK:-models/default}"
size_bin="${1:-target/cross/x86_64-unknown-linux-gnu/release-lto/pleura}"
speed_bin="${2:-target/release/pleura}"
for b in "$size_bin" "$speed_bin"; do
    [ -x "$b" ] || { echo "error: no binary $b (make cross-x86_64; cargo build --release -p pleura)" >&2; exit 1; }
done
out=target/cross-report/size-cost
rm -rf "$out" && mkdir -p "$out"
i=1
while [ "$i" -le "$ROUNDS" ]; do
    for which in size speed; do
        bin=$([ "$which" = size ] && echo "$size_bin" || echo "$speed_bin")
        "$bin" run --pack "$PACK" --source phantom:1 --frames "$FRAMES" --output /dev/null \
            --summary "$out/$which.$i.json" 2>/dev/null
    done
    i=$((i + 1))
done
python3 - "$out" "$size_bin" "$speed_bin" <<'EOF'
import glob, json, os, statistics, sys
out, size_bin, speed_bin = sys.argv[1:4]
def p50s(which):
    runs = [dict(json.load(open(f))["latency_ms"]) for f in sorted(glob.glob(f"{out}/{which}.*.json"))]
    return {s: statistics.median(r[s]["p50"] for r in runs) for s in ("preprocess", "backbone", "heads")}
a, b = p50s("size"), p50s("speed")
print(f"size build  {size_bin} ({os.path.getsize(size_bin) / 1e6:.2f} MB)")
print(f"speed build {speed_bin} ({os.path.getsize(speed_bin) / 1e6:.2f} MB)")
print(f"load average {os.getloadavg()[0]:.2f}; p50 ms, median of {len(glob.glob(out + '/size.*.json'))} runs")
print("| stage | size build | speed build | ratio |")
print("|---|---|---|---|")
for s in a:
    print(f"| {s} | {a[s]:.3f} | {b[s]:.3f} | {a[s] / b[s]:.2f}x |")
EOF

#!/bin/sh
# Size and memory per target: the stripped release-lto binary's size, and the peak resident memory
# of a 1,000-frame `pleura run` on the default pack (phantom source, f32 heads, hierarchy),
# measured by /usr/bin/time -v around the process. For ARM that process is qemu-user: its peak
# includes the emulator (translation cache, its heap and binary), so tools/cross/guest_rss.py
# also samples /proc/PID/smaps to split the peak into the program's share and qemu's own.
# Usage: [FRAMES=1000] [SKIP_BUILD=1] tools/cross/measure.sh [aarch64] [armv7] [x86_64]
# Prints a Markdown table; also writes it to target/cross-report/size-rss.md.
set -eu
cd "$(dirname "$0")/../.."
FRAMES="${FRAMES:-1000}"
PACK="${PACK:-models/default}"
[ $# -gt 0 ] || set -- aarch64 armv7 x86_64
mkdir -p target/cross-report
table=target/cross-report/size-rss.md
rows=""
for target in "$@"; do
    (
        . tools/cross/env.sh
        cross_resolve "$target"
        [ "${SKIP_BUILD:-0}" = 1 ] || tools/cross/build.sh "$target" >/dev/null
        spec="${CHECK_RUNS%% *}"
        log="target/cross-report/$TRIPLE.time.txt"
        summary="target/cross-report/$TRIPLE.summary.json"
        split="target/cross-report/$TRIPLE.split.txt"
        link=$(file -b "$BIN" | grep -q 'statically linked' && echo static || echo dynamic)
        t=$(date +%s)
        if [ -n "$RUNNER" ]; then
            # shellcheck disable=SC2086
            env $(echo "$spec" | grep -q , && echo "${spec#*,}" | tr ',' ' ') \
                /usr/bin/time -v -o "$log" $RUNNER -cpu "${spec%%,*}" "$BIN" run --pack "$PACK" \
                --source phantom:1 --frames "$FRAMES" --output /dev/null --summary "$summary" \
                2>/dev/null &
            timer=$!
            qemu=""
            while [ -z "$qemu" ] && kill -0 "$timer" 2>/dev/null; do
                sleep 0.2; qemu=$(pgrep -P "$timer" | head -n 1 || true)
            done
            python3 tools/cross/guest_rss.py "$qemu" 1 > "$split"
            wait "$timer"
            how="qemu-user -cpu ${spec%%,*}"
        else
            /usr/bin/time -v -o "$log" "$BIN" run --pack "$PACK" --source phantom:1 \
                --frames "$FRAMES" --output /dev/null --summary "$summary" 2>/dev/null
            echo "- -" > "$split"
            how="native"
        fi
        secs=$(( $(date +%s) - t ))
        rss_kib=$(sed -n 's/.*Maximum resident set size (kbytes): //p' "$log")
        size=$(stat -c %s "$BIN")
        frames=$(python3 -c "import json;print(json.load(open('$summary'))['frames'])")
        read -r guest own _ < "$split"
        awk -v t="$TRIPLE" -v l="$link" -v size="$size" -v rss="$rss_kib" -v guest="$guest" \
            -v own="$own" -v how="$how" -v frames="$frames" -v secs="$secs" 'BEGIN {
            split_text = (guest == "-") ? "(all of it)" : sprintf("%.1f MiB / %.1f MiB", guest / 1024, own / 1024)
            printf "| %s | %s | %.2f MB | %.1f MiB | %s | %s, %d frames in %d s |\n",
                t, l, size / 1e6, rss / 1024, split_text, how, frames, secs }'
    ) > "target/cross-report/$target.row" || { echo "error: $target failed" >&2; exit 1; }
    rows="$rows$(cat "target/cross-report/$target.row")
"
done
{
    echo "| target | link | stripped binary | peak RSS (/usr/bin/time -v) | program / qemu's own, at the program's peak (smaps) | run |"
    echo "|---|---|---|---|---|---|"
    printf '%s' "$rows"
} | tee "$table"

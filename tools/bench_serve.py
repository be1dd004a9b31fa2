#!/usr/bin/env python3
"""What the live view costs: `pleura run` on the phantom without `--serve`, with `--serve` and
nobody watching, and with `--serve` and one viewer reading `/stream.mjpg` as fast as it comes,
interleaved round by round (so that the three see the same machine load). Reports per variant
the median over rounds of the run's per-frame `total` latency p50 and p99 (ms) and its fps, and
the ratios to the run without the server.

    python3 tools/bench_serve.py --pleura target/release/pleura --pack models/default \
        --frames 1500 --rounds 5 --out target/bench/serve.json

The binary must be built with `--features serve`. Standard library only.
"""

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request


def run(pleura, pack, frames, serve, watch, workdir):
    summary = os.path.join(workdir, "summary.json")
    cmd = [pleura, "run", "--pack", pack, "--source", "phantom:1", "--frames", str(frames),
           "--output", "/dev/null", "--summary", summary]
    if serve:
        cmd += ["--serve", "127.0.0.1:0"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    received = [0]
    stop = threading.Event()
    reader = None
    lines = []
    if serve:
        # The address line comes first; a viewer starts reading right away.
        for line in proc.stderr:
            lines.append(line)
            m = re.match(r"live view: http://([^/]+)/", line)
            if m:
                addr = m.group(1)
                break
        if watch:
            def read():
                try:
                    with urllib.request.urlopen(f"http://{addr}/stream.mjpg", timeout=30) as r:
                        while not stop.is_set():
                            chunk = r.read(65536)
                            if not chunk:
                                break
                            received[0] += len(chunk)
                except OSError:
                    pass
            reader = threading.Thread(target=read, daemon=True)
            reader.start()
    rest = proc.stderr.read()
    proc.wait()
    stop.set()
    if proc.returncode != 0:
        sys.exit(f"pleura run failed:\n{''.join(lines)}{rest}")
    with open(summary) as f:
        s = json.load(f)
    total = dict(s["latency_ms"])["total"]
    return {"p50": total["p50"], "p99": total["p99"], "fps": s["fps"], "stream_bytes": received[0]}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pleura", default="target/release/pleura")
    ap.add_argument("--pack", default="models/default")
    ap.add_argument("--frames", type=int, default=1500)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--out", default="target/bench/serve.json")
    a = ap.parse_args()
    variants = {"no_server": (False, False), "served_unwatched": (True, False),
                "served_watched": (True, True)}
    results = {k: [] for k in variants}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(a.rounds):
            order = list(variants) if r % 2 == 0 else list(reversed(list(variants)))
            for name in order:
                serve, watch = variants[name]
                results[name].append(run(a.pleura, a.pack, a.frames, serve, watch, tmp))
                print(f"round {r + 1}/{a.rounds} {name}: {results[name][-1]}", file=sys.stderr)
    med = {k: {m: statistics.median(x[m] for x in v) for m in ("p50", "p99", "fps", "stream_bytes")}
           for k, v in results.items()}
    base = med["no_server"]
    report = {"frames": a.frames, "rounds": a.rounds, "load": os.getloadavg(), "median": med,
              "ratio_to_no_server": {k: {"p50": v["p50"] / base["p50"], "fps": v["fps"] / base["fps"]}
                                     for k, v in med.items()},
              "rounds_raw": results}
    os.makedirs(os.path.dirname(a.out) or ".", exist_ok=True)
    with open(a.out, "w") as f:
        json.dump(report, f, indent=2)
    print(f"{'variant':18} {'total p50 ms':>12} {'p99 ms':>8} {'fps':>8} {'p50 ratio':>9} {'fps ratio':>9}")
    for k, v in med.items():
        r = report["ratio_to_no_server"][k]
        print(f"{k:18} {v['p50']:12.3f} {v['p99']:8.3f} {v['fps']:8.1f} {r['p50']:9.3f} {r['fps']:9.3f}")
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()

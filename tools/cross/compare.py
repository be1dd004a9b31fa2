#!/usr/bin/env python3
"""Compares a cross build's outputs with the x86_64 reference (tools/cross/check.sh).

  compare.py jsonl REF OUT [--tol 1e-4]    per-frame records of `pleura run`
  compare.py summary REF OUT               run summaries (counts, settings, agreement)
  compare.py text REF OUT                  `pleura info` output

jsonl: the same number of records; in each, every field equal except timing fields (ignored:
latency_ms, t_ms, done_ms and any *_ms / *_s / timestamp field); floats within --tol (absolute),
everything else (seq, class, decision, truth, nulls) exactly; the plan's `depthwise` by whose
kernel it is (pleura's or tract's), not by instruction set. Prints the max abs diff of `p` and
`p_smoothed` over all tasks and frames. Exit status 1 on any mismatch.
"""
import json
import math
import re
import sys

IGNORED = {"latency_ms", "t_ms", "done_ms", "timestamp", "timestamp_ms", "capture_ts"}
SUMMARY_IGNORED = {"elapsed_s", "fps", "latency_ms", "rss_start_kib", "rss_end_kib", "rss_peak_kib"}


def ignored(key, extra=()):
    return key in IGNORED or key in extra or key.endswith("_ms") or key.endswith("_us")


class Diff:
    def __init__(self, tol):
        self.tol = tol
        self.max_abs = {}  # field name -> max abs diff
        self.errors = []

    def note(self, path, msg):
        if len(self.errors) < 20:
            self.errors.append(f"{path}: {msg}")
        elif len(self.errors) == 20:
            self.errors.append("... (more differences not shown)")

    def walk(self, ref, out, path, field, extra=()):
        if isinstance(ref, bool) or isinstance(out, bool) or ref is None or out is None:
            if ref != out or type(ref) is not type(out):
                self.note(path, f"{ref!r} != {out!r}")
        elif isinstance(ref, (int, float)) and isinstance(out, (int, float)):
            if isinstance(ref, int) and isinstance(out, int):
                if ref != out:
                    self.note(path, f"{ref} != {out}")
                return
            d = abs(float(ref) - float(out))
            if math.isnan(d):
                d = 0.0 if math.isnan(ref) and math.isnan(out) else math.inf
            self.max_abs[field] = max(self.max_abs.get(field, 0.0), d)
            if d > self.tol:
                self.note(path, f"{ref!r} vs {out!r} (|diff| {d:.3g} > {self.tol:g})")
        elif isinstance(ref, dict) and isinstance(out, dict):
            keys = {k for k in ref.keys() | out.keys() if not ignored(k, extra)}
            for k in sorted(keys):
                if k not in ref or k not in out:
                    self.note(f"{path}.{k}", "present on one side only")
                elif k == "depthwise" and path.endswith(".plan"):
                    # `pleura avx512` vs `pleura neon`: whose kernel must agree, the
                    # instruction set is the machine's.
                    if str(ref[k]).split()[:1] != str(out[k]).split()[:1]:
                        self.note(f"{path}.{k}", f"{ref[k]!r} != {out[k]!r}")
                else:
                    self.walk(ref[k], out[k], f"{path}.{k}", k, extra)
        elif isinstance(ref, list) and isinstance(out, list):
            if len(ref) != len(out):
                self.note(path, f"{len(ref)} items vs {len(out)}")
            for i, (r, o) in enumerate(zip(ref, out)):
                self.walk(r, o, f"{path}[{i}]", field, extra)
        elif ref != out:
            self.note(path, f"{ref!r} != {out!r}")


def jsonl(ref_path, out_path, tol):
    with open(ref_path) as f:
        ref = [json.loads(l) for l in f if l.strip()]
    with open(out_path) as f:
        out = [json.loads(l) for l in f if l.strip()]
    diff = Diff(tol)
    if len(ref) != len(out):
        diff.note("records", f"{len(ref)} in the reference, {len(out)} here")
    tasks_run = decisions = 0
    for i, (r, o) in enumerate(zip(ref, out)):
        diff.walk(r, o, f"record {i} (seq {r.get('seq')})", "")
        for t in (r.get("tasks") or {}).values():
            if t is not None:
                tasks_run += 1
                decisions += t.get("decision") is not None
    p = diff.max_abs.get("p", 0.0)
    ps = diff.max_abs.get("p_smoothed", 0.0)
    verdict = "MATCH" if not diff.errors else "MISMATCH"
    print(f"{verdict}: {len(out)} records ({tasks_run} task outputs, {decisions} with a decision); "
          f"max |dp| {p:.3g}, max |dp_smoothed| {ps:.3g} (tolerance {tol:g}); "
          "classes, decisions, truth, seq exact")
    return diff


def summary(ref_path, out_path):
    with open(ref_path) as f:
        ref = json.load(f)
    with open(out_path) as f:
        out = json.load(f)
    diff = Diff(0.0)
    diff.walk(ref, out, "summary", "", SUMMARY_IGNORED)
    print(("MATCH" if not diff.errors else "MISMATCH")
          + ": summary (frames, drops, settings, agreement; timings and memory ignored)")
    return diff


TIMING = re.compile(r"\b\d+(\.\d+)?\s*(ms|us|µs|s)\b|elapsed|took")
# `pleura info`'s last line names the CPU features tract found: it differs per machine by design.
MACHINE = re.compile(r"^machine\s")


def compared_lines(path):
    """The lines of `pleura info` output that must be equal: not timings, not the machine."""
    with open(path) as f:
        return [l for l in f.read().splitlines() if not TIMING.search(l) and not MACHINE.match(l)]


def text(ref_path, out_path):
    ref, out = compared_lines(ref_path), compared_lines(out_path)
    diff = Diff(0.0)
    if len(ref) != len(out):
        diff.note("lines", f"{len(ref)} vs {len(out)}")
    for i, (r, o) in enumerate(zip(ref, out)):
        if r != o:
            diff.note(f"line {i + 1}", f"\n    ref: {r}\n    got: {o}")
    print(("MATCH" if not diff.errors else "MISMATCH") + f": {len(out)} lines identical")
    return diff


def main(argv):
    if len(argv) < 4 or argv[1] not in ("jsonl", "summary", "text"):
        print(__doc__, file=sys.stderr)
        return 2
    tol = 1e-4
    if "--tol" in argv:
        tol = float(argv[argv.index("--tol") + 1])
    mode, ref, out = argv[1], argv[2], argv[3]
    diff = {"jsonl": lambda: jsonl(ref, out, tol), "summary": lambda: summary(ref, out),
            "text": lambda: text(ref, out)}[mode]()
    for e in diff.errors:
        print("  " + e)
    return 1 if diff.errors else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

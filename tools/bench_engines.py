#!/usr/bin/env python3
"""Engines benchmark (issue 8): the pack's backbone in every engine pleura offers against
onnxruntime (the PyPI wheel, a measuring peer), interleaved in one run.

The runtime's engines run in `pleura bench --engines-serve` (a child process built exactly as
`pleura run` builds its engines, see src/bench/engines.rs); onnxruntime runs in this process.
Each round visits every configuration (input size x threads) and, in an order that rotates
from round to round, gives every engine one turn of --per-turn back-to-back runs, each timed by
wall clock. The first --warmup-rounds rounds are discarded. Medians and p99s per engine and
configuration, and the ratios to onnxruntime, go to target/bench/engines.json; with
--profile, tract's per-node profile goes to target/bench/engines_profile.json and a table of
op kinds to standard output.

Both ONNX Runtime users (the wheel here, the `ort` engine in the child) run sequential
execution, all graph optimisations, `threads` intra-op threads and NO spinning of idle pool
threads: a spinning pool would steal the cores of the next engine's turn in this interleaved
run (and of capture on a board).
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort


def bench_input(size: int) -> np.ndarray:
    """The values src/bench/engines.rs `bench_input` computes."""
    i = np.arange(size * size, dtype=np.int64)
    x = (((i * 7919 + 13) % 256).astype(np.float64) / 127.5 - 1.0).astype(np.float32)
    return x.reshape(1, 1, size, size)


def resized_model(path: Path, size: int) -> bytes:
    """The backbone with its input pinned to 1x1xSIZExSIZE (as `resized_pack` + tract's fact)."""
    model = onnx.load(str(path))
    dims = model.graph.input[0].type.tensor_type.shape.dim
    dims[0].ClearField("dim_param")
    dims[0].dim_value = 1
    for d in dims[2:]:
        d.ClearField("dim_param")
        d.dim_value = size
    del model.graph.value_info[:]
    return model.SerializeToString()


def percentile(values, q):
    s = sorted(values)
    k = min(len(s) - 1, max(0, int(round(q / 100.0 * (len(s) - 1)))))
    return s[k]


def cpu_model() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def ort_library() -> str:
    capi = Path(ort.__file__).parent / "capi"
    libs = sorted(capi.glob("libonnxruntime.so*")) + sorted(capi.glob("libonnxruntime*.dylib"))
    return str(libs[0]) if libs else ""


class Server:
    def __init__(self, cmd, setup):
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.ready = self.ask(setup)

    def ask(self, request):
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            code = self.proc.wait()
            sys.exit(f"error: `{' '.join(self.cmd_name())}` ended (status {code}) on {request}")
        return json.loads(line)

    def cmd_name(self):
        return self.proc.args

    def close(self):
        try:
            self.proc.stdin.write(json.dumps({"cmd": "quit"}) + "\n")
            self.proc.stdin.close()
        except BrokenPipeError:
            pass
        self.proc.wait()


def op_table(nodes):
    """Per op kind: nodes, mean ms per run, share."""
    kinds = {}
    for n in nodes:
        k = kinds.setdefault(n["op"], {"op": n["op"], "nodes": 0, "ms": 0.0})
        k["nodes"] += 1
        k["ms"] += n["ms"]
    total = sum(k["ms"] for k in kinds.values()) or 1.0
    rows = sorted(kinds.values(), key=lambda k: -k["ms"])
    for r in rows:
        r["share"] = r["ms"] / total
    return rows, total


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pleura", default="target/release/pleura", help="the pleura binary")
    ap.add_argument("--pack", default="models/default")
    ap.add_argument("--sizes", default="128,224")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--rounds", type=int, default=40, help="timed rounds")
    ap.add_argument("--warmup-rounds", type=int, default=3)
    ap.add_argument("--per-turn", type=int, default=10, help="back-to-back runs per engine turn")
    ap.add_argument("--ort-lib", default=None,
                    help="libonnxruntime for the runtime's `ort` engine (default: $ORT_DYLIB_PATH, "
                         "else this onnxruntime wheel's own library); `none` to skip that engine")
    ap.add_argument("--tract-nchw", action="store_true", default=True,
                    help="also time tract without the conv_nhwc layout (the engine before issue 8)")
    ap.add_argument("--no-tract-nchw", dest="tract_nchw", action="store_false")
    ap.add_argument("--profile", action="store_true", help="also profile tract node by node")
    ap.add_argument("--profile-runs", type=int, default=300)
    ap.add_argument("--out", default="target/bench/engines.json")
    args = ap.parse_args()

    sizes = [int(s) for s in args.sizes.split(",")]
    threads = [int(t) for t in args.threads.split(",")]
    pack = Path(args.pack)
    manifest = json.loads((pack / "manifest.json").read_text())
    backbone = pack / manifest["backbone"]["file"]

    ort_lib = args.ort_lib or os.environ.get("ORT_DYLIB_PATH") or ort_library()
    use_ort_engine = ort_lib and ort_lib != "none"
    engines = ["tract"] + (["tract-nchw"] if args.tract_nchw else [])
    cmd = [args.pleura, "bench", "--pack", str(pack), "--engines-serve"]
    if use_ort_engine:
        cmd += ["--ort-lib", ort_lib]
    help_text = subprocess.run([args.pleura, "--version"], capture_output=True, text=True)
    if help_text.returncode != 0:
        sys.exit(f"error: {args.pleura} does not run; build it first (make bench-engines does)")
    if use_ort_engine:
        engines.append("ort")

    setup = {"sizes": sizes, "threads": threads, "engines": engines}
    print(f"starting {' '.join(cmd)} with {setup}", file=sys.stderr)
    server = Server(cmd, setup)
    described = server.ready["engines"]

    # onnxruntime, in this process.
    sessions = {}
    inputs = {s: bench_input(s) for s in sizes}
    for s in sizes:
        model = resized_model(backbone, s)
        for t in threads:
            so = ort.SessionOptions()
            so.intra_op_num_threads = t
            so.inter_op_num_threads = 1
            so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
            so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            so.add_session_config_entry("session.intra_op.allow_spinning", "0")
            sessions[(s, t)] = ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
    input_name = sessions[(sizes[0], threads[0])].get_inputs()[0].name

    # Agreement: every engine's features against onnxruntime's.
    agreement = {}
    for s in sizes:
        for t in threads:
            ref = sessions[(s, t)].run(None, {input_name: inputs[s]})[0].reshape(-1)
            for e in engines:
                got = np.array(server.ask({"cmd": "features", "engine": e, "size": s, "threads": t})["features"],
                               dtype=np.float32)
                agreement[(e, s, t)] = float(np.max(np.abs(got - ref)))

    all_engines = engines + ["onnxruntime"]
    samples = {(e, s, t): [] for e in all_engines for s in sizes for t in threads}
    n = args.per_turn
    started = time.time()
    for r in range(args.warmup_rounds + args.rounds):
        for s in sizes:
            for t in threads:
                order = all_engines[r % len(all_engines):] + all_engines[:r % len(all_engines)]
                for e in order:
                    if e == "onnxruntime":
                        sess, x = sessions[(s, t)], {input_name: inputs[s]}
                        ms = []
                        for _ in range(n):
                            t0 = time.perf_counter()
                            sess.run(None, x)
                            ms.append((time.perf_counter() - t0) * 1e3)
                    else:
                        ms = server.ask({"cmd": "time", "engine": e, "size": s, "threads": t, "n": n})["ms"]
                    if r >= args.warmup_rounds:
                        samples[(e, s, t)].extend(ms)
    wall = time.time() - started

    profile = None
    if args.profile:
        profile = {}
        for layout in (["nhwc", "nchw"] if args.tract_nchw else ["nhwc"]):
            for s in sizes:
                p = server.ask({"cmd": "profile", "size": s, "threads": 1, "n": args.profile_runs, "layout": layout})
                rows, total = op_table(p["nodes"])
                profile[f"{layout}/{s}"] = {
                    "size": s, "threads": 1, "layout": layout, "runs": args.profile_runs,
                    "wall_median_ms": statistics.median(p["wall_ms"]),
                    "sum_of_nodes_ms": total, "op_kinds": rows, "nodes": p["nodes"],
                }
    server.close()

    configs = []
    for s in sizes:
        for t in threads:
            ox = samples[("onnxruntime", s, t)]
            row = {"size": s, "batch": 1, "threads": t, "samples_per_engine": len(ox),
                   "onnxruntime_ms": statistics.median(ox), "onnxruntime_p99_ms": percentile(ox, 99)}
            for e in engines:
                key = e.replace("-", "_")
                xs = samples[(e, s, t)]
                row[f"{key}_ms"] = statistics.median(xs)
                row[f"{key}_p99_ms"] = percentile(xs, 99)
                row[f"ratio_{key}_over_onnxruntime"] = row[f"{key}_ms"] / row["onnxruntime_ms"]
                row[f"{key}_max_abs_diff_vs_onnxruntime"] = agreement[(e, s, t)]
                layout = server.ready.get("tract_layouts", {}).get(f"{e}/{s}/{t}")
                if layout:
                    row[f"{key}_layout"] = layout
            configs.append(row)

    report = {
        "what": "default pack backbone, batch 1: pleura's engines vs onnxruntime (PyPI), interleaved rounds",
        "cpu": cpu_model(),
        "logical_cpus": os.cpu_count(),
        "load_average": os.getloadavg(),
        "versions": {
            "engines": described,
            "onnxruntime_python": ort.__version__,
            "onnxruntime_python_library": ort_library(),
            "onnx": onnx.__version__,
            "python": platform.python_version(),
            "numpy": np.__version__,
        },
        "method": {
            "rounds": args.rounds, "warmup_rounds_discarded": args.warmup_rounds, "runs_per_turn": n,
            "order": "per round and configuration, every engine one turn; the order rotates each round",
            "timed": "wall clock of one backbone run: Session::features (input tensor included) in pleura; "
                     "InferenceSession.run (numpy in, numpy out) for onnxruntime",
            "onnxruntime_options": "sequential, ORT_ENABLE_ALL, intra_op_num_threads=threads, inter=1, "
                                   "session.intra_op.allow_spinning=0",
            "engines": {
                "tract": "Engine::with_engine(.., EngineKind::Tract): the runtime's default engine "
                         "(layout Auto: the faster of NHWC / NCHW, timed at Engine build; see tract_layout)",
                "tract_nchw": "tract without the conv_nhwc layout: the engine before issue 8",
                "ort": "the runtime's `ort` engine (cargo feature ort) on --ort-lib",
            },
        },
        "wall_s": wall,
        "configs": configs,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    if profile is not None:
        pout = out.with_name(out.stem + "_profile.json")
        pout.write_text(json.dumps(profile, indent=2) + "\n")

    # Summary.
    head = f"{'size':>5} {'thr':>3} {'onnxrt ms':>10}"
    for e in engines:
        head += f" {e + ' ms':>14} {'ratio':>6}"
    print(head)
    for row in configs:
        line = f"{row['size']:>5} {row['threads']:>3} {row['onnxruntime_ms']:>10.3f}"
        for e in engines:
            key = e.replace("-", "_")
            line += f" {row[key + '_ms']:>14.3f} {row['ratio_' + key + '_over_onnxruntime']:>6.2f}"
        print(line)
    print(f"(medians of {configs[0]['samples_per_engine']} runs each; p99s and agreement in {out})")
    if profile is not None:
        for name, p in profile.items():
            print(f"\ntract profile {name} (1 thread): wall median {p['wall_median_ms']:.3f} ms, "
                  f"nodes sum {p['sum_of_nodes_ms']:.3f} ms")
            print(f"{'op':<28} {'nodes':>5} {'ms':>8} {'share':>6}")
            for k in p["op_kinds"]:
                print(f"{k['op']:<28} {k['nodes']:>5} {k['ms']:>8.3f} {k['share'] * 100:>5.1f}%")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""One SSL pretraining step: Pleura's trainer (burn) against PyTorch + lightly, side by side.

Both run the same network and step on random inputs of the same shape: torchvision's
MobileNetV3-Small layout with a 1-channel stem, the projector Linear-BN-ReLU(768) then a
bias-free Linear(768), NT-Xent (temperature 0.1, lightly's NTXentLoss), AdamW, BatchNorm in
training mode, the same batch and thread count. Data loading is excluded on both sides.

Rounds alternate burn (`pleura-train bench-step`, a subprocess) and PyTorch so that both see
the same machine state; the per-step times of all rounds are pooled per engine.

PyTorch and lightly are measuring peers only, never part of the product.

Usage: bench_pretrain.py --trainer target/release/pleura-train [--batch 32] [--size 128]
       [--threads 2] [--rounds 3] [--steps 5] [--out target/bench/pretrain_step.json]
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

import torch
import torchvision
import lightly
from lightly.loss import NTXentLoss


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


class SslNetwork(torch.nn.Module):
    def __init__(self):
        super().__init__()
        net = torchvision.models.mobilenet_v3_small()
        stem = net.features[0][0]
        net.features[0][0] = torch.nn.Conv2d(
            1, stem.out_channels, stem.kernel_size, stem.stride, stem.padding, bias=False
        )
        self.backbone = torch.nn.Sequential(net.features, net.avgpool, torch.nn.Flatten())
        self.projector = torch.nn.Sequential(
            torch.nn.Linear(576, 768),
            torch.nn.BatchNorm1d(768),
            torch.nn.ReLU(),
            torch.nn.Linear(768, 768, bias=False),
        )

    def forward(self, x):
        return self.projector(self.backbone(x))


def torch_round(net, optim, loss_fn, batch, size, warmup, steps, gen):
    """Wall ms, process CPU ms and (forward, backward, optimizer) wall ms of each timed step."""
    times, cpu, phases = [], [], []
    for i in range(warmup + steps):
        a = torch.rand(batch, 1, size, size, generator=gen) * 4 - 2
        b = torch.rand(batch, 1, size, size, generator=gen) * 4 - 2
        start, cpu_start = time.perf_counter(), time.process_time()
        loss = loss_fn(net(a), net(b))
        loss_value = loss.item()
        t_fwd = time.perf_counter()
        optim.zero_grad(set_to_none=True)
        loss.backward()
        t_bwd = time.perf_counter()
        optim.step()
        end = time.perf_counter()
        cpu_ms = (time.process_time() - cpu_start) * 1e3
        if not torch.isfinite(torch.tensor(loss_value)):
            raise SystemExit(f"PyTorch loss became {loss_value} at step {i}")
        if i >= warmup:
            times.append((end - start) * 1e3)
            cpu.append(cpu_ms)
            phases.append(((t_fwd - start) * 1e3, (t_bwd - t_fwd) * 1e3, (end - t_bwd) * 1e3))
    return times, cpu, phases


def burn_round(trainer, batch, size, threads, warmup, steps, cpu_conv=None):
    # PLEURA_BENCH_PHASES=1: the step is timed as forward / backward / optimizer.
    env = dict(os.environ, RAYON_NUM_THREADS=str(threads), PLEURA_BENCH_PHASES="1")
    if cpu_conv:
        env["PLEURA_CPU_CONV"] = cpu_conv
    cmd = [trainer, "bench-step", "--batch", str(batch), "--size", str(size),
           "--warmup", str(warmup), "--steps", str(steps), "--optimizer", "adamw"]
    out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trainer", default="target/release/pleura-train")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--steps", type=int, default=5, help="timed steps per round and engine")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--out", default="target/bench/pretrain_step.json")
    p.add_argument("--variants", default="",
                   help="comma-separated PLEURA_CPU_CONV values (none, depthwise, pointwise, conv, "
                        "batchnorm, all) "
                        "also timed in every round, for A/B comparisons of the trainer's "
                        "convolution rewrites")
    args = p.parse_args()
    variants = [v for v in args.variants.split(",") if v]

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    net = SslNetwork().train()
    optim = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=1e-6)
    loss_fn = NTXentLoss(temperature=0.1)

    burn_ms, torch_ms, burn_info = [], [], None
    burn_cpu, torch_cpu, burn_phases, torch_phases = [], [], [], []
    variant_ms = {v: [] for v in variants}
    variant_cpu = {v: [] for v in variants}
    for r in range(args.rounds):
        for v in variants:
            info = burn_round(args.trainer, args.batch, args.size, args.threads,
                              args.warmup, args.steps, cpu_conv=v)
            variant_ms[v] += info["step_ms"]
            variant_cpu[v] += info.get("step_cpu_ms", [])
        burn_info = burn_round(args.trainer, args.batch, args.size, args.threads,
                               args.warmup, args.steps)
        burn_ms += burn_info["step_ms"]
        burn_cpu += burn_info.get("step_cpu_ms", [])
        if burn_info.get("phases"):
            p = burn_info["phases"]
            burn_phases.append((p["forward_ms"], p["backward_ms"], p["optimizer_ms"]))
        t_ms, t_cpu, t_ph = torch_round(net, optim, loss_fn, args.batch, args.size,
                                        args.warmup if r == 0 else 0, args.steps, gen)
        torch_ms += t_ms
        torch_cpu += t_cpu
        torch_phases += t_ph
        print(f"round {r + 1}/{args.rounds}: burn {statistics.median(burn_info['step_ms']):.0f} ms, "
              f"PyTorch {statistics.median(t_ms):.0f} ms per step",
              file=sys.stderr)

    def med(xs):
        return statistics.median(xs) if xs else None

    def phase_medians(rows):
        if not rows:
            return None
        return {name: statistics.median(r[k] for r in rows)
                for k, name in enumerate(("forward_ms", "backward_ms", "optimizer_ms"))}

    b, t = statistics.median(burn_ms), statistics.median(torch_ms)
    b_cpu, t_cpu = med(burn_cpu), med(torch_cpu)
    images = 2 * args.batch
    result = {
        "what": "one SimCLR pretraining step (two views, NT-Xent, backward, AdamW), random inputs",
        "batch": args.batch,
        "size": args.size,
        "threads": args.threads,
        "cpu": cpu_model(),
        "burn_step_ms": b,
        "torch_step_ms": t,
        "burn_images_per_s": images / (b / 1e3),
        "torch_images_per_s": images / (t / 1e3),
        "ratio_burn_over_torch": b / t,
        # Process CPU time per step (all threads): steadier than wall time on a shared machine.
        "burn_step_cpu_ms": b_cpu,
        "torch_step_cpu_ms": t_cpu,
        "ratio_burn_over_torch_cpu": b_cpu / t_cpu if b_cpu and t_cpu else None,
        "burn_phases": phase_medians(burn_phases),
        "burn_variants": {v: {"step_ms": med(variant_ms[v]), "step_cpu_ms": med(variant_cpu[v]),
                              "ratio_over_torch": med(variant_ms[v]) / t,
                              "ratio_over_torch_cpu": (med(variant_cpu[v]) / t_cpu
                                                       if variant_cpu[v] and t_cpu else None)}
                          for v in variants},
        "torch_phases": phase_medians(torch_phases),
        "burn_step_ms_all": burn_ms,
        "torch_step_ms_all": torch_ms,
        "burn_step_cpu_ms_all": burn_cpu,
        "torch_step_cpu_ms_all": torch_cpu,
        "versions": {
            "burn": burn_info["engine"],
            "torch": torch.__version__,
            "torchvision": torchvision.__version__,
            "lightly": lightly.__version__,
            "python": platform.python_version(),
        },
    }
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
    bp, tp = result["burn_phases"], result["torch_phases"]
    print(f"{'engine':<22}{'ms/step':>10}{'images/s':>10}{'cpu ms':>10}"
          f"{'fwd':>8}{'bwd':>8}{'opt':>8}")
    for name, ms, cpu, ph in (("burn (pleura-train)", b, b_cpu, bp),
                              ("PyTorch + lightly", t, t_cpu, tp)):
        cols = f"{name:<22}{ms:>10.1f}{images / (ms / 1e3):>10.1f}"
        cols += f"{cpu:>10.1f}" if cpu else f"{'-':>10}"
        if ph:
            cols += "".join(f"{ph[k]:>8.1f}" for k in ("forward_ms", "backward_ms", "optimizer_ms"))
        print(cols)
    for v in variants:
        vm, vc = med(variant_ms[v]), med(variant_cpu[v])
        print(f"{'  burn, conv=' + v:<22}{vm:>10.1f}{images / (vm / 1e3):>10.1f}"
              + (f"{vc:>10.1f}" if vc else ""))
    print(f"burn / PyTorch time: {b / t:.2f}x wall"
          + (f", {b_cpu / t_cpu:.2f}x CPU" if b_cpu and t_cpu else "")
          + f"  ({args.threads} threads, batch {args.batch}, {args.size}x{args.size}; {cpu_model()})")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

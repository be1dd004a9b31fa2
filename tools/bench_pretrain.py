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
    times = []
    for i in range(warmup + steps):
        a = torch.rand(batch, 1, size, size, generator=gen) * 4 - 2
        b = torch.rand(batch, 1, size, size, generator=gen) * 4 - 2
        start = time.perf_counter()
        loss = loss_fn(net(a), net(b))
        optim.zero_grad(set_to_none=True)
        loss.backward()
        optim.step()
        ms = (time.perf_counter() - start) * 1e3
        if not torch.isfinite(loss):
            raise SystemExit(f"PyTorch loss became {loss.item()} at step {i}")
        if i >= warmup:
            times.append(ms)
    return times


def burn_round(trainer, batch, size, threads, warmup, steps):
    env = dict(os.environ, RAYON_NUM_THREADS=str(threads))
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
    args = p.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    net = SslNetwork().train()
    optim = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=1e-6)
    loss_fn = NTXentLoss(temperature=0.1)

    burn_ms, torch_ms, burn_info = [], [], None
    for r in range(args.rounds):
        burn_info = burn_round(args.trainer, args.batch, args.size, args.threads,
                               args.warmup, args.steps)
        burn_ms += burn_info["step_ms"]
        torch_ms += torch_round(net, optim, loss_fn, args.batch, args.size,
                                args.warmup if r == 0 else 0, args.steps, gen)
        print(f"round {r + 1}/{args.rounds}: burn {statistics.median(burn_info['step_ms']):.0f} ms, "
              f"PyTorch {statistics.median(torch_ms[-args.steps:]):.0f} ms per step",
              file=sys.stderr)

    b, t = statistics.median(burn_ms), statistics.median(torch_ms)
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
        "burn_step_ms_all": burn_ms,
        "torch_step_ms_all": torch_ms,
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
    print(f"{'engine':<22}{'ms/step':>10}{'images/s':>10}")
    print(f"{'burn (pleura-train)':<22}{b:>10.1f}{images / (b / 1e3):>10.1f}")
    print(f"{'PyTorch + lightly':<22}{t:>10.1f}{images / (t / 1e3):>10.1f}")
    print(f"burn / PyTorch time: {b / t:.2f}x  ({args.threads} threads, batch {args.batch}, "
          f"{args.size}x{args.size}; {cpu_model()})")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

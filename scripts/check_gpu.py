#!/usr/bin/env python3
"""Check DP-Norm on a CUDA GPU: a 2-node federation's rounds on the CPU and on the GPU.

    python scripts/check_gpu.py                  # ResNet-10, batch 64, 2 nodes, 10 timed rounds
    python scripts/check_gpu.py --rounds 30 --model cnn

Prints one JSON object: steps per second on each device for the same config (DP-Norm, message
mode, per-sample clipping of a ResNet-10 on 28×28 inputs, batch 64), where the private
generator lives (it must be on the device and seeded from OS entropy), what leaves a node (its
messages must be CPU float32 tensors), and how far the GPU's clipped gradient sum is from the
CPU's on the same batch and parameters. Without CUDA it prints the CPU numbers, says so in one
sentence and exits 2. Not part of `make test` (every test stays on the CPU).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any


def timed_rounds(device: str, args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from node.config import RunConfig
    from node.sim.simulate import build_runners

    cfg = RunConfig(topology="line", nodes=2, rounds=args.rounds + args.warmup,
                    model=args.model, dataset="synthetic", batch_size=args.batch_size,
                    epsilon=8.0, algorithm="dpnorm", privacy_mode="message", device=device,
                    eval_every=10**6, primal_every=0, test_examples=200)
    runners = build_runners(cfg)
    for _ in range(args.warmup):
        outs = [r.step(set(r.setup.neighbours)) for r in runners]
        for r, o in zip(runners, outs, strict=True):
            r.absorb({j: y for j, y in o.duals.items()})
    if device == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    messages: list[Any] = []
    for _ in range(args.rounds):
        outs = [r.step(set(r.setup.neighbours)) for r in runners]
        inbox: list[dict[int, Any]] = [{} for _ in runners]
        for i, o in enumerate(outs):
            for j, y in o.duals.items():
                inbox[j][i] = y
                messages.append(y)
        for r, received in zip(runners, inbox, strict=True):
            r.absorb(received)
    if device == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    trainer = runners[0].setup.trainer
    gen = trainer.noise_generator
    return {
        "device": device,
        "rounds": args.rounds,
        "steps_per_second": args.rounds * len(runners) / seconds,
        "seconds_per_round": seconds / args.rounds,
        "noise_generator_device": str(gen.device) if gen is not None else None,
        "messages_on_cpu_float32": all(m.device.type == "cpu" and m.dtype == torch.float32
                                       for m in messages),
        "parameters": runners[0].setup.layout.numel,
    }


def gradient_agreement(args: argparse.Namespace) -> float:
    """max |Σ clip(∇) on CUDA − on CPU| for one batch at the same parameters."""
    import torch.nn.functional as F
    from torch.func import functional_call

    from node.core.data import synthetic
    from node.core.model import FlatParams, build_model
    from privacy.mechanisms import clipped_grad_sum

    data = synthetic(args.batch_size, 1, image=True, seed=0)
    model = build_model(args.model, in_shape=data.in_shape, num_classes=data.num_classes,
                        seed=0)
    layout = FlatParams.of(model)
    w = layout.flatten(model)
    sums = []
    for device in ("cpu", "cuda"):
        m = model.to(device)

        def loss(params: Any, x: Any, y: Any, m: Any = m) -> Any:
            return F.cross_entropy(functional_call(m, dict(params), (x,)), y)

        params = layout.unflatten(w.to(device))
        total = clipped_grad_sum(loss, params, data.x_train.to(device),
                                 data.y_train.to(device), 1.0).total
        sums.append(total.cpu())
    return float((sums[0] - sums[1]).abs().max())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="resnet10")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=10, help="timed rounds")
    parser.add_argument("--warmup", type=int, default=2, help="untimed rounds first")
    args = parser.parse_args(argv)
    import torch

    torch.manual_seed(0)
    report: dict[str, Any] = {"model": args.model, "batch_size": args.batch_size,
                              "torch": torch.__version__,
                              "cuda_available": torch.cuda.is_available()}
    report["cpu"] = timed_rounds("cpu", args)
    if not torch.cuda.is_available():
        print(json.dumps(report, indent=2))
        sys.stderr.write("error: torch finds no CUDA device here (torch.cuda.is_available() "
                         "is False); run this on a machine with an NVIDIA GPU and CUDA torch.\n")
        return 2
    report["gpu_name"] = torch.cuda.get_device_name(0)
    report["cuda"] = timed_rounds("cuda", args)
    report["speedup"] = report["cuda"]["steps_per_second"] / report["cpu"]["steps_per_second"]
    report["clipped_sum_max_abs_diff"] = gradient_agreement(args)
    print(json.dumps(report, indent=2))
    ok = (report["cuda"]["noise_generator_device"].startswith("cuda")
          and report["cuda"]["messages_on_cpu_float32"])
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())

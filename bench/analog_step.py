"""What one fine-tuning step costs with every layer analog, against the float step and aihwkit's tiles.

On the shapes32 ResNet-20 (hermes, 1 day): one training step (forward,
backward, Adam) of a batch in full precision, all-analog with hetmap's own
op (DAC, row-block convolutions, ADC, a fresh PCM draw of every layer per
step included) and all-analog on aihwkit's TorchInferenceTile (the path the
op replaced, bench.aihwkit_tiles). Times interleave (best of `--repeats`),
so the ratios hold on a loaded machine. Goals (issue 15): hetmap's step at
most 2x the float step, at least 3x faster than aihwkit's.

    python -m bench.analog_step [--model resnet20] [--batch 64] [--repeats 5] [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from bench.aihwkit_tiles import use_aihwkit_tiles
from bench.baselines import prepare
from hetmap.mapping.mapping import ANALOG
from hetmap.models import reference_path
from hetmap.sim.drift import parse_drift
from hetmap.targets import load_target
from hetmap.train.supernet import FULL_PRECISION, Supernet, trainable_initializers

GOAL_OVER_FLOAT = 2.0
GOAL_AIHWKIT_OVER_OURS = 3.0


def _nets(model_name: str, device: str):
    target = load_target("hermes")
    base = prepare(
        reference_path(f"{model_name}.onnx"),
        target,
        reference_path(f"{model_name}.test.npz"),
        reference_path(f"{model_name}.train.npz"),
    )
    ranges = base.context.reports["calibrate"].input_range
    nets = {}
    for kind in ("float", "hetmap", "aihwkit"):
        trainable = trainable_initializers(base.model, base.layers, "all")
        net = Supernet(base.model, base.layers, ranges, target, trainable, parse_drift("1d"))
        if kind == "aihwkit":
            use_aihwkit_tiles(net, base.model, base.layers, ranges, target)
        option = FULL_PRECISION if kind == "float" else ANALOG
        net.set_mapping({layer.name: option for layer in base.layers})
        nets[kind] = net.to(device).train()
    return base, nets


def _step(net, optimizer, x, y, draw: bool, step: int) -> None:
    if draw:
        program, read = (np.random.default_rng([step, i]) for i in range(2))
        net.draw_noise(program, read)
    optimizer.zero_grad(set_to_none=True)
    torch.nn.functional.cross_entropy(net(x), y).backward()
    optimizer.step()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="resnet20")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--no-aihwkit", action="store_true", help="time the float and hetmap steps only")
    args = parser.parse_args()
    base, nets = _nets(args.model, args.device)
    if args.no_aihwkit:
        del nets["aihwkit"]
    train = base.train
    x = torch.from_numpy(train.inputs["x"][: args.batch]).to(args.device)
    y = torch.from_numpy(np.asarray(train.labels[: args.batch], np.int64)).to(args.device)
    optimizers = {
        kind: torch.optim.Adam([p for p in net.parameters() if p.requires_grad], 1e-5) for kind, net in nets.items()
    }
    times = {kind: [] for kind in nets}
    for repeat in range(args.repeats + 1):  # the first round warms up
        for kind, net in nets.items():
            if args.device == "cuda":
                torch.cuda.synchronize()
            began = time.perf_counter()
            _step(net, optimizers[kind], x, y, kind == "hetmap", repeat)
            if args.device == "cuda":
                torch.cuda.synchronize()
            if repeat:
                times[kind].append(time.perf_counter() - began)
    best = {kind: min(values) for kind, values in times.items()}
    result = {
        "model": args.model,
        "batch": args.batch,
        "device": args.device,
        "threads": torch.get_num_threads(),
        "best_seconds": best,
        "median_seconds": {kind: float(np.median(values)) for kind, values in times.items()},
        "hetmap_over_float": best["hetmap"] / best["float"],
        "goal_hetmap_over_float": GOAL_OVER_FLOAT,
    }
    if "aihwkit" in best:
        result["aihwkit_over_hetmap"] = best["aihwkit"] / best["hetmap"]
        result["goal_aihwkit_over_hetmap"] = GOAL_AIHWKIT_OVER_OURS
    print(json.dumps(result, indent=2))
    out = Path(__file__).parent / "results" / f"analog_step_{args.device}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()

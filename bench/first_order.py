"""First-order sensitivity against the exact (screened) engine: time and how far the predicted drops are off.

Both run every layer with the budget's early stop, as compile does, one
after the other in one process (`--rounds` times; the best round counts).
The drops of the options first-order predicted are compared with the exact
engine's: mean and largest absolute error, in points and in samples. The
trained reference models score accuracy on their test files; ResNet-50 has
random weights and inputs (agreement; its outputs are nearly all one class,
so it says little about accuracy, and much about cost at its depth).

    python -m bench.first_order [--models resnet8,resnet20,resnet50] [--samples 1000] [--resnet50-samples 32]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from bench.sensitivity_speed import RESULTS, _reference, _resnet50, calibrated, save
from hetmap.passes.sensitivity import Sensitivity
from hetmap.sim.measure import Measurement

ENGINES = ("screened", "first-order")


def measure(proto, dataset, rounds: int, budget: float) -> dict:
    model, context = calibrated(proto, dataset)
    seconds, found = {engine: [] for engine in ENGINES}, {}
    for _ in range(rounds):
        for engine in ENGINES:
            began = time.perf_counter()
            _, found[engine] = Sensitivity(Measurement("1d", seeds=3), engine, budget).run(model, context)
            seconds[engine].append(time.perf_counter() - began)
    exact, predicted = found["screened"], found["first-order"]
    errors = [
        abs(predicted.layers[layer][option].drop_points - exact.layers[layer][option].drop_points)
        for layer, options in predicted.predicted.items()
        for option in options
    ]
    best = {engine: min(values) for engine, values in seconds.items()}
    one_sample = 100 / dataset.size
    return {
        "layers": len(context.reports["partition"].layers),
        "samples": dataset.size,
        "budget": budget,
        "seconds": best,
        "speedup": best["screened"] / best["first-order"],
        "options": sum(len(row) for row in exact.layers.values()),
        "predicted": len(errors),
        "mean_error_points": float(np.mean(errors)) if errors else 0.0,
        "max_error_points": float(np.max(errors)) if errors else 0.0,
        "max_error_samples": float(np.max(errors)) / one_sample if errors else 0.0,
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="resnet8,resnet20,resnet50")
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--resnet50-samples", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument(
        "--budget", type=float, default=0.5, help="compile's --max-drop: options sure to exceed it stop"
    )
    parser.add_argument("--out", type=Path, default=RESULTS / "first_order.json")
    args = parser.parse_args(argv)
    results = {}
    print("model      layers samples  exact s  first-order s  speed-up | predicted  error: mean  max pts (samples)")
    for name in args.models.split(","):
        data = _resnet50(args.resnet50_samples) if name == "resnet50" else _reference(name, args.samples)
        results[name] = measure(*data, args.rounds, args.budget)
        print(_line(name, results[name]), flush=True)
    return save(results, args.out)


def _line(name: str, figures: dict) -> str:
    s = figures["seconds"]
    return (
        f"{name:10s} {figures['layers']:6d} {figures['samples']:7d} {s['screened']:8.1f} {s['first-order']:14.1f}"
        f" {figures['speedup']:8.2f}x | {figures['predicted']:4d}/{figures['options']:<4d}"
        f" {figures['mean_error_points']:11.3f} {figures['max_error_points']:6.2f} ({figures['max_error_samples']:.0f})"
    )


if __name__ == "__main__":
    main()

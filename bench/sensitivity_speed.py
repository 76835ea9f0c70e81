"""Sensitivity's exact engines on the same layers and data, interleaved in one process: time and equal drops.

`whole` simulates the whole network for every layer and option (the path
before issue 16), `suffix` runs only each layer's suffix from cached
activations with the options stacked, `screened` (the default) also skips
the samples a variant cannot flip (hetmap.sim.screen), `budget` also
stops an option once its drop is sure to exceed the budget (--budget, as
compile does), and `torch` runs `whole`'s measurements through torch on
--device (hetmap.train.device_sim: compile's engine where that is a GPU). Each round runs them one after the other, so load on a
shared machine hits them alike; the best round counts. Drops must be equal
to the bit across engines (within 1e-6 points for `torch`), except that an
option `budget` stopped must be over the budget in both.

The trained reference models score accuracy on their test files; ResNet-50
has random weights and inputs (agreement; every input lands in the same
class, so its gaps say little about a trained network) and is measured on
an evenly spaced subset of its layers, since whole-model simulation of
every layer takes hours.

    python -m bench.sensitivity_speed [--models cnn,resnet,transformer,resnet8,resnet20,resnet50]
        [--samples 256] [--resnet50-samples 64] [--resnet50-layers 6] [--rounds 2] [--budget 0.5] [--device auto]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir

from hetmap.graph.data import Dataset
from hetmap.graph.shapes import resolve_input_shapes
from hetmap.models import reference_path
from hetmap.passes.calibrate import Calibrate
from hetmap.passes.canonicalize import Canonicalize
from hetmap.passes.partition import Partition
from hetmap.passes.sensitivity import EXACT_ENGINES, Sensitivity
from hetmap.pipeline import CompileConfig, PassContext, run_pipeline
from hetmap.sim.jobs import Workers
from hetmap.sim.measure import Measurement
from hetmap.targets import load_target

RESULTS = Path(__file__).parent / "results"


def _reference(name: str, samples: int) -> tuple[onnx.ModelProto, Dataset]:
    data = np.load(reference_path(f"{name}.test.npz"))
    dataset = Dataset({"x": data["x"][:samples]}, data["y"][:samples], f"{name}.test.npz")
    return onnx.load(reference_path(f"{name}.onnx")), dataset


def _resnet50(samples: int) -> tuple[onnx.ModelProto, Dataset]:
    from bench.resnet_graphs import build_resnet50

    x = np.random.default_rng(0).standard_normal((samples, 3, 224, 224), dtype=np.float32)
    return build_resnet50(0), Dataset({"input": x}, None, "random inputs")


def calibrated(proto: onnx.ModelProto, dataset: Dataset) -> tuple[ir.Model, PassContext]:
    """The model canonicalized, partitioned and calibrated on hermes, and the context holding those reports."""
    model = ir.serde.deserialize_model(proto)
    config = CompileConfig(input_shapes=resolve_input_shapes(model, dataset, {}), dataset=dataset, workers=Workers(1))
    context = PassContext(load_target("hermes"), config)
    model, reports = run_pipeline(model, [Canonicalize(), Partition(), Calibrate()], context)
    return model, context.with_reports(reports)


def save(results: dict, out: Path) -> dict:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    return results


def measure(
    proto: onnx.ModelProto, dataset: Dataset, layer_count: int | None, rounds: int, budget: float, device: str
) -> dict:
    """Best seconds per engine, the screened shares, and whether the drops agree."""
    model, context = calibrated(proto, dataset)
    reports = context.reports
    partition = reports["partition"]
    if layer_count and layer_count < len(partition.layers):
        picks = np.linspace(0, len(partition.layers) - 1, layer_count).round().astype(int)
        partition = dataclasses.replace(partition, layers=[partition.layers[i] for i in picks])
    context = context.with_reports({**reports, "partition": partition})
    on_device = dataclasses.replace(context, config=dataclasses.replace(context.config, device=device))
    runs = {engine: (engine, None) for engine in EXACT_ENGINES} | {"budget": ("screened", budget)}
    seconds = {name: [] for name in runs}
    drops, shares = {}, {}
    for _ in range(rounds):
        for name, (engine, largest) in runs.items():
            began = time.perf_counter()
            on = on_device if engine == "torch" else context
            _, report = Sensitivity(Measurement("1d", seeds=3), engine, largest).run(model, on)
            seconds[name].append(time.perf_counter() - began)
            drops[name] = {(layer, o): d for layer, row in report.layers.items() for o, d in row.items()}
            shares[name] = report.screened_share
    best = {name: min(values) for name, values in seconds.items()}
    exact = drops["whole"]
    agree = {
        name: all(
            (d.drop_points > budget and exact[key].drop_points > budget)
            if d.at_least
            else abs(d.drop_points - exact[key].drop_points) <= (1e-6 if name == "torch" else 0)
            for key, d in found.items()
        )
        for name, found in drops.items()
    }
    return {
        "layers": len(partition.layers),
        "samples": dataset.size,
        "budget": budget,
        "seconds": best,
        "speedup_vs_whole": {name: best["whole"] / best[name] for name in runs},
        "skipped_share": shares,
        "stopped_over_budget": sum(d.at_least for d in drops["budget"].values()),
        "options": len(exact),
        "drops_agree": agree,
        "torch_device": device,
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="cnn,resnet,transformer,resnet8,resnet20,resnet50")
    parser.add_argument("--samples", type=int, default=256)
    parser.add_argument("--resnet50-samples", type=int, default=64)
    parser.add_argument("--resnet50-layers", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--budget", type=float, default=0.5, help="compile's --max-drop, for the `budget` run")
    parser.add_argument("--device", default="auto", help="where the torch engine runs (auto: CUDA when there is one)")
    parser.add_argument("--out", type=Path, default=RESULTS / "sensitivity_speed.json")
    args = parser.parse_args(argv)
    from hetmap.train.adaptation import torch_device

    device = torch_device(args.device)
    results = {}
    print(
        f"model        layers samples   whole s  suffix s  screened s  budget s  torch s | speed-up: suffix screened"
        f" budget torch ({device}) | skipped: screened budget | agree"
    )
    for name in args.models.split(","):
        if name == "resnet50":
            data = _resnet50(args.resnet50_samples)
            figures = measure(*data, args.resnet50_layers, args.rounds, args.budget, device)
        else:
            figures = measure(*_reference(name, args.samples), None, args.rounds, args.budget, device)
        results[name] = figures
        s, x, k = figures["seconds"], figures["speedup_vs_whole"], figures["skipped_share"]
        print(
            f"{name:12s} {figures['layers']:6d} {figures['samples']:7d} {s['whole']:9.1f} {s['suffix']:9.1f} "
            f"{s['screened']:11.1f} {s['budget']:9.1f} {s['torch']:8.1f} | {x['suffix']:14.2f}x {x['screened']:7.2f}x"
            f" {x['budget']:5.2f}x {x['torch']:5.2f}x"
            f" | {k['screened']:17.0%} {k['budget']:6.0%} | {'yes' if all(figures['drops_agree'].values()) else 'NO'}",
            flush=True,
        )
    return save(results, args.out)


if __name__ == "__main__":
    main()

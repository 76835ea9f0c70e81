"""Sensitivity's three engines on the same layers and data, interleaved in one process: time and equal drops.

`whole` simulates the whole network for every layer and option (the path
before issue 16), `suffix` runs only each layer's suffix from cached
activations with the options stacked, `screened` (the default) also skips
the samples a variant cannot flip (hetmap.sim.screen). Each round runs the
engines one after the other, so load on a shared machine hits them alike;
the best round counts. Drops must be equal to the bit across engines.

The trained reference models score accuracy on their test files; ResNet-50
has random weights and inputs (agreement; every input lands in the same
class, so its gaps say little about a trained network) and is measured on
an evenly spaced subset of its layers, since whole-model simulation of
every layer takes hours.

    python -m bench.sensitivity_speed [--models cnn,resnet,transformer,resnet8,resnet20,resnet50]
        [--samples 256] [--resnet50-samples 64] [--resnet50-layers 6] [--rounds 2]
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
from hetmap.passes.sensitivity import ENGINES, Sensitivity
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


def measure(proto: onnx.ModelProto, dataset: Dataset, layer_count: int | None, rounds: int) -> dict:
    """Best seconds per engine, the screened share, and whether the drops agree."""
    model = ir.serde.deserialize_model(proto)
    config = CompileConfig(input_shapes=resolve_input_shapes(model, dataset, {}), dataset=dataset, workers=Workers(1))
    context = PassContext(load_target("hermes"), config)
    model, reports = run_pipeline(model, [Canonicalize(), Partition(), Calibrate()], context)
    partition = reports["partition"]
    if layer_count and layer_count < len(partition.layers):
        picks = np.linspace(0, len(partition.layers) - 1, layer_count).round().astype(int)
        partition = dataclasses.replace(partition, layers=[partition.layers[i] for i in picks])
    context = context.with_reports({**reports, "partition": partition})
    seconds = {engine: [] for engine in ENGINES}
    drops, share = {}, 0.0
    for _ in range(rounds):
        for engine in ENGINES:
            began = time.perf_counter()
            _, report = Sensitivity(Measurement("1d", seeds=3), engine).run(model, context)
            seconds[engine].append(time.perf_counter() - began)
            drops[engine] = {(layer, o): d.drop_points for layer, row in report.layers.items() for o, d in row.items()}
            share = report.screened_share if engine == "screened" else share
    best = {engine: min(values) for engine, values in seconds.items()}
    differ = {
        engine: max(abs(drops[engine][key] - drops["whole"][key]) for key in drops["whole"]) for engine in ENGINES
    }
    return {
        "layers": len(partition.layers),
        "samples": dataset.size,
        "seconds": best,
        "speedup_vs_whole": {engine: best["whole"] / best[engine] for engine in ENGINES},
        "screened_share": share,
        "max_drop_difference_vs_whole": differ,
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="cnn,resnet,transformer,resnet8,resnet20,resnet50")
    parser.add_argument("--samples", type=int, default=256)
    parser.add_argument("--resnet50-samples", type=int, default=64)
    parser.add_argument("--resnet50-layers", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", type=Path, default=RESULTS / "sensitivity_speed.json")
    args = parser.parse_args(argv)
    results = {}
    print("model        layers samples   whole s  suffix s  screened s  suffix x  screened x  skipped  drops equal")
    for name in args.models.split(","):
        if name == "resnet50":
            figures = measure(*_resnet50(args.resnet50_samples), args.resnet50_layers, args.rounds)
        else:
            figures = measure(*_reference(name, args.samples), None, args.rounds)
        results[name] = figures
        s, x = figures["seconds"], figures["speedup_vs_whole"]
        equal = max(figures["max_drop_difference_vs_whole"].values()) == 0
        print(
            f"{name:12s} {figures['layers']:6d} {figures['samples']:7d} {s['whole']:9.1f} {s['suffix']:9.1f} "
            f"{s['screened']:11.1f} {x['suffix']:8.2f}x {x['screened']:10.2f}x {figures['screened_share']:7.0%}  "
            f"{'yes' if equal else 'NO'}",
            flush=True,
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()

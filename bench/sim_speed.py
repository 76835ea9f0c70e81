"""Simulated inference against plain onnxruntime on ResNet-50 (batch 1), for INT8 and analog mappings.

The simulation sessions are the ones `hetmap run` and the measurements use
(hetmap.sim.sessions): for analog, each draw `fed` to one session (the old
Round/Clip/Mul ADC; under 256 samples), and each draw `baked` into a session
of its own (the shifted ADC, hetmap.sim.adc; from 256 samples), whose build
time is printed too. Times are the best of many runs, all sessions
interleaved so they see the same background load. Goal (issue 16): at most
1.3x plain onnxruntime.

    python -m bench.sim_speed [--runs 20]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import onnx_ir as ir

GOAL_RATIO = 1.3


def _prepared():
    """The canonical ResNet-50, its partition and calibration on one random image."""
    from bench.resnet_graphs import build_resnet50
    from hetmap.graph.data import Dataset
    from hetmap.graph.shapes import resolve_input_shapes
    from hetmap.passes.calibrate import Calibrate
    from hetmap.passes.canonicalize import Canonicalize
    from hetmap.passes.partition import Partition
    from hetmap.pipeline import CompileConfig, PassContext, run_pipeline
    from hetmap.targets import load_target

    model = ir.serde.deserialize_model(build_resnet50(0))
    x = np.random.default_rng(0).standard_normal((1, 3, 224, 224), dtype=np.float32)
    dataset = Dataset({"input": x}, None, "random")
    config = CompileConfig(input_shapes=resolve_input_shapes(model, dataset, {}), dataset=dataset)
    target = load_target("hermes")
    model, results = run_pipeline(model, [Canonicalize(), Partition(), Calibrate()], PassContext(target, config))
    return model, target, results, x


def _best(run, runs: int) -> float:
    run()
    best = float("inf")
    for _ in range(runs):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    from hetmap.mapping.annotations import clear_layer, layer_annotation, write_layer
    from hetmap.sim.draws import draw_generators
    from hetmap.sim.sessions import session_for
    from hetmap.sim.simulation import build_simulation

    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=20)
    runs_per_round = parser.parse_args().runs // 3 or 1
    model, target, results, x = _prepared()
    layers = results["partition"].layers
    total = sum(layer.weight_count for layer in layers)
    nodes = {node.name: node for node in model.graph}
    plain = session_for(model, set())
    for option in ("int8", "analog"):
        for layer in layers:
            annotation = layer_annotation(
                layer, option, target, results["calibrate"].input_range[layer.name], [], total
            )
            write_layer(nodes[layer.name], annotation)
        fed_simulation = build_simulation(model, target)
        baked_simulation = build_simulation(model, target, shifted_adc=True)
        for layer in layers:
            clear_layer(nodes[layer.name])
        program_rng, (read_rng,) = draw_generators(0, 0, 1)
        weights = fed_simulation.draw(program_rng, 86400.0, read_rng) if fed_simulation.blocks else {}
        runs = {"plain": lambda: plain.run(None, {"input": x})}
        fed = session_for(fed_simulation.model, fed_simulation.drawn_names())
        runs["fed"] = lambda s=fed, f={"input": x, **weights}: s.run(None, f)
        build_s = 0.0
        if baked_simulation.blocks:
            program_rng, (read_rng,) = draw_generators(0, 0, 1)
            baked_simulation.bake(baked_simulation.draw(program_rng, 86400.0, read_rng))
            start = time.perf_counter()
            baked = session_for(baked_simulation.model, set())
            build_s = time.perf_counter() - start
            runs["baked"] = lambda s=baked: s.run(None, {"input": x})
        best = dict.fromkeys(runs, float("inf"))
        for _ in range(3):  # interleaved rounds
            for name, run in runs.items():
                best[name] = min(best[name], _best(run, runs_per_round))
        for name in runs.keys() - {"plain"}:
            ratio = best[name] / best["plain"]
            verdict = "PASS" if ratio <= GOAL_RATIO else "FAIL"
            extra = f", session build {build_s:.2f} s per draw" if name == "baked" else ""
            print(f"all-{option:6s} {name:5s} plain {best['plain'] * 1e3:7.1f} ms  simulated {best[name] * 1e3:7.1f} ms  "
                  f"ratio {ratio:.2f}x (goal <= {GOAL_RATIO}x: {verdict}){extra}", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()

"""Simulated inference against plain onnxruntime on ResNet-50 (batch 1), for INT8 and analog mappings.

The simulation session is the one `hetmap run` and the measurements use
(hetmap.sim.sessions); times are the best of many runs, the two sessions
interleaved so both see the same background load. Goal (issue 16): at most
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
    from hetmap.sim.sessions import session_for
    from hetmap.sim.simulation import build_simulation, draw_generators

    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=20)
    runs = parser.parse_args().runs
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
        simulation = build_simulation(model, target)
        for layer in layers:
            clear_layer(nodes[layer.name])
        session = session_for(simulation.model, simulation.drawn_names())
        program_rng, (read_rng,) = draw_generators(0, 0, 1)
        weights = simulation.draw(program_rng, 86400.0, read_rng) if simulation.blocks else {}
        plain_s = sim_s = float("inf")
        simulated = {"input": x, **weights}
        for _ in range(3):  # interleaved rounds
            plain_s = min(plain_s, _best(lambda: plain.run(None, {"input": x}), runs // 3 or 1))
            sim_s = min(sim_s, _best(lambda s=session, f=simulated: s.run(None, f), runs // 3 or 1))
        ratio = sim_s / plain_s
        verdict = "PASS" if ratio <= GOAL_RATIO else "FAIL"
        print(f"all-{option:6s} plain {plain_s * 1e3:7.1f} ms  simulated {sim_s * 1e3:7.1f} ms  "
              f"ratio {ratio:.2f}x (goal <= {GOAL_RATIO}x: {verdict})", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()

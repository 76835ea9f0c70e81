"""Fidelity and speed of `hetmap run` against aihwkit 1.1.0 on the four reference models, all-analog on hermes.

Fidelity goal (from the issue): hetmap's simulated accuracy and aihwkit's
(TorchInferenceRPUConfig with the same PCM noise model, converter bits and
tile size; bench.aihwkit_reference) agree within 1 percentage point at each
drift time. Both program every tile once per Monte-Carlo draw and read the
same chip at every drift time. Besides accuracy, the mean relative output
error against the full-precision model (|y - y_fp| / |y_fp| per sample) is
compared: it moves long before accuracy does. Where a layer has more rows
than a tile, aihwkit splits the rows into equal parts and hetmap into whole
input channels; the "same blocks" column runs aihwkit with hetmap's split.

Speed goals, measured in the same run on the same batch (the whole test set):
  (a) nominal simulated inference (one draw's noise baked into the
      initializers, DAC/ADC on) at most 1.5x the plain full-precision model in
      onnxruntime;
  (b) simulated inference at least 5x faster than aihwkit's analog forward
      (same model, batch and noise settings: programmed, drifted to 1 day).
Times are the best of REPEATS interleaved runs (a shared 2-core machine is
noisy); both runtimes use their default thread counts. onnxruntime's per-op
profile of the simulation graph says where its time goes.

    python -m bench.fidelity [--seeds 20] [--models cnn,mlp,resnet,transformer] [--only fidelity|speed]

Writes bench/results/fidelity.json.
"""

from __future__ import annotations

import argparse
import collections
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort

from bench import aihwkit_reference as reference
from hetmap.driver import Decision, compile_model
from hetmap.graph.data import load_dataset
from hetmap.graph.shapes import graph_inputs
from hetmap.models import reference_path
from hetmap.sim.draws import draw_generators
from hetmap.sim.drift import parse_drift
from hetmap.sim.run import evaluate
from hetmap.sim.simulation import build_simulation
from hetmap.targets import Target, load_target

MODELS = ("cnn", "mlp", "resnet", "transformer")
DRIFTS = ("1s", "1h", "1d", "1y")
TOLERANCE_PP = 1.0
GOAL_SIM_OVER_FP = 1.5
GOAL_AIHWKIT_OVER_SIM = 5.0
SPEED_DRIFT = "1d"
REPEATS = 15
RESULTS = Path(__file__).resolve().parent / "results" / "fidelity.json"


def session(model: ir.Model | str | Path, fed: frozenset[str] = frozenset()) -> ort.InferenceSession:
    """onnxruntime session with default options; initializers named in `fed` become inputs fed per draw."""
    options = ort.SessionOptions()
    options.log_severity_level = 3
    if not isinstance(model, ir.Model):
        return ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
    proto = ir.to_proto(model)
    moved = [t for t in proto.graph.initializer if t.name in fed]
    kept = [t for t in proto.graph.initializer if t.name not in fed]
    del proto.graph.initializer[:]
    proto.graph.initializer.extend(kept)
    proto.graph.input.extend(onnx.helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)) for t in moved)
    return ort.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])


def output_error(outputs: np.ndarray, full_precision: np.ndarray) -> float:
    """Mean over samples of |y - y_fp| / |y_fp| (Euclidean norms of the logits)."""
    return float(np.mean(np.linalg.norm(outputs - full_precision, axis=1) / np.linalg.norm(full_precision, axis=1)))


def hetmap_output_error(
    model: ir.Model, target: Target, x: np.ndarray, full_precision: np.ndarray, seeds: int, seed: int = 0
) -> np.ndarray:
    """Output error [drift time, draw], drawn as `hetmap run` draws (hetmap.sim.simulation's generators: same chips)."""
    simulation = build_simulation(model, target)
    names = frozenset(simulation.drawn_names())
    run = session(simulation.model, names)
    name = simulation.model.graph.inputs[0].name
    result = np.zeros((len(DRIFTS), seeds))
    for draw in range(seeds):
        program_rng, read_rngs = draw_generators(seed, draw, len(DRIFTS))
        programmed = simulation.program(program_rng)
        for index, drift in enumerate(DRIFTS):
            weights = simulation.read(programmed, parse_drift(drift), read_rngs[index])
            result[index, draw] = output_error(run.run(None, {name: x, **weights})[0], full_precision)
    return result


def fidelity(name: str, model: ir.Model, target: Target, seeds: int) -> dict:
    data_path = reference_path(f"{name}.test.npz")
    dataset = load_dataset(data_path, {v.name: v.dtype.numpy() for v in graph_inputs(model)})
    x, y = next(iter(dataset.inputs.values())), dataset.labels
    full_precision = session(model).run(None, {model.graph.inputs[0].name: x})[0]
    times = [parse_drift(drift) for drift in DRIFTS]

    started = time.perf_counter()
    ours = evaluate(model, str(data_path), dataset, list(DRIFTS), seeds)
    ours_error = hetmap_output_error(model, target, x, full_precision, seeds)
    hetmap_seconds = time.perf_counter() - started

    module = reference.torch_reference(name, model)
    parity = reference.check_parity(module, model, x)
    metrics = {
        "accuracy": lambda outputs: float(np.mean(outputs.argmax(axis=1) == y)),
        "output_error": lambda outputs: output_error(outputs, full_precision),
    }
    started = time.perf_counter()
    analog = reference.analog_reference(module, model, target, blocks="aihwkit")
    theirs = reference.scores_over_drift(analog, x, times, seeds, metrics)
    aihwkit_seconds = time.perf_counter() - started
    same_blocks = None
    if any(int(node.metadata_props["hetmap.blocks"].split("x")[0]) > 1 for node in _analog_nodes(model)):
        aligned = reference.analog_reference(module, model, target, blocks="hetmap")
        same_blocks = reference.scores_over_drift(aligned, x, times, seeds, metrics)

    rows = []
    for index, (drift, result) in enumerate(zip(DRIFTS, ours.drifts)):
        row = {
            "drift": drift,
            "hetmap_accuracy": result.mean,
            "hetmap_accuracy_std": result.std,
            "aihwkit_accuracy": float(theirs["accuracy"][index].mean()),
            "aihwkit_accuracy_std": float(theirs["accuracy"][index].std()),
            "hetmap_output_error": float(ours_error[index].mean()),
            "aihwkit_output_error": float(theirs["output_error"][index].mean()),
            "output_error_sem": float(
                np.hypot(ours_error[index].std(), theirs["output_error"][index].std()) / np.sqrt(seeds)
            ),
        }
        row["delta_pp"] = 100 * (row["hetmap_accuracy"] - row["aihwkit_accuracy"])
        # standard error of the difference of the two means: what the draws can resolve
        row["delta_sem_pp"] = 100 * float(
            np.hypot(np.std(result.per_seed), theirs["accuracy"][index].std()) / np.sqrt(seeds)
        )
        row["pass"] = abs(row["delta_pp"]) <= TOLERANCE_PP
        if same_blocks is not None:
            row["aihwkit_same_blocks_accuracy"] = float(same_blocks["accuracy"][index].mean())
            row["aihwkit_same_blocks_output_error"] = float(same_blocks["output_error"][index].mean())
        rows.append(row)
    return {
        "draws": seeds,
        "full_precision": ours.full_precision,
        "nominal": ours.nominal,
        "torch_parity_relative_error": parity,
        "seconds": {"hetmap": hetmap_seconds, "aihwkit": aihwkit_seconds},
        "drifts": rows,
        "pass": all(row["pass"] for row in rows),
    }


def _analog_nodes(model: ir.Model) -> list[ir.Node]:
    return [node for node in model.graph if node.metadata_props.get("hetmap.option") == "analog"]


def _best_interleaved(functions: dict, repeats: int = REPEATS) -> dict[str, float]:
    """Best wall time of each function over `repeats` rounds, the functions taking turns within a round."""
    times = {key: [] for key in functions}
    for function in functions.values():
        function()  # warm-up
    for _ in range(repeats):
        for key, function in functions.items():
            start = time.perf_counter()
            function()
            times[key].append(time.perf_counter() - start)
    return {key: min(values) for key, values in times.items()}


def profile(run: ort.InferenceSession, feeds: dict, runs: int = 10) -> list[dict]:
    """Kernel time per op type of a session created with profiling on, largest first."""
    for _ in range(runs):
        run.run(None, feeds)
    events = json.loads(Path(run.end_profiling()).read_text())
    per_op, count = collections.Counter(), collections.Counter()
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            per_op[event["args"]["op_name"]] += event["dur"]
            count[event["args"]["op_name"]] += 1
    total = sum(per_op.values()) or 1
    return [
        {"op": op, "share": microseconds / total, "us_per_run": microseconds / runs, "nodes": count[op] // runs}
        for op, microseconds in per_op.most_common()
    ]


def speed(name: str, model: ir.Model, target: Target, folder: Path) -> dict:
    import torch

    x = np.load(reference_path(f"{name}.test.npz"))["x"]
    t_s = parse_drift(SPEED_DRIFT)
    full_precision = session(reference_path(f"{name}.onnx"))
    simulation = build_simulation(model, target)
    rng = np.random.default_rng(0)
    weights = simulation.read(simulation.program(rng), t_s, rng)
    names = frozenset(simulation.drawn_names())
    fed = session(simulation.model, names)
    simulation.bake(weights)
    baked = session(simulation.model)
    input_name = simulation.model.graph.inputs[0].name

    module = reference.torch_reference(name, model)
    analog = reference.analog_reference(module, model, target)
    inputs = torch.from_numpy(x)
    with torch.no_grad():
        analog.program_analog_weights()
        analog.drift_analog_weights(t_s)

    def aihwkit_forward():
        with torch.no_grad():
            analog(inputs)

    def hetmap_draw():
        generator = np.random.default_rng(1)
        fed.run(None, {input_name: x, **simulation.read(simulation.program(generator), t_s, generator)})

    def aihwkit_draw():
        with torch.no_grad():
            analog.program_analog_weights()
            analog.drift_analog_weights(t_s)
            analog(inputs)

    best = _best_interleaved(
        {
            "full_precision": lambda: full_precision.run(None, {"x": x}),
            "simulation_baked": lambda: baked.run(None, {input_name: x}),
            "simulation_fed": lambda: fed.run(None, {input_name: x, **weights}),
            "aihwkit_forward": aihwkit_forward,
        }
    )
    draws = _best_interleaved({"hetmap_draw": hetmap_draw, "aihwkit_draw": aihwkit_draw}, repeats=5)

    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.enable_profiling = True
    options.profile_file_prefix = str(folder / f"{name}-profile")
    profiled = ort.InferenceSession(
        ir.to_proto(simulation.model).SerializeToString(), options, providers=["CPUExecutionProvider"]
    )
    return {
        "batch": int(len(x)),
        "seconds": {**best, **draws},
        "simulation_over_full_precision": best["simulation_baked"] / best["full_precision"],
        "aihwkit_over_simulation": best["aihwkit_forward"] / best["simulation_baked"],
        "aihwkit_draw_over_hetmap_draw": draws["aihwkit_draw"] / draws["hetmap_draw"],
        "pass_sim_over_fp": best["simulation_baked"] / best["full_precision"] <= GOAL_SIM_OVER_FP,
        "pass_aihwkit_over_sim": best["aihwkit_forward"] / best["simulation_baked"] >= GOAL_AIHWKIT_OVER_SIM,
        "simulation_profile": profile(profiled, {input_name: x})[:8],
        "threads": {"torch": torch.get_num_threads()},
    }


def _print_fidelity(name: str, result: dict, seeds: int) -> None:
    print(
        f"\n{name}: full precision {100 * result['full_precision']:.2f} %, hetmap nominal (converters, no noise) "
        f"{100 * result['nominal']:.2f} %, {seeds} draws; torch reference parity {result['torch_parity_relative_error']:.1e}"
    )
    same = "aihwkit_same_blocks_accuracy" in result["drifts"][0]
    header = (
        f"  {'drift':<5} {'hetmap %':>15} {'aihwkit %':>15} {'delta pp':>8} {'(+-sem)':>7}  {'goal':<5} "
        f"{'out err hetmap':>14} {'aihwkit':>8} {'(+-sem)':>8}"
    )
    print(header + ("   same blocks: acc %  out err" if same else ""))
    for row in result["drifts"]:
        line = (
            f"  {row['drift']:<5} {100 * row['hetmap_accuracy']:7.2f} +-{100 * row['hetmap_accuracy_std']:5.2f} "
            f"{100 * row['aihwkit_accuracy']:7.2f} +-{100 * row['aihwkit_accuracy_std']:5.2f} {row['delta_pp']:+8.2f} {row['delta_sem_pp']:7.2f}  "
            f"{'PASS' if row['pass'] else 'FAIL':<5} {row['hetmap_output_error']:14.4f} {row['aihwkit_output_error']:8.4f} "
            f"{row['output_error_sem']:8.4f}"
        )
        if same:
            line += (
                f"   {100 * row['aihwkit_same_blocks_accuracy']:18.2f} {row['aihwkit_same_blocks_output_error']:8.4f}"
            )
        print(line)


def _print_speed(results: dict) -> None:
    print(
        f"\nspeed on the whole test set (best of {REPEATS}; simulation drawn at {SPEED_DRIFT}; default onnxruntime options)"
    )
    print(
        f"  {'model':<12} {'fp ms':>7} {'sim ms':>7} {'fed ms':>7} {'sim/fp':>7} {'goal':<5} {'aihwkit ms':>10} "
        f"{'aihwkit/sim':>11} {'goal':<5} {'draw: aihwkit/hetmap':>20}"
    )
    for name, r in results.items():
        s = r["seconds"]
        print(
            f"  {name:<12} {1e3 * s['full_precision']:7.2f} {1e3 * s['simulation_baked']:7.2f} {1e3 * s['simulation_fed']:7.2f} "
            f"{r['simulation_over_full_precision']:6.2f}x {'PASS' if r['pass_sim_over_fp'] else 'FAIL':<5} "
            f"{1e3 * s['aihwkit_forward']:10.2f} {r['aihwkit_over_simulation']:10.2f}x {'PASS' if r['pass_aihwkit_over_sim'] else 'FAIL':<5} "
            f"{r['aihwkit_draw_over_hetmap_draw']:19.2f}x"
        )
    print(f"  goals: sim/fp <= {GOAL_SIM_OVER_FP}x, aihwkit/sim >= {GOAL_AIHWKIT_OVER_SIM}x")
    print("\nwhere the simulation's time goes (onnxruntime kernel time by op type)")
    for name, r in results.items():
        top = ", ".join(f"{p['op']} {100 * p['share']:.0f}% ({p['nodes']})" for p in r["simulation_profile"][:5])
        print(f"  {name:<12} {top}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=20, help="Monte-Carlo draws per model (default 20)")
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated reference models")
    parser.add_argument(
        "--only", choices=("fidelity", "speed"), help="run one half (the JSON keeps the other from the last run)"
    )
    args = parser.parse_args()
    names = [n for n in args.models.split(",") if n]
    target = load_target("hermes")
    fidelity_results, speed_results = {}, {}
    with tempfile.TemporaryDirectory(prefix="hetmap-fidelity-") as tmp:
        for name in names:
            folder = Path(tmp) / name
            compile_model(
                reference_path(f"{name}.onnx"),
                target,
                folder,
                data_path=reference_path(f"{name}.test.npz"),
                decision=Decision("all-analog"),
            )
            model = ir.load(folder / "model.mapped.onnx")
            if args.only != "speed":
                fidelity_results[name] = fidelity(name, model, target, args.seeds)
                _print_fidelity(name, fidelity_results[name], args.seeds)
            if args.only != "fidelity":
                speed_results[name] = speed(name, model, target, folder)
    if speed_results:
        _print_speed(speed_results)
    if RESULTS.is_file():  # models and halves not run now keep their last results
        previous = json.loads(RESULTS.read_text())
        fidelity_results = {**previous.get("fidelity", {}), **fidelity_results}
        speed_results = {**previous.get("speed", {}), **speed_results}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "target": "hermes",
                "mapping": "all-analog",
                "tolerance_pp": TOLERANCE_PP,
                "goals": {
                    "simulation_over_full_precision_max": GOAL_SIM_OVER_FP,
                    "aihwkit_over_simulation_min": GOAL_AIHWKIT_OVER_SIM,
                },
                "fidelity": fidelity_results,
                "speed": speed_results,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"\nwrote {RESULTS.relative_to(Path.cwd()) if RESULTS.is_relative_to(Path.cwd()) else RESULTS}")


if __name__ == "__main__":
    main()

"""Quality of the decisions: hetmap's mapping against all-analog and all-digital, per reference model.

For each reference model on hermes, at a 0.5-point budget at 1 day of drift
(both objectives), and for the all-analog and all-INT8 baselines scored by
the same simulator, data and seeds: analog weight share, energy against
all-INT8, measured accuracy drop. Then the solver alone on a random
200-layer x 4-option problem (goal: under 1 s).

    python -m bench.quality
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import numpy as np

from hetmap.driver import Decision, compile_model
from hetmap.mapping.solver import Problem, solve
from hetmap.models import reference_path
from hetmap.targets import load_target

MODELS = ("cnn", "mlp", "resnet", "transformer", "resnet8", "resnet20")
BUDGET_POINTS = 0.5
SEEDS = 3
SOLVER_GOAL_S = 1.0


def _row(folder: Path) -> dict:
    reports = {p.stem: json.loads(p.read_text()) for p in (folder / "reports").glob("*.json")}
    assign, schedule = reports["assign"], reports["schedule"]
    chosen = next((a for a in assign["attempts"] if a["mapping"] == assign["mapping"]["layers"]), None)
    return {
        "analog_weight_share": reports["emit"]["analog_weight_share"],
        "energy_vs_int8": schedule["total_energy_pj"] / schedule["digital_baseline_energy_pj"],
        "measured_drop_points": chosen["measured_drop_points"] if chosen else None,
        "within_budget": assign.get("within_budget"),
    }


def _baseline(model: str, folder: Path, preset: str) -> dict:
    """A preset mapping scored like hetmap's: one compile with the solver's measurement of it."""
    from hetmap.graph.data import load_dataset
    from hetmap.graph.modelio import read_model
    from hetmap.graph.shapes import graph_inputs
    from hetmap.sim.drift import parse_drift
    from hetmap.sim.scorer import Scorer

    compile_model(
        reference_path(f"{model}.onnx"),
        load_target("hermes"),
        folder,
        reference_path(f"{model}.test.npz"),
        decision=Decision(preset),
    )
    annotated = read_model(folder / "model.mapped.onnx")
    dataset = load_dataset(
        reference_path(f"{model}.test.npz"), {v.name: v.dtype.numpy() for v in graph_inputs(annotated)}
    )
    scorer = Scorer(annotated, dataset)
    _, per_time = scorer.simulate(annotated, load_target("hermes"), [parse_drift("1d")], SEEDS)
    row = _row(folder)
    row["measured_drop_points"] = float(100 * (scorer.full_precision - np.mean(per_time[0])))
    return row


def main() -> None:
    results = {}
    print(f"hermes, budget {BUDGET_POINTS} points at 1 day, {SEEDS} seeds, scored on each model's test set")
    print(
        f"{'model':12s} {'mapping':22s} {'analog share':>12s} {'energy/INT8':>11s} {'drop (pts)':>10s} {'seconds':>8s}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        for model in MODELS:
            rows = {}
            for objective in ("energy", "analog-share"):
                folder = Path(tmp) / f"{model}-{objective}"
                start = time.perf_counter()
                compile_model(
                    reference_path(f"{model}.onnx"),
                    load_target("hermes"),
                    folder,
                    reference_path(f"{model}.test.npz"),
                    decision=Decision(None, BUDGET_POINTS, objective, "1d", SEEDS),
                )
                rows[f"hetmap ({objective})"] = {**_row(folder), "seconds": time.perf_counter() - start}
            for preset in ("all-analog", "all-digital-int8"):
                rows[preset] = _baseline(model, Path(tmp) / f"{model}-{preset}", preset)
            for name, row in rows.items():
                seconds = f"{row['seconds']:.1f}" if "seconds" in row else ""
                print(
                    f"{model:12s} {name:22s} {row['analog_weight_share']:12.1%} {row['energy_vs_int8']:11.2f} "
                    f"{row['measured_drop_points']:10.2f} {seconds:>8s}"
                )
            results[model] = rows
    rng = np.random.default_rng(0)
    layers, options = 200, ["analog", "int8", "int4", "int2"]
    problem = Problem(
        [f"layer{i}" for i in range(layers)],
        options,
        np.abs(rng.normal(0, 0.05, (layers, 4))) * [1, 0.1, 0.5, 2],
        rng.uniform(1, 10, (layers, 4)) * [0.2, 1, 0.6, 0.4],
        rng.integers(100, 10000, layers).astype(float),
        rng.integers(1, 4, layers).astype(float),
        300,
        np.ones((layers, 4), bool),
    )
    for objective in ("energy", "analog-share"):
        start = time.perf_counter()
        solve(problem, 3.0, objective)
        seconds = time.perf_counter() - start
        verdict = "PASS" if seconds < SOLVER_GOAL_S else "FAIL"
        print(f"solver, 200 layers x 4 options, {objective}: {seconds:.3f} s (goal < {SOLVER_GOAL_S} s: {verdict})")
        results[f"solver_seconds_{objective}"] = seconds
    out = Path(__file__).parent / "results" / "quality.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"command": "python -m bench.quality", **results}, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()

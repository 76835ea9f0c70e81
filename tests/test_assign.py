"""Sensitivity, cost model, the assignment MILP, and the measured end-to-end budget."""

import json

import numpy as np
import pytest

from hetmap.driver import Decision, compile_model
from hetmap.graph.data import load_dataset
from hetmap.graph.modelio import read_model
from hetmap.mapping.mapping import target_options
from hetmap.mapping.solver import Problem, predicted_drop, solve
from hetmap.models import reference_path
from hetmap.sim.run import evaluate
from hetmap.targets import load_target

HERMES = load_target("hermes")


def problem(drop, energy, tiles=(1, 1, 1), tile_count=10, weights=(1, 1, 1)):
    drop, energy = np.array(drop, float), np.array(energy, float)
    return Problem(
        [f"l{i}" for i in range(len(drop))],
        ["analog", "int8"],
        drop,
        energy,
        np.array(weights, float),
        np.array(tiles, float),
        tile_count,
        np.ones(drop.shape, bool),
    )


# The MILP.


def test_energy_objective_takes_the_cheapest_options_the_budget_allows():
    p = problem(drop=[[0.3, 0], [0.3, 0], [0.3, 0]], energy=[[1, 5], [1, 5], [1, 5]])
    mapping = solve(p, budget=0.6)
    assert sorted(mapping.values()) == ["analog", "analog", "int8"]
    assert predicted_drop(p, mapping) <= 0.6


def test_capacity_limits_the_analog_layers():
    p = problem(drop=[[0, 0]] * 3, energy=[[1, 5]] * 3, tiles=(4, 4, 4), tile_count=8)
    assert list(solve(p, budget=1.0).values()).count("analog") == 2


def test_analog_share_objective_prefers_the_largest_layers():
    p = problem(drop=[[0.5, 0]] * 3, energy=[[5, 1]] * 3, weights=(10, 1000, 100))
    assert solve(p, budget=0.5, objective="analog-share") == {"l0": "int8", "l1": "analog", "l2": "int8"}


def test_an_excluded_mapping_is_not_chosen_again():
    p = problem(drop=[[0, 0]] * 3, energy=[[1, 5]] * 3)
    first = solve(p, budget=1.0)
    assert solve(p, budget=1.0, excluded=[first]) != first


def test_no_mapping_meets_an_impossible_budget():
    assert solve(problem(drop=[[1, 1]] * 3, energy=[[1, 1]] * 3), budget=0.5) is None


# End to end on a reference model.


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    folder = tmp_path_factory.mktemp("mlp")
    compile_model(
        reference_path("mlp.onnx"),
        HERMES,
        folder / "out",
        reference_path("mlp.test.npz"),
        decision=Decision(None, max_drop=0.5, objective="analog-share", seeds=2, confidence=0),
    )
    return folder / "out"


def test_sensitivity_covers_every_layer_and_option(compiled):
    sensitivity = json.loads((compiled / "reports" / "sensitivity.json").read_text())
    partition = json.loads((compiled / "reports" / "partition.json").read_text())
    assert set(sensitivity["layers"]) == {layer["name"] for layer in partition["layers"]}
    for drops in sensitivity["layers"].values():
        assert list(drops) == target_options(HERMES)
        assert all(drops[option]["std_points"] == 0 for option in ("int8", "int4", "int2"))  # deterministic


def test_the_shipped_mapping_was_verified_within_the_budget_on_held_out_samples(compiled):
    assign = json.loads((compiled / "reports" / "assign.json").read_text())
    chosen = [a for a in assign["attempts"] if a["mapping"] == assign["mapping"]["layers"]]
    verification = assign["verification"]
    assert assign["within_budget"] and verification["verdict"] == "within" and verification["held_out"]
    assert chosen[-1]["verified_drop_points"] == verification["drop_points"] <= 0.5  # confidence 0: the mean decides
    samples = len(np.load(reference_path("mlp.test.npz"))["y"])
    assert verification["samples"] == pytest.approx(samples / 2, abs=10)


def test_running_the_mapped_model_reproduces_the_measured_drop(compiled):
    annotated = read_model(compiled / "model.mapped.onnx")
    dataset = load_dataset(reference_path("mlp.test.npz"), {"x": np.dtype(np.float32)})
    report = evaluate(annotated, "mlp", dataset, ["1d"], seeds=2)
    assert 100 * (report.full_precision - report.drifts[0].mean) <= 0.5


def test_a_cosine_budget_verifies_on_the_held_out_samples_at_the_default_confidence(tmp_path):
    """Per-sample cosine moves by hundredths of a point: its interval is its own spread, and analog ships."""
    compile_model(
        reference_path("cnn.onnx"),
        HERMES,
        tmp_path / "out",
        reference_path("cnn.test.npz"),
        decision=Decision(None, max_drop=0.5, objective="analog-share"),
        metric="cosine",
    )
    assign = json.loads((tmp_path / "out" / "reports" / "assign.json").read_text())
    verification = assign["verification"]
    assert assign["within_budget"] and verification["verdict"] == "within"
    assert verification["high_points"] - verification["low_points"] < 0.5
    assert assign["mapping"]["layers"] and "analog" in assign["mapping"]["layers"].values()

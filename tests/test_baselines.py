"""The headline's baselines (bench/baselines.py) on the reference MLP, in their quick setting: each does what its method says."""

from __future__ import annotations

import dataclasses

import pytest

from bench.baselines import Setting, all_analog_finetuned, hessian, layer_by_layer, prepare, preset
from hetmap.mapping.mapping import ANALOG
from hetmap.models import reference_path
from hetmap.targets import load_target

QUICK = Setting(seeds=2, epochs=1, layer_steps=5)
HWA_TOLERANCE_POINTS = 0.5


@pytest.fixture(scope="module")
def mlp():
    return prepare(
        reference_path("mlp.onnx"),
        load_target("hermes"),
        reference_path("mlp.test.npz"),
        reference_path("mlp.train.npz"),
    )


def test_layer_by_layer_moves_the_largest_layers_first_and_keeps_the_budget(mlp):
    result = layer_by_layer(mlp, QUICK)
    moves = result.details["moves"]
    assert [m["layer"] for m in moves] == [l.name for l in sorted(mlp.layers, key=lambda l: -l.macs)]
    assert all(m["kept"] == (m["drop_points"] <= QUICK.max_drop) for m in moves)
    assert {n for n, o in result.mapping.items() if o == ANALOG} == {m["layer"] for m in moves if m["kept"]}
    assert result.drop_points <= QUICK.max_drop
    assert result.seconds > 0


def test_layer_by_layer_reverts_the_weights_of_a_rejected_move(mlp):
    """With no budget every move is rejected: all-INT8 on the weights the model came with."""
    strict = dataclasses.replace(QUICK, max_drop=-100.0)
    result = layer_by_layer(mlp, strict)
    assert not any(m["kept"] for m in result.details["moves"])
    assert result.analog_weight_share == 0
    assert result.accuracy == preset(mlp, strict, "int8").accuracy


def test_hessian_ranks_every_layer_and_moves_them_in_that_order(mlp):
    result = hessian(mlp, QUICK)
    ranking = result.details["ranking"]
    assert sorted(ranking) == sorted(layer.name for layer in mlp.layers)
    sensitivity = result.details["sensitivity"]
    assert [sensitivity[n] for n in ranking] == sorted(sensitivity.values())
    moved = [m["layer"] for m in result.details["moves"]]
    assert moved == ranking[: len(moved)]
    assert {n for n, o in result.mapping.items() if o == ANALOG} == {
        m["layer"] for m in result.details["moves"] if m["kept"]
    }
    assert result.drop_points <= QUICK.max_drop


def test_presets_and_hardware_aware_fine_tuning(mlp):
    analog, int8 = preset(mlp, QUICK, ANALOG), preset(mlp, QUICK, "int8")
    assert (analog.analog_weight_share, int8.analog_weight_share, int8.energy_vs_int8) == (1.0, 0.0, 1.0)
    tuned = all_analog_finetuned(mlp, QUICK)
    assert tuned.analog_weight_share == 1.0 and tuned.seconds > 0
    assert tuned.accuracy >= analog.accuracy - HWA_TOLERANCE_POINTS

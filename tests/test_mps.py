"""The MPS baseline (bench/mps.py) and the comparison (bench/compare.py) in their small setting."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from bench import compare
from bench.baselines import prepare
from bench.mps import OPTIONS, MpsSetting, budget_steps, pareto_ranks, phase_steps, rank_loss, run_mps
from hetmap.mapping.mapping import ANALOG
from hetmap.models import reference_path
from hetmap.targets import load_target


@pytest.mark.parametrize("total", [3, 4, 10, 60, 471])
def test_phase_budgets_add_up_to_the_step_budget(total):
    first, second, third = phase_steps(total)
    assert first + second + third == total and min(first, second, third) >= 1
    assert abs(third - 0.2 * total) <= 1


def test_the_budget_is_hetmaps_fine_tune_steps():
    assert budget_steps(1257, 3, 64) == 3 * 20


def test_pareto_ranks_sort_by_domination():
    # (accuracy up, analog MAC ratio up, digital bits down)
    objectives = [(0.9, 0.5, 10.0), (0.8, 0.5, 10.0), (0.9, 0.9, 0.0), (0.5, 1.0, 0.0)]
    assert pareto_ranks(objectives) == [1, 2, 0, 0]


def test_rank_loss_makes_better_mappings_more_likely():
    logits = torch.zeros(2, 3, requires_grad=True)
    choices = np.array([[2, 2], [0, 0]])  # the all-analog mapping ranks better than all-fp
    loss = rank_loss(logits, choices, [0, 1], margin=0.1)
    loss.backward()
    assert float(loss.detach()) == pytest.approx(0.1)
    assert (logits.grad[:, 2] < 0).all() and (logits.grad[:, 0] > 0).all()  # descent raises analog, lowers fp


@pytest.fixture(scope="module")
def mlp():
    return prepare(
        reference_path("mlp.onnx"),
        load_target("hermes"),
        reference_path("mlp.test.npz"),
        reference_path("mlp.train.npz"),
    )


def test_mps_moves_the_logits_and_maps_every_layer(mlp):
    result = run_mps(mlp, MpsSetting(steps=5, samples=6, proxy_samples=64), "1d")
    names = [layer.name for layer in mlp.layers]
    assert sum(result.phase_steps) == 5 and len(result.rank_losses) == result.phase_steps[2]
    assert set(result.mapping) == set(names) and set(result.mapping.values()) <= set(OPTIONS)
    assert set(result.hardware_mapping.values()) <= {"int8", ANALOG}
    moved = [np.abs(np.subtract(result.logits[n], result.initial_logits[n])).max() for n in names]
    assert max(moved) > 0
    assert result.mapping == {n: OPTIONS[int(np.argmax(result.logits[n]))] for n in names}
    weights = {
        n: v.const_value.numpy()
        for n, v in result.model.graph.initializers.items()
        if n in mlp.model.graph.initializers
    }
    assert any(not np.array_equal(w, mlp.model.graph.initializers[n].const_value.numpy()) for n, w in weights.items())


def test_quick_comparison_has_every_row_within_bounds(tmp_path):
    payload = compare.main(["--quick", "--out", str(tmp_path)])
    rows = payload["models"][compare.QUICK_MODEL]["rows"]
    assert list(rows) == list(compare.ROWS)
    for method, row in rows.items():
        assert set(row["accuracy"]) == set(compare.DRIFTS), method
        assert all(0 <= row["accuracy"][d]["mean"] <= 100 for d in compare.DRIFTS), method
        assert 0 <= row["analog_mac_share"] <= 1 and 0 <= row["analog_weight_share"] <= 1, method
        assert row["seconds"] >= 0, method
    assert rows["all-analog"]["analog_weight_share"] == 1 and rows["all-int8"]["energy_vs_int8"] == 1
    assert len(rows["mps"]["accuracy"]["1d"]["per_seed"]) == payload["seeds"] == 2
    assert (
        sum(rows["mps"]["details"]["phase_steps"])
        == rows["mps"]["details"]["steps"]
        == payload["models"]["mlp"]["steps"]
    )
    assert {g["goal"] for g in payload["goals"]} and all(g["status"] for g in payload["goals"])
    assert json.loads((tmp_path / "compare.quick.json").read_text())["command"].startswith("python -m bench.compare")
    assert "Nature Communications" in (tmp_path / "compare.quick.md").read_text()

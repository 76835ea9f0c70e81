"""Draws share what no draw changes (hetmap.sim.prefix): a mapping's analog layers' forward cone runs per draw and
drift time, the rest once, and every run scores as the whole model does.
"""

import numpy as np
import onnx
import pytest

from helpers import compile_in_memory, compiled_example, partition, reference_path
from hetmap.graph.data import Dataset
from hetmap.sim import prefix
from hetmap.sim import scorer as scorer_module
from hetmap.sim.jobs import Workers
from hetmap.sim.scorer import Scorer
from hetmap.targets import load_target

HERMES = load_target("hermes")


@pytest.mark.parametrize(
    "baked, kept_bytes, batch",
    [(False, prefix.KEPT_BYTES, 16), (True, prefix.KEPT_BYTES, 16), (False, 0, 16), (False, prefix.KEPT_BYTES, 256)],
)
def test_what_no_draw_changes_runs_once_and_every_run_scores_as_the_whole_model_does(
    baked, kept_bytes, batch, monkeypatch
):
    """resnet20 with its last four layers analog: only their forward cone runs per draw and drift time."""
    proto = onnx.load(reference_path("resnet20.onnx"))
    feeds = {"x": np.load(reference_path("resnet20.test.npz"))["x"][:40]}
    names = [layer.name for layer in partition(proto, HERMES, {"x": feeds["x"].shape}).layers]
    mapping = {name: "analog" if index >= len(names) - 4 else "int4" for index, name in enumerate(names)}
    annotated = compile_in_memory(proto, HERMES, mapping, feeds)[0]
    scorer = Scorer(annotated, Dataset(feeds, None, "x"), metric="cosine")
    scorer.batch = batch  # 40 samples: three chunks of 16, or one
    monkeypatch.setattr(scorer_module, "BAKED_FROM_SAMPLES", 1 if baked else 10**9)
    monkeypatch.setattr(prefix, "KEPT_BYTES", kept_bytes)
    splits, split_at_analog = [], scorer_module.split_at_analog
    monkeypatch.setattr(
        scorer_module, "split_at_analog", lambda *args: splits.append(split_at_analog(*args)) or splits[-1]
    )
    times = [3600.0, 86400.0]
    shared = scorer.simulate(annotated, HERMES, times, 2, with_nominal=True, per_sample=True)
    cone = splits[0]
    assert cone is not None and "x" not in {value.name for value in cone.model.graph.inputs}  # fed activations
    assert len(cone.feeds.kept) == (-(-40 // batch) if kept_bytes else 0)
    monkeypatch.setattr(prefix, "COMPUTE_OPS", frozenset())  # nothing counts as worth a cut: the whole model per run
    whole = scorer.simulate(annotated, HERMES, times, 2, with_nominal=True, per_sample=True)
    assert splits[1] is None
    np.testing.assert_array_equal(shared[0], whole[0])
    for per_seed, expected in zip(shared[1], whole[1]):
        for scores, want in zip(per_seed, expected):
            np.testing.assert_array_equal(scores, want)
    assert len({float(np.mean(scores)) for scores in shared[1][0]}) == 2  # the draws differ


def test_a_worker_computes_what_no_draw_changes_once_for_its_draws_and_local_ones_get_none_to_share(monkeypatch):
    """Draws on a cluster split the model as runs in this process do; a local pool gets only mappings that share
    no prefix (one process computing it once beats two computing it each)."""
    proto = onnx.load(reference_path("resnet20.onnx"))
    feeds = {"x": np.load(reference_path("resnet20.test.npz"))["x"][:16]}
    names = [layer.name for layer in partition(proto, HERMES, {"x": feeds["x"].shape}).layers]
    mapping = {name: "analog" if index >= len(names) - 2 else "int8" for index, name in enumerate(names)}
    annotated = compile_in_memory(proto, HERMES, mapping, feeds)[0]
    mixed = compiled_example("resnet", "hermes", "mixed")[0]  # its first layer analog: nothing before it
    assert not scorer_module._draws_to_workers(Workers(2), 4, annotated)
    assert scorer_module._draws_to_workers(Workers(2, "auto"), 4, annotated)
    assert scorer_module._draws_to_workers(Workers(2), 4, mixed) and not scorer_module._draws_to_workers(
        Workers(2), 3, mixed
    )
    shared = scorer_module._Runs(HERMES, [3600.0], 0, prefix.Chunks(feeds), 16, None, False)
    splits, split_at_analog = [], scorer_module.split_at_analog
    monkeypatch.setattr(
        scorer_module, "split_at_analog", lambda *args: splits.append(split_at_analog(*args)) or splits[-1]
    )
    outputs = scorer_module._draws_outputs(annotated, shared, [0, 1])
    scorer = Scorer(annotated, Dataset(feeds, None, "x"))
    assert len(splits) == 1 and splits[0] is not None
    per_time = scorer.simulate(annotated, HERMES, [3600.0], 2)[1]
    assert splits[1] is not None
    assert [scorer.score_outputs(draw[0], "draw") for draw in outputs] == per_time[0]

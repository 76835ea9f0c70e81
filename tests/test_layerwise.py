"""Sensitivity from cached activations, stacked suffix runs and the sample screen decides as whole-model simulation does."""

import copy
import gc
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir
import pytest

import messy_models as messy
from helpers import REFERENCE_MODELS, as_target, compiled_example, random_inputs
from hetmap.graph.data import Dataset
from hetmap.graph.shapes import resolve_input_shapes
from hetmap.models import reference_path
from hetmap.passes.assign import Assign, AssignOptions
from hetmap.passes.calibrate import Calibrate
from hetmap.passes.canonicalize import Canonicalize
from hetmap.passes.partition import Partition
from hetmap.passes.sensitivity import Sensitivity
from hetmap.pipeline import CompileConfig, PassContext, run_pipeline
from hetmap.sim import activations, layerwise, sessions
from hetmap.sim.cut import find_cut
from hetmap.sim.jobs import Workers
from hetmap.sim.measure import Measurement
from hetmap.sim.run import evaluate

MEASUREMENT = Measurement("1d", seeds=2)


def reference(name: str, samples: int = 48) -> tuple[onnx.ModelProto, Dataset]:
    data = np.load(reference_path(f"{name}.test.npz"))
    return onnx.load(reference_path(f"{name}.onnx")), Dataset({"x": data["x"][:samples]}, data["y"][:samples], name)


def decide(
    proto, dataset: Dataset | None, engine: str, target="hermes", assign=True, metric="auto", budget=None, device="cpu"
):
    """Canonicalize .. sensitivity (with `engine`, stopping options sure to break `budget`) .. assign (at 1 point)."""
    model = ir.serde.deserialize_model(copy.deepcopy(proto))
    shapes = resolve_input_shapes(model, dataset, {})
    config = CompileConfig(input_shapes=shapes, dataset=dataset, metric=metric, device=device)
    passes = [Canonicalize(), Partition(), Calibrate(), Sensitivity(MEASUREMENT, engine, budget)]
    passes += [Assign(AssignOptions(max_drop=1.0, measurement=MEASUREMENT))] if assign else []
    _, reports = run_pipeline(model, passes, PassContext(as_target(target), config))
    return reports


def drops(report) -> dict:
    return {
        (layer, option): (d.drop_points, d.std_points) for layer, o in report.layers.items() for option, d in o.items()
    }


def assert_same_drops(whole, suffix, tolerance: float = 1e-9) -> None:
    expected, actual = drops(whole), drops(suffix)
    assert expected.keys() == actual.keys()
    for key, (drop, std) in expected.items():
        assert actual[key] == pytest.approx((drop, std), abs=tolerance), key


@pytest.mark.parametrize("name", REFERENCE_MODELS)
def test_reference_models_get_the_same_drops_and_mapping(name):
    proto, dataset = reference(name)
    whole, suffix = (decide(proto, dataset, engine) for engine in ("whole", "suffix"))
    assert_same_drops(whole["sensitivity"], suffix["sensitivity"])
    assert whole["assign"].mapping == suffix["assign"].mapping
    assert [a.measured_drop_points for a in whole["assign"].attempts] == [
        a.measured_drop_points for a in suffix["assign"].attempts
    ]


@pytest.mark.parametrize(
    "name",
    ["if_and_loop", "multi_input_int64_scalar", "grouped_and_depthwise_conv", "matmul_constant_left", "wide_gemm"],
)
def test_hand_built_models_get_the_same_drops_on_a_small_target(name):
    """Fixed batch sizes (one session per option), row blocks on the tiny target, control flow (whole model)."""
    proto = messy.wide_gemm() if name == "wide_gemm" else messy.HAND_BUILT[name]()
    feeds = random_inputs(proto, batch=4)
    dataset = Dataset(feeds, None, "feeds")
    whole, suffix = (decide(proto, dataset, engine, "tiny", assign=False) for engine in ("whole", "suffix"))
    assert_same_drops(whole["sensitivity"], suffix["sensitivity"])


@pytest.mark.parametrize("name", ["matmul_constant_left", "reshape_transpose_weights"])
def test_no_samples_axis_and_transposed_weights_get_the_same_drops_and_mapping_on_hermes(name):
    """W @ X's output rows are not its input's (no screen applies); a folded Transpose leaves a strided weight,
    whose dequantised copy must be contiguous to be fed in place."""
    proto = messy.HAND_BUILT[name]()
    dataset = Dataset(random_inputs(proto), None, "feeds")
    whole, screened = (decide(proto, dataset, engine, "hermes") for engine in ("whole", "screened"))
    assert_same_drops(whole["sensitivity"], screened["sensitivity"])
    assert whole["assign"].mapping == screened["assign"].mapping


def test_a_layer_of_another_output_drops_nothing_as_on_the_whole_model():
    proto = messy.two_heads()
    dataset = Dataset({"x": np.random.default_rng(0).standard_normal((40, 8), dtype=np.float32)}, None, "x")
    whole, screened = (decide(proto, dataset, engine, "hermes") for engine in ("whole", "screened"))
    assert_same_drops(whole["sensitivity"], screened["sensitivity"])
    assert whole["assign"].mapping == screened["assign"].mapping
    assert all(drop.drop_points == 0 for drop in screened["sensitivity"].layers["second"].values())


@pytest.mark.parametrize("exporter", ["legacy", "dynamo"])
def test_attention_exports_get_the_same_drops_and_mapping_as_the_whole_model(exporter, torch_attention_exports):
    """Activations that do not hold one sample per row send their readers to the whole model; weights split at
    run time are given whole to every range."""
    proto = torch_attention_exports[exporter]
    rng = np.random.default_rng(0)
    dataset = Dataset({proto.graph.input[0].name: rng.standard_normal((24, 6, 8), dtype=np.float32)}, None, "x")
    whole, screened = (decide(proto, dataset, engine, "hermes") for engine in ("whole", "screened"))
    assert_same_drops(whole["sensitivity"], screened["sensitivity"])
    assert whole["assign"].mapping == screened["assign"].mapping
    assert decide(proto, dataset, "first-order", "hermes", assign=False)["sensitivity"].layers.keys() == (
        whole["sensitivity"].layers.keys()
    )


def test_an_sklearn_classifier_whose_labels_are_gathered_gets_the_same_drops():
    """skl2onnx leaves intermediate types unset and ends in ArgMax, ArrayFeatureExtractor and Reshape(-1)."""
    from skl2onnx import to_onnx
    from sklearn.neural_network import MLPClassifier

    rng = np.random.default_rng(0)
    x = rng.standard_normal((40, 6)).astype(np.float32)
    labels = (x[:, 0] > 0).astype(np.int64) + (x[:, 1] > 0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # stopped early
        proto = to_onnx(
            MLPClassifier((16, 8), max_iter=50, random_state=0).fit(x, labels), x[:1], options={"zipmap": False}
        )
    for samples in (2, 40):
        dataset = Dataset({"X": x[:samples]}, None, "feeds")
        whole, suffix = (decide(proto, dataset, engine, "tiny", assign=False) for engine in ("whole", "suffix"))
        assert_same_drops(whole["sensitivity"], suffix["sensitivity"])


def test_a_fixed_batch_reference_model_runs_one_option_per_session_with_the_same_drops():
    proto, dataset = reference("cnn", samples=32)
    proto.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 8
    whole, suffix = (decide(proto, dataset, engine, assign=False) for engine in ("whole", "suffix"))
    assert_same_drops(whole["sensitivity"], suffix["sensitivity"])


def test_a_cut_feeds_activations_and_recomputes_shapes():
    """The suffix of the transformer's first projection reads the residual stream and rebuilds int shapes itself."""
    proto, dataset = reference("transformer", samples=4)
    model = ir.serde.deserialize_model(proto)
    config = CompileConfig(input_shapes=resolve_input_shapes(model, dataset, {}), dataset=dataset)
    model, reports = run_pipeline(model, [Canonicalize(), Partition()], PassContext(as_target("hermes"), config))
    first = reports["partition"].layers[0].name
    cut = find_cut(model, first)
    assert cut.nodes[0].name == first and cut.reaches_output
    assert all(value.dtype in (ir.DataType.FLOAT, ir.DataType.INT64) for value in cut.inputs)
    assert all(value.dtype == ir.DataType.FLOAT for value in cut.inputs if value.producer() is not None)


def one_layer_per_group(names, *args):
    return [([name], True) for name in names]


@pytest.mark.parametrize("carried", [True, False])
@pytest.mark.parametrize("name", ["cnn", "resnet", "transformer", "dynamo"])
def test_activations_carried_from_group_to_group_give_the_same_drops_and_run_the_network_about_once(
    name, carried, monkeypatch, torch_attention_exports
):
    """One layer per group: each group's activations computed from what the last left live (the network runs
    about once), or, with nothing kept, from the inputs again; drops as the whole model's either way."""
    if name == "dynamo":
        proto = torch_attention_exports[name]
        x = np.random.default_rng(0).standard_normal((24, 6, 8), dtype=np.float32)
        dataset = Dataset({proto.graph.input[0].name: x}, None, "x")
    else:
        proto, dataset = reference(name, samples=24)
    whole = decide(proto, dataset, "whole", "tiny", assign=False)["sensitivity"]
    run = []
    segment_model = activations.segment_model
    monkeypatch.setattr(
        activations, "segment_model", lambda m, nodes, *a: run.append(len(nodes)) or segment_model(m, nodes, *a)
    )
    monkeypatch.setattr(layerwise, "_groups", one_layer_per_group)
    monkeypatch.setattr(layerwise, "CACHE_BYTES", layerwise.CACHE_BYTES if carried else 0)
    grouped = decide(proto, dataset, "suffix", "tiny", assign=False)["sensitivity"]
    assert_same_drops(whole, grouped)
    nodes = len(ir.serde.deserialize_model(proto).graph)
    if name in REFERENCE_MODELS:  # the attention export's other layers read activations measured whole
        assert len(run) > 2 and (sum(run) < 1.5 * nodes) == carried


@pytest.mark.parametrize("name", ["multi_input_int64_scalar", "symbolic_dims", "grouped_and_depthwise_conv"])
def test_activations_streamed_range_by_range_give_the_same_drops(name, monkeypatch):
    """No group fits: each layer's activations come range by range, from the nodes they need and the inputs
    those read (a model of two inputs whose first layers read one)."""
    proto = messy.HAND_BUILT[name]()
    dataset = Dataset(random_inputs(proto, batch=8), None, "feeds")
    whole = decide(proto, dataset, "whole", "tiny", assign=False)["sensitivity"]
    monkeypatch.setattr(layerwise, "CACHE_BYTES", 0)
    assert_same_drops(whole, decide(proto, dataset, "suffix", "tiny", assign=False)["sensitivity"])


def sensitivity_with(workers: Workers) -> dict:
    proto, dataset = reference("resnet", samples=32)
    model = ir.serde.deserialize_model(proto)
    shapes = resolve_input_shapes(model, dataset, {})
    config = CompileConfig(input_shapes=shapes, dataset=dataset, workers=workers)
    passes = [Canonicalize(), Partition(), Calibrate(), Sensitivity(MEASUREMENT)]
    return drops(run_pipeline(model, passes, PassContext(as_target("hermes"), config))[1]["sensitivity"])


def run_with(workers: Workers) -> list:
    model, reports = compiled_example("cnn", "hermes", "mixed")
    dataset = Dataset({"x": np.load(reference_path("cnn.test.npz"))["x"][:64]}, None, "cnn")
    report = evaluate(model, "cnn", dataset, ["1h", "1y"], seeds=4, seed=5, workers=workers)
    return [result.per_seed for result in report.drifts]


def test_what_outlives_a_pass_is_frozen_until_the_pipeline_ends_with_the_same_decisions(monkeypatch):
    """A large model's measurements collect after each one: the model, results and torch stay out of it."""
    proto, dataset = reference("resnet")
    plain = decide(proto, dataset, "first-order")
    frozen_in_assign = []
    assign_run = Assign.run

    def counting_run(self, model, context):
        frozen_in_assign.append(gc.get_freeze_count())
        return assign_run(self, model, context)

    monkeypatch.setattr(sessions, "RELEASE_FROM_BYTES", 0)  # every model counts as large
    monkeypatch.setattr(Assign, "run", counting_run)
    frozen = decide(proto, dataset, "first-order")
    assert frozen_in_assign[0] > 10_000  # torch's modules among them
    assert gc.get_freeze_count() == 0
    assert_same_drops(plain["sensitivity"], frozen["sensitivity"])
    assert plain["assign"].mapping == frozen["assign"].mapping


def test_draws_go_to_local_workers_only_when_they_share_out_evenly():
    assert Workers(2).even(4) and not Workers(2).even(3) and Workers(16).even(3) and Workers(1, "local").even(3)


def test_two_local_workers_give_the_serial_results():
    assert sensitivity_with(Workers(2, serial_below_bytes=0)) == sensitivity_with(Workers(1))
    assert run_with(Workers(2, serial_below_bytes=0)) == run_with(Workers(1))


def test_a_local_ray_instance_gives_the_serial_results():
    pytest.importorskip("ray")
    import ray

    try:
        assert sensitivity_with(Workers(2, "local")) == sensitivity_with(Workers(1))
        assert run_with(Workers(2, "local")) == run_with(Workers(1))
    finally:
        ray.shutdown()


@pytest.mark.parametrize("name, labelled", [("cnn", True), ("resnet", True), ("transformer", False)])
def test_the_screen_skips_samples_that_cannot_flip_and_keeps_every_drop(name, labelled):
    """Accuracy and agreement: the screened sweep runs fewer samples and measures every drop of the full one."""
    proto, dataset = reference(name, samples=256)
    dataset = dataset if labelled else Dataset(dataset.inputs, None, name)
    full, screened = (decide(proto, dataset, engine, assign=False) for engine in ("suffix", "screened"))
    assert_same_drops(full["sensitivity"], screened["sensitivity"])
    assert full["sensitivity"].screened_share == 0
    assert screened["sensitivity"].screened_share > 0.3


@pytest.mark.parametrize(
    "name, labelled, metric",
    [("resnet", True, "auto"), ("transformer", False, "auto"), ("transformer", False, "cosine")],
)
def test_options_sure_to_break_the_budget_stop_early_and_the_solver_decides_the_same(name, labelled, metric):
    """Under a continuous metric no sample is skipped, but the budget stop applies all the same."""
    proto, dataset = reference(name, samples=256)
    dataset = dataset if labelled else Dataset(dataset.inputs, None, name)
    full, bounded, screened = (
        decide(proto, dataset, engine, budget=budget, metric=metric)
        for engine, budget in (("suffix", None), ("screened", 1.0), ("screened", None))
    )
    report, exact = bounded["sensitivity"], drops(full["sensitivity"])
    stopped = [(layer, o) for layer, row in report.layers.items() for o, d in row.items() if d.at_least]
    assert stopped and report.screened_share > screened["sensitivity"].screened_share
    for (layer, option), (drop, std) in exact.items():
        measured = report.layers[layer][option]
        if measured.at_least:
            assert measured.drop_points > 1.0 and drop > 1.0, (layer, option)
        else:
            assert (measured.drop_points, measured.std_points) == pytest.approx((drop, std), abs=1e-9)
    assert full["assign"].mapping == bounded["assign"].mapping


def test_the_screen_keeps_whole_batches_of_a_fixed_batch_model_and_leaves_continuous_metrics_alone():
    proto, dataset = reference("cnn", samples=96)
    proto.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 8
    whole, screened = (decide(proto, dataset, engine, assign=False) for engine in ("whole", "screened"))
    assert_same_drops(whole["sensitivity"], screened["sensitivity"])
    assert screened["sensitivity"].screened_share > 0
    cosine = decide(proto, dataset, "screened", assign=False, metric="cosine")["sensitivity"]
    assert cosine.metric == "cosine" and cosine.screened_share == 0


_SLOW_POOL = """
import multiprocessing, sys, threading, time
from pathlib import Path
from hetmap.graph.modelio import read_model
from hetmap.sim.jobs import Workers, map_parts

def slow(model, shared, part):
    time.sleep(300)

def report_workers():
    while len(multiprocessing.active_children()) < 2:
        time.sleep(0.05)
    print(*(p.pid for p in multiprocessing.active_children()), flush=True)

if __name__ == "__main__":
    threading.Thread(target=report_workers, daemon=True).start()
    map_parts(slow, read_model(Path(sys.argv[1])), None, [0, 1], Workers(2, serial_below_bytes=0))
"""


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the kernel ends them on Linux (prctl)")
def test_pool_workers_and_their_model_file_end_with_the_process_that_started_them(tmp_path):
    script = tmp_path / "slow_pool.py"
    script.write_text(_SLOW_POOL)
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    parent = subprocess.Popen(
        [sys.executable, str(script), str(reference_path("cnn.onnx"))],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "TMPDIR": str(temporary)},
    )
    workers = [int(pid) for pid in parent.stdout.readline().split()]
    assert len(workers) == 2 and all(_alive(pid) for pid in workers)
    parent.kill()  # SIGKILL: nothing of the parent's own runs
    parent.wait(timeout=30)
    deadline = time.monotonic() + 30
    while any(_alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(_alive(pid) for pid in workers)
    assert not list(temporary.iterdir())  # the workers' copy of the model went with the parent

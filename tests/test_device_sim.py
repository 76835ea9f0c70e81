"""Simulation through torch (the GPU path): on the CPU it scores and decides what onnxruntime's simulation does."""

import numpy as np
import onnx_ir as ir
import pytest
import torch
from test_analog_op import ROOMY_TINY
from test_layerwise import assert_same_drops, decide, reference

import messy_models as messy
from helpers import REFERENCE_MODELS, compiled_example, example_model, random_inputs
from hetmap.graph.data import Dataset
from hetmap.mapping.annotations import read_layer, read_mapping
from hetmap.sim.measure import Measurer
from hetmap.sim.run import evaluate
from hetmap.sim.scorer import Scorer
from hetmap.train import device_sim
from hetmap.train.device_sim import DeviceSimulator, annotated_layers, annotated_simulator
from hetmap.verification import put_weights

DRIFTS = ["1h", "1d", "1y"]


def assert_close_drops(onnxruntime, torch_engine) -> None:
    """Equal to float rounding: a cosine's last bits may differ between the two runtimes."""
    assert_same_drops(onnxruntime, torch_engine, tolerance=1e-5)


@pytest.mark.parametrize("name", REFERENCE_MODELS)
def test_reference_models_get_the_same_drops_and_mapping_through_torch(name):
    proto, dataset = reference(name)
    whole, through_torch = (decide(proto, dataset, engine) for engine in ("whole", "torch"))
    assert through_torch["sensitivity"].simulated_on == "torch (cpu)"
    assert_close_drops(whole["sensitivity"], through_torch["sensitivity"])
    assert whole["assign"].mapping == through_torch["assign"].mapping


@pytest.mark.parametrize("name", ["grouped_and_depthwise_conv", "matmul_constant_left", "wide_gemm"])
def test_row_blocks_grouped_convolutions_and_a_weight_on_the_left_get_the_same_drops(name):
    """tiny's 32-row tiles split layers into row blocks; a weight on the left of MatMul has no analog op in torch, so
    its analog option is measured by onnxruntime and the rest through torch."""
    proto = messy.wide_gemm() if name == "wide_gemm" else messy.HAND_BUILT[name]()
    dataset = Dataset(random_inputs(proto, batch=4), None, "feeds")
    whole, through_torch = (decide(proto, dataset, engine, "tiny", assign=False) for engine in ("whole", "torch"))
    assert through_torch["sensitivity"].simulated_on == "torch (cpu)"
    assert_close_drops(whole["sensitivity"], through_torch["sensitivity"])


def test_a_graph_torch_cannot_run_is_measured_by_onnxruntime():
    proto = messy.HAND_BUILT["if_and_loop"]()
    dataset = Dataset(random_inputs(proto, batch=4), None, "feeds")
    whole, asked_torch = (decide(proto, dataset, engine, "tiny", assign=False) for engine in ("whole", "torch"))
    assert asked_torch["sensitivity"].simulated_on == "onnxruntime (cpu)"
    assert_close_drops(whole["sensitivity"], asked_torch["sensitivity"])


def test_a_gpu_config_sends_sensitivity_assign_and_verification_through_torch(monkeypatch):
    """Where the config's device is a GPU every measurement runs through torch: stood in for by torch on the CPU."""
    built = []

    def on_the_cpu(device, model, layers, ranges, target, asked=False):
        built.append(DeviceSimulator(model, layers, ranges, target, "cpu"))
        return built[-1]

    monkeypatch.setattr(device_sim, "simulator_on", on_the_cpu)
    proto, dataset = reference("cnn")
    on_ort, on_torch = (decide(proto, dataset, "screened", device=device) for device in ("cpu", "auto"))
    assert len(built) == 3  # sensitivity's, assign's measurements', its verifier's
    assert on_torch["sensitivity"].simulated_on == "torch (cpu)"
    assert_close_drops(on_ort["sensitivity"], on_torch["sensitivity"])
    assert on_ort["assign"].mapping == on_torch["assign"].mapping
    measured = [[a.measured_drop_points for a in report["assign"].attempts] for report in (on_ort, on_torch)]
    assert measured[1] == pytest.approx(measured[0], abs=1e-6)
    verified = [report["assign"].verification for report in (on_ort, on_torch)]
    assert verified[1].drop_points == pytest.approx(verified[0].drop_points, abs=1e-6)


def test_a_simulator_follows_the_weights_put_into_the_model():
    """Refine and the fine-tuning guard swap the model's initializers between measurements."""
    annotated, reports = compiled_example("cnn", ROOMY_TINY, "mixed")
    annotated = ir.serde.deserialize_model(ir.serde.serialize_model(annotated))
    _, feeds = example_model("cnn")
    layers, ranges = annotated_layers(annotated)
    mapping = read_mapping(annotated)
    scorer = Scorer(annotated, Dataset(feeds, None, "feeds"))
    on_ort = Measurer(annotated, ROOMY_TINY, reports["partition"].layers, ranges, scorer, 0)
    simulator = DeviceSimulator(annotated, layers, ranges, ROOMY_TINY, "cpu")
    on_torch = Measurer(annotated, ROOMY_TINY, reports["partition"].layers, ranges, scorer, 0, simulator=simulator)
    before = on_torch.measure(mapping, [86400.0], 2, per_sample=True)
    first = layers[0].name
    weight = annotated.graph.initializers[read_layer(next(n for n in annotated.graph if n.name == first)).weight]
    put_weights(annotated, {weight.name: ir.tensor(-weight.const_value.numpy(), name=weight.name)})
    expected, got = (m.measure(mapping, [86400.0], 2, per_sample=True) for m in (on_ort, on_torch))
    for a, b, c in zip(expected[0], got[0], before[0]):
        np.testing.assert_allclose(b, a, atol=1e-6)
        assert not np.allclose(b, c)


@pytest.mark.parametrize("mapping", ["all-analog", "mixed"])
def test_hetmap_run_through_torch_scores_every_draw_and_drift_as_onnxruntime(mapping):
    """Each draw programmed once and read at three drift times, digital layers at int8/4/2 between analog ones."""
    annotated, _ = compiled_example("cnn", ROOMY_TINY, mapping)
    _, feeds = example_model("cnn")
    dataset = Dataset(feeds, None, "feeds")
    on_ort = evaluate(annotated, "cnn", dataset, DRIFTS, seeds=3, seed=5)
    simulator = annotated_simulator(annotated, ROOMY_TINY, "cpu", asked=True)
    on_torch = evaluate(annotated, "cnn", dataset, DRIFTS, seeds=3, seed=5, simulator=simulator)
    assert (on_ort.simulated_on, on_torch.simulated_on) == ("onnxruntime (cpu)", "torch (cpu)")
    assert on_torch.nominal == pytest.approx(on_ort.nominal, abs=1e-6)
    for expected, got in zip(on_ort.drifts, on_torch.drifts):
        assert got.per_seed == pytest.approx(expected.per_seed, abs=1e-6), expected.drift
    assert len({value for drift in on_torch.drifts for value in drift.per_seed}) > 1  # the draws mattered


def test_annotated_layers_read_back_what_compile_mapped():
    annotated, reports = compiled_example("grouped_and_depthwise_conv", ROOMY_TINY, "mixed")
    layers, ranges = annotated_layers(annotated)
    mapping = read_mapping(annotated)
    assert mapping == reports["assign"].mapping.layers
    assert ranges == pytest.approx(reports["calibrate"].input_range)
    by_name = {layer.name: layer for layer in reports["partition"].layers}
    for layer in layers:
        expected = by_name[layer.name]
        assert (layer.op_type, layer.groups, layer.block_rows) == (
            expected.op_type,
            expected.groups,
            expected.block_rows,
        )


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_draws_on_cuda_compute_what_they_compute_on_the_cpu():
    annotated, _ = compiled_example("cnn", ROOMY_TINY, "mixed")
    _, feeds = example_model("cnn")
    dataset = Dataset(feeds, None, "feeds")
    layers, ranges = annotated_layers(annotated)
    mapping = read_mapping(annotated)
    outputs = {
        device: DeviceSimulator(annotated, layers, ranges, ROOMY_TINY, device).runs(
            mapping, dataset, 64, [86400.0], range(2), 3
        )[0]
        for device in ("cpu", "cuda")
    }
    for on_cpu, on_gpu in zip(outputs["cpu"], outputs["cuda"]):
        scale = np.abs(on_cpu).max()
        assert np.median(np.abs(on_gpu - on_cpu)) < 1e-4 * scale
        assert np.mean(on_gpu.argmax(axis=1) == on_cpu.argmax(axis=1)) > 0.95


def test_the_sensitivity_table_says_where_torch_simulated():
    from rich.console import Console

    from hetmap.pipeline import report_to_dict
    from hetmap.report.views import show_sensitivity

    proto, dataset = reference("cnn", samples=32)
    tables = {}
    for engine in ("screened", "torch"):
        console = Console(record=True, width=200)
        show_sensitivity(console, report_to_dict(decide(proto, dataset, engine, assign=False)["sensitivity"]))
        tables[engine] = console.export_text()
    assert "simulated on torch (cpu)" in tables["torch"] and "simulated on" not in tables["screened"]

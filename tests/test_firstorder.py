"""First-order sensitivity: drops predicted from each layer's simulated change track the measured ones."""

import json

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from test_layerwise import assert_same_drops, decide, reference

import messy_models as messy
from hetmap.graph.data import Dataset
from hetmap.graph.shapes import resolve_input_shapes
from hetmap.mapping.mapping import target_options
from hetmap.models import reference_path
from hetmap.passes.calibrate import Calibrate
from hetmap.passes.canonicalize import Canonicalize
from hetmap.passes.partition import Partition
from hetmap.passes.sensitivity import FIRST_ORDER_FROM_LAYERS
from hetmap.pipeline import CompileConfig, PassContext, run_pipeline
from hetmap.sim.drift import parse_drift
from hetmap.sim.layerwise import sweep_for
from hetmap.sim.scorer import Scorer
from hetmap.targets import load_target
from hetmap.train import firstorder
from hetmap.train.firstorder import LINEAR_LIMIT, TRACKED_CLASSES, predict_layers


def _errors(measured, predicted) -> list[float]:
    """|predicted - measured| drop of every option the first-order engine predicted."""
    report = predicted["sensitivity"]
    return [
        abs(report.layers[layer][option].drop_points - measured["sensitivity"].layers[layer][option].drop_points)
        for layer, options in report.predicted.items()
        for option in options
    ]


@pytest.mark.parametrize("name, labelled", [("cnn", True), ("resnet", True), ("transformer", False)])
def test_predicted_drops_track_the_measured_ones_and_the_mapping_verifies_within_budget(name, labelled):
    """Predictions differ from measurements by a sample or two: the solver may choose otherwise, assign verifies."""
    proto, dataset = reference(name, samples=256)
    dataset = dataset if labelled else Dataset(dataset.inputs, None, name)
    measured, predicted = (decide(proto, dataset, engine, budget=1.0) for engine in ("screened", "first-order"))
    errors = _errors(measured, predicted)
    assert errors, "no option was predicted"
    one_sample = 100 / dataset.size
    assert np.mean(errors) <= 2 * one_sample and max(errors) <= 6 * one_sample
    chosen, reference_choice = predicted["assign"], measured["assign"]
    assert chosen.within_budget == reference_choice.within_budget and chosen.verification.drop_points <= 1.0
    assert predicted["sensitivity"].screened_share > measured["sensitivity"].screened_share


def test_options_out_of_the_linear_regime_are_measured_exactly_and_predictions_repeat():
    """int2 moves a layer's output by far more than a first-order prediction can follow."""
    proto, dataset = reference("resnet", samples=128)
    measured, predicted, again = (
        decide(proto, dataset, engine, assign=False) for engine in ("screened", "first-order", "first-order")
    )
    report = predicted["sensitivity"]
    assert report == again["sensitivity"]
    exact = [(layer, "int2") for layer, options in report.predicted.items() if "int2" not in options]
    assert exact
    for layer, option in exact:
        assert report.layers[layer][option] == measured["sensitivity"].layers[layer][option]


def _resnet_predictions(samples: int, untyped: bool = False) -> tuple[dict, Scorer]:
    """predict_layers on every layer of the reference resnet, on hermes at 1 day, 2 draws; `untyped`: with the
    types of the activations between its nodes unknown, as shape inference leaves some exporters' graphs."""
    proto, dataset = reference("resnet", samples=samples)
    model = ir.serde.deserialize_model(proto)
    config = CompileConfig(input_shapes=resolve_input_shapes(model, dataset, {}), dataset=dataset)
    context = PassContext(load_target("hermes"), config)
    model, reports = run_pipeline(model, [Canonicalize(), Partition(), Calibrate()], context)
    if untyped:
        for node in model.graph:
            for value in node.outputs:
                if not value.is_graph_output():
                    value.type = None
    layers, ranges = reports["partition"].layers, reports["calibrate"].input_range
    scorer = Scorer(model, dataset)
    options = target_options(context.target)
    sweep = sweep_for(scorer, model, context.target, layers, ranges, options, 2, parse_drift("1d"), 0)
    return predict_layers(model, sweep, [layer.name for layer in layers], dataset.inputs, scorer.outputs), scorer


def test_predictions_keep_each_samples_tracked_classes_changes_alone():
    """Memory: a layer's variants hold [samples, tracked] changes; outputs are the baseline moved at those classes."""
    predicted, scorer = _resnet_predictions(64)
    dataset = scorer.dataset
    best = np.argsort(-scorer.outputs, axis=1, kind="stable")[:, :TRACKED_CLASSES]
    others = np.ones(scorer.outputs.shape, dtype=bool)
    others[np.arange(dataset.size)[:, None], best] = False
    checked = 0
    for layer in predicted.values():
        for option, per_draw in layer.outputs.items():
            assert all(change.shape == (dataset.size, TRACKED_CLASSES) for change in layer.changes[option])
            for outputs in per_draw:
                assert np.array_equal(outputs[others], scorer.outputs[others])
                checked += not np.array_equal(outputs, scorer.outputs)
    assert checked


def test_activations_of_unknown_type_are_predicted_as_typed_ones():
    """Shape inference leaves a BERT encoder's intermediate types unknown: every layer past the first was measured."""
    typed, _ = _resnet_predictions(32)
    untyped, _ = _resnet_predictions(32, untyped=True)
    assert untyped.keys() == typed.keys() and len(typed) == 9
    for name, layer in typed.items():
        assert untyped[name].relative_change == layer.relative_change and untyped[name].exact == layer.exact


def test_layer_runs_past_the_kept_bytes_are_built_again_per_chunk_with_the_same_draws(monkeypatch):
    """Memory: BERT-base's 72 layer-alone runs held 3.4 GB of drawn weights; past the limit each chunk rebuilds."""
    monkeypatch.setattr(firstorder, "CHUNK_BYTES", 1)  # one sample per chunk
    kept, _ = _resnet_predictions(6)
    monkeypatch.setattr(firstorder, "RUNS_KEPT_BYTES", 0)
    rebuilt, _ = _resnet_predictions(6)
    assert rebuilt.keys() == kept.keys()
    for name, layer in kept.items():
        assert rebuilt[name].relative_change == layer.relative_change
        for option, per_draw in layer.changes.items():
            for expected, got in zip(per_draw, rebuilt[name].changes[option], strict=True):
                np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("samples, chunks", [(1, 1), (2, 2)])  # the first sample alone sizes the chunks
def test_layer_runs_are_kept_open_only_for_chunks_that_follow(monkeypatch, samples, chunks):
    """Memory: one sample (one chunk) kept every layer's run for nothing, 1 GB on ResNet-50."""
    states, original = [], firstorder._State.__init__

    def recording(self, *args):
        states.append(self)
        original(self, *args)

    monkeypatch.setattr(firstorder._State, "__init__", recording)
    _resnet_predictions(samples)
    assert bool(states[0].runs) == (chunks > 1)


def test_digital_options_whose_weights_alone_move_far_are_left_to_the_exact_engines_unsimulated(monkeypatch):
    """int2 moves every layer's weights by 45 % or more: simulated alone, it is out of the linear regime anyway."""
    predicted, _ = _resnet_predictions(32)
    assert all("int2" in layer.exact and "int2" not in layer.relative_change for layer in predicted.values())
    assert all("int4" in layer.relative_change for layer in predicted.values())
    monkeypatch.setattr(firstorder, "WEIGHT_ERROR_LIMIT", np.inf)
    simulated, _ = _resnet_predictions(32)
    assert all(layer.relative_change["int2"] > LINEAR_LIMIT for layer in simulated.values())
    assert all(simulated[name].exact == layer.exact for name, layer in predicted.items())


@pytest.mark.parametrize("metric", ["cosine", "snr"])
def test_continuous_metrics_are_predicted_from_random_probes_and_track_the_measured_drops(metric):
    """The change's power from PROBES random directions per sample: within a fifth of each measured drop."""
    proto, dataset = reference("transformer", samples=128)
    dataset = Dataset(dataset.inputs, None, "transformer")
    measured, predicted, again = (
        decide(proto, dataset, engine, metric=metric, budget=1.0)
        for engine in ("screened", "first-order", "first-order")
    )
    report = predicted["sensitivity"]
    assert report == again["sensitivity"]
    pairs = [
        (measured["sensitivity"].layers[layer][option].drop_points, report.layers[layer][option].drop_points)
        for layer, options in report.predicted.items()
        for option in options
    ]
    assert len(pairs) >= 20 and max(m for m, _ in pairs) > 0.2
    assert all(abs(p - m) <= 0.01 + 0.2 * m for m, p in pairs), pairs
    assert predicted["assign"].mapping == measured["assign"].mapping


def test_continuous_metrics_against_another_models_outputs_are_not_predicted():
    """After fine-tuning, cosine compares with the user's outputs: the expansion around the model's own fails."""
    outputs = np.ones((4, 3), np.float32)
    assert firstorder.applies(outputs, "cosine", None, own_reference=True)
    assert not firstorder.applies(outputs, "cosine", None, own_reference=False)
    assert firstorder.applies(outputs, "top1", None, own_reference=False)


def test_fixed_batches_are_measured_as_the_screened_engine_does():
    proto, dataset = reference("cnn", samples=64)
    proto.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 8
    fixed = [decide(proto, dataset, engine, assign=False) for engine in ("screened", "first-order")]
    assert_same_drops(fixed[0]["sensitivity"], fixed[1]["sensitivity"])
    assert fixed[1]["sensitivity"].predicted == {}


def test_compile_with_first_order_sensitivity_marks_the_predicted_drops_and_ships_a_checked_graph(hetmap, tmp_path):
    _, dataset = reference("resnet", samples=128)
    np.savez(tmp_path / "data.npz", x=dataset.inputs["x"], y=dataset.labels)
    model = reference_path("resnet.onnx")
    result = hetmap("compile", model, "--data", "data.npz", "--sensitivity", "first-order", "-o", "out", "--seeds", "2")
    assert result.exit_code == 0, result.stderr
    assert "~ predicted to first order" in result.stdout
    report = json.loads((tmp_path / "out" / "reports" / "sensitivity.json").read_text())
    assert report["predicted"] and all(
        set(o) <= {"analog", "int8", "int4", "int2"} for o in report["predicted"].values()
    )
    annotated = onnx.load(tmp_path / "out" / "model.mapped.onnx")
    onnx.checker.check_model(annotated)
    assert hetmap("compile", model, "--sensitivity", "second-order").exit_code == 2


def _deep_mlp(layers: int, width: int = 16, classes: int = 10) -> onnx.ModelProto:
    """`layers` Gemm + Relu blocks with scaled random weights: deep enough for auto to predict."""
    nodes, initializers, x = [], [], "x"
    for index in range(layers):
        outputs = classes if index == layers - 1 else width
        weight = messy._weights(outputs, width, seed=index) / np.float32(np.sqrt(width))
        initializers += [messy.init(f"w{index}", weight), messy.init(f"b{index}", np.zeros(outputs, np.float32))]
        nodes.append(onnx.helper.make_node("Gemm", [x, f"w{index}", f"b{index}"], [f"g{index}"], transB=1))
        if index < layers - 1:
            nodes.append(onnx.helper.make_node("Relu", [f"g{index}"], [f"r{index}"]))
        x = f"r{index}"
    output = messy.tensor(f"g{layers - 1}", ["batch", classes])
    return messy.model(nodes, [messy.tensor("x", ["batch", width])], [output], initializers)


def test_auto_predicts_from_the_layer_count_on():
    x = np.random.default_rng(0).standard_normal((64, 16)).astype(np.float32)
    dataset = Dataset({"x": x}, None, "random")
    shallow, deep = (
        decide(_deep_mlp(layers), dataset, "auto", assign=False)["sensitivity"]
        for layers in (FIRST_ORDER_FROM_LAYERS - 1, FIRST_ORDER_FROM_LAYERS)
    )
    assert shallow.predicted == {} and len(deep.layers) == FIRST_ORDER_FROM_LAYERS
    assert deep.predicted

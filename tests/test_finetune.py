"""Fine-tuning: the supernetwork's modes compute what the simulator computes, training adapts and resumes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

import messy_models as messy
from helpers import assert_one_line_error, compiled_example, example_model
from hetmap import targets as hetmap_targets
from hetmap.graph import parity
from hetmap.graph.data import Dataset
from hetmap.mapping.mapping import ANALOG
from hetmap.models import reference_path
from hetmap.sim.simulation import build_simulation
from hetmap.targets import load_target
from hetmap.train.adaptation import AdaptConfig, MappingSampler, adapt
from hetmap.train.supernet import Supernet, trainable_initializers


def _supernet(name: str, mapping: str, scope: str = "all"):
    annotated, reports = compiled_example(name, "hermes", mapping)
    layers = reports["partition"].layers
    ranges = reports["calibrate"].input_range
    trainable = trainable_initializers(annotated, layers, scope)
    return annotated, reports, Supernet(annotated, layers, ranges, load_target("hermes"), trainable, 86400.0)


@pytest.mark.parametrize("name", ["cnn", "transformer", "grouped_and_depthwise_conv", "gemm_trans_b"])
@pytest.mark.parametrize("mapping", ["all-analog", "int4"])
def test_supernet_modes_compute_what_the_simulator_computes(name, mapping):
    """Analog tiles (noise-free, converters only) and digital fake-quant agree with the simulation graph."""
    annotated, reports, net = _supernet(name, mapping)
    net.set_mapping(reports["assign"].mapping.layers)
    _, feeds = example_model(name)
    (expected,) = parity.run_model(build_simulation(annotated, load_target("hermes")).model, feeds)
    with torch.no_grad():
        got = net.eval()(*(torch.from_numpy(array) for array in feeds.values())).numpy()
    scale = np.abs(expected).max()
    # Converter codes are rounded after float ops in another order: a code off by one here and there.
    assert np.median(np.abs(got - expected)) < 1e-4 * scale
    assert np.abs(got - expected).max() < 0.02 * scale
    assert np.mean(got.argmax(1) == expected.argmax(1)) >= 0.97


def test_every_mode_trains_the_one_shared_weight():
    annotated, reports, net = _supernet("cnn", "all-analog")
    layers = reports["partition"].layers
    weight = net.graph.initializer(layers[0].weight)
    x = torch.from_numpy(example_model("cnn")[1]["x"][:8])
    for option in ("fp", ANALOG, "int8", "int2"):
        net.set_mapping({layer.name: option for layer in layers})
        weight.grad = None
        net.train()(x).square().mean().backward()
        assert weight.grad is not None and weight.grad.abs().sum() > 0, option


def test_scopes_choose_what_trains():
    annotated, reports, _ = _supernet("cnn", "all-analog")
    layers = reports["partition"].layers
    head = trainable_initializers(annotated, layers, "head")
    norm = trainable_initializers(annotated, layers, "norm")
    every = trainable_initializers(annotated, layers, "all")
    assert layers[-1].weight in head and len(head) == 2
    assert all(layer.weight not in norm for layer in layers) and len(norm) == len(layers)  # the (folded) biases
    assert set(head) | set(norm) <= set(every) and all(layer.weight in every for layer in layers)


def test_sampler_sandwiches_and_prefers_layers_that_tolerate_analog():
    drops = {"a": {"analog": 0.0, "int8": 0.0, "int4": 0.1}, "b": {"analog": 5.0, "int8": 0.0, "int4": 3.0}}
    sampler = MappingSampler(["a", "b"], ["analog", "int8", "int4"], drops, temperature=0.5)
    rng = np.random.default_rng(0)
    draws = [sampler.paths(rng) for _ in range(200)]
    assert all(set(paths) == {"all-analog", "all-int8", "sampled"} for paths in draws)
    analog_share = {name: np.mean([paths["sampled"][name] == ANALOG for paths in draws]) for name in ("a", "b")}
    assert analog_share["a"] > 0.25 and analog_share["b"] < 0.01
    fixed = MappingSampler(["a", "b"], ["analog", "int8"], None, 0.5, fixed={"a": "analog", "b": "int8"})
    assert fixed.paths(rng) == {"mapping": {"a": "analog", "b": "int8"}}


def _mlp_training(folder, epochs: int = 2, checkpoint=True, stop_at_step: int | None = None):
    annotated, reports, net = _supernet("mlp", "all-analog")
    data = np.load(reference_path("mlp.train.npz"))
    train = Dataset({"x": data["x"][:256]}, data["y"][:256], "mlp.train.npz")
    names = [layer.name for layer in reports["partition"].layers]
    sampler = MappingSampler(names, ["analog", "int8", "int4", "int2"], None, 0.5)
    config = AdaptConfig(epochs=epochs, seed=3, checkpoint=folder / "ckpt" if checkpoint else None)

    def on_step(done: int, total: int, info: str) -> None:
        if done == stop_at_step:
            raise KeyboardInterrupt

    return net, adapt(net, ["x"], train, sampler, config, "run", on_step)


def test_adaptation_is_seeded_and_resumes_where_it_stopped(tmp_path):
    straight, result = _mlp_training(tmp_path / "a")
    assert [record.epoch for record in result.history] == [1, 2] and result.steps == 8
    with pytest.raises(KeyboardInterrupt):
        _mlp_training(tmp_path / "b", stop_at_step=6)  # interrupted in its second epoch
    resumed, result = _mlp_training(tmp_path / "b")
    assert result.resumed_from_epoch == 1 and len(result.history) == 2
    fresh, _ = _mlp_training(tmp_path / "c", checkpoint=False)
    for net in (resumed, fresh):
        for (name, a), (_, b) in zip(straight.graph.named_parameters(), net.graph.named_parameters()):
            torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)


def test_a_fine_tune_resumes_only_on_the_same_labels_and_target(hetmap):
    """The checkpoint of a run without labels (distillation) is no run with them, nor one on a target file edited
    under the same name (noise off): those compiles train."""
    with np.load(reference_path("cnn.train.npz")) as data:
        np.savez("unlabelled.npz", x=data["x"][:8])
        np.savez("labelled.npz", x=data["x"][:8], y=data["y"][:8])
    hermes = (Path(hetmap_targets.__file__).parent / "hermes.toml").read_text()
    Path("hermes.toml").write_text(hermes)
    Path("quiet.toml").write_text(hermes.replace("prog_noise_scale = 1.0", "prog_noise_scale = 0.0"))
    common = ["compile", reference_path("cnn.onnx"), "-o", "out", "--data", reference_path("cnn.test.npz"),
              "--mapping", "all-analog", "--finetune", "1", "--workers", "1"]  # fmt: skip
    resumed, said = [], []
    for train, target in [("unlabelled.npz", "hermes.toml"), *[("labelled.npz", "hermes.toml")] * 2,
                          ("labelled.npz", "quiet.toml")]:  # fmt: skip
        result = hetmap(*common, "--train", train, "-t", target)
        assert result.exit_code == 0
        resumed.append(json.loads(Path("out/reports/finetune.json").read_text())["resumed_from_epoch"])
        said.append("resumed after epoch 1 from the checkpoint" in " ".join(result.stdout.split()))
    assert resumed == [0, 0, 1, 0]  # the third run is the second's again
    assert said == [False, False, True, False]  # and says so


def test_float_class_labels_train_as_class_indices_and_fractions_and_one_hot_rows_are_refused(hetmap):
    """Scoring reads whole-number float labels as classes: training must too (it tried a regression and crashed)."""
    with np.load(reference_path("cnn.train.npz")) as data:
        x, y = data["x"][:8], data["y"][:8]
    np.savez("int.npz", x=x, y=y)
    np.savez("float.npz", x=x, y=y.astype(np.float32))
    np.savez("fraction.npz", x=x, y=y.astype(np.float32) + 0.5)
    np.savez("one_hot.npz", x=x, y=np.eye(10, dtype=np.float32)[y])
    common = ["compile", reference_path("cnn.onnx"), "--data", reference_path("cnn.test.npz"), "--mapping",
              "all-analog", "--finetune", "1", "--workers", "1"]  # fmt: skip
    histories = []
    for train in ("int", "float"):
        assert hetmap(*common, "--train", f"{train}.npz", "-o", train).exit_code == 0
        history = json.loads(Path(f"{train}/reports/finetune.json").read_text())["history"]
        histories.append([(epoch["loss"], epoch["accuracy"]) for epoch in history])
    assert histories[0] == histories[1]  # the same training, to the bit
    result = hetmap(*common, "--train", "fraction.npz", "-o", "fraction")
    assert_one_line_error(result, "training data 'fraction.npz'", "must be class indices", "found the fraction")
    result = hetmap(*common, "--train", "one_hot.npz", "-o", "one_hot")  # trained as a regression onto the logits
    assert_one_line_error(result, "labels 'y' have shape [8, 10]", "np.argmax(y, axis=1)")


def test_compile_with_finetune_adapts_and_reports_before_and_after(hetmap):
    epochs = 2
    result = hetmap(
        "compile",
        reference_path("mlp.onnx"),
        "-t",
        "hermes",
        "-o",
        "out",
        "--objective",
        "analog-share",
        "--data",
        reference_path("mlp.test.npz"),
        "--train",
        reference_path("mlp.train.npz"),
        "--finetune",
        str(epochs),
        "--finetune-lr",
        "auto",
        "--seeds",
        "2",
    )
    assert result.exit_code == 0, result.stderr
    reports = {
        name: json.loads(open(f"out/reports/{name}.json").read())
        for name in ("finetune", "sensitivity_before", "sensitivity")
    }
    finetune = reports["finetune"]
    assert len(finetune["history"]) == epochs and finetune["paths"] == ["all-analog", "all-int8", "sampled"]
    before = {s["mapping"]: s["mean"] for s in finetune["before"]}
    after = {s["mapping"]: s["mean"] for s in finetune["after"]}
    assert after["all-analog"] > before["all-analog"]
    sweep = finetune["learning_rate_sweep"]
    assert finetune["learning_rate"] == sweep["chosen"] and f"{sweep['chosen']:g}" in sweep["validation_loss"]
    refine = json.loads(open("out/reports/refine.json").read())
    assign = json.loads(open("out/reports/assign.json").read())
    if set(assign["mapping"]["layers"].values()) == {"int8"}:  # nothing to adapt to: refine trains nothing
        assert refine["steps"] == 0 and refine["shipped"] == "as assigned" and refine["drop_after_points"] is None
    else:
        assert refine["steps"] > 0 and refine["shipped"] in ("refined", "as assigned")
        assert (refine["shipped"] == "refined") == (refine["high_after_points"] <= refine["high_before_points"])
        assert refine["learning_rate"] == 0.01 and refine["held_out"] and "mlp.test.npz" in refine["verified_on"]
    assert refine["epochs"] == 8
    assert reports["sensitivity"]["full_precision"] == reports["sensitivity_before"]["full_precision"]
    lost = any(after[m] < before[m] for m in ("all-analog", "all-int8"))
    assert assign["weights_compared"] == lost and (lost or assign["weights"] == "fine-tuned")
    assert ("lost accuracy at neither end" in open("out/report.html").read()) == (not lost)
    adapted, original = onnx.load("out/model.mapped.onnx"), onnx.load(reference_path("mlp.onnx"))
    onnx.checker.check_model(adapted, full_check=True)
    weights = {t.name: onnx.numpy_helper.to_array(t) for t in adapted.graph.initializer}
    assert any(
        not np.array_equal(weights[t.name], onnx.numpy_helper.to_array(t))
        for t in original.graph.initializer
        if t.name in weights
    )
    assert "fine-tun" in open("out/report.html").read()


def test_a_given_mapping_trains_alone_at_the_one_mapping_rate(hetmap):
    result = hetmap(
        "compile",
        reference_path("mlp.onnx"),
        "-t",
        "hermes",
        "-o",
        "out",
        "--mapping",
        "all-analog",
        "--data",
        reference_path("mlp.test.npz"),
        "--train",
        reference_path("mlp.train.npz"),
        "--finetune",
        "2",
        "--refine-lr",
        "0.02",
        "--finetune-lr",
        "auto",  # the supernetwork's sweep: a given mapping trains at --refine-lr
        "--seeds",
        "2",
    )
    assert result.exit_code == 0, result.stderr
    finetune = json.loads(open("out/reports/finetune.json").read())
    assert finetune["learning_rate"] == 0.02 and finetune["paths"] == ["mapping"] and len(finetune["history"]) == 2
    assert finetune["learning_rate_sweep"] is None
    before, after = ({s["mapping"]: s["mean"] for s in finetune[when]} for when in ("before", "after"))
    assert after["mapping"] >= before["mapping"] - 1  # the digits MLP loses little on analog: the rate keeps it
    assert not Path("out/reports/refine.json").exists()  # the given mapping is the one trained


def test_finetune_without_training_data_is_one_line(hetmap):
    onnx.save(messy.gemm_trans_b(), "model.onnx")
    assert_one_line_error(hetmap("compile", "model.onnx", "-t", "tiny", "--finetune", "1"), "--train")


def test_finetune_of_a_model_with_control_flow_names_the_op(hetmap):
    onnx.save(messy.if_and_loop(), "model.onnx")
    np.savez("train.npz", x=np.ones((1, 4), np.float32))
    result = hetmap(
        "compile", "model.onnx", "-t", "tiny", "--mapping", "all-analog", "--finetune", "1", "--train", "train.npz"
    )
    assert_one_line_error(result, "If", "Loop")


def test_a_scalar_input_beside_the_samples_fine_tunes_and_the_sweep_runs(hetmap):
    onnx.save(messy.multi_input_int64_scalar(), "model.onnx")
    rng = np.random.default_rng(0)
    np.savez("data.npz", x=rng.standard_normal((40, 8), dtype=np.float32), k=np.int64(2))
    common = ("-t", "hermes", "-o", "out", "--data", "data.npz", "--train", "data.npz", "--allow-over-budget")
    result = hetmap("compile", "model.onnx", *common, "--finetune", "1", "--finetune-lr", "auto", "--refine", "1")
    assert result.exit_code == 0, result.stderr
    finetune = json.loads(open("out/reports/finetune.json").read())
    assert finetune["steps"] == 1 and finetune["learning_rate"] == finetune["learning_rate_sweep"]["chosen"]


def test_a_model_without_a_samples_axis_cannot_fine_tune_in_one_line(hetmap):
    onnx.save(messy.matmul_constant_left(), "model.onnx")  # W @ X: X's 8 rows are features, the output has 6
    np.savez("data.npz", x=np.random.default_rng(0).standard_normal((8, 4), dtype=np.float32))
    result = hetmap(
        "compile", "model.onnx", "-t", "hermes", "--data", "data.npz", "--train", "data.npz", "--finetune", "1"
    )
    assert_one_line_error(result, "cannot fine-tune", "6 rows for 8 input samples")


def test_a_model_whose_first_output_is_its_arg_max_cannot_fine_tune_in_one_line(hetmap):
    model = messy.two_heads()
    argmax = onnx.helper.make_node("ArgMax", ["y"], ["label"], axis=1, keepdims=0, name="label")
    model.graph.node.append(argmax)
    model.graph.output.insert(0, onnx.helper.make_tensor_value_info("label", onnx.TensorProto.INT64, ["batch"]))
    onnx.save(model, "model.onnx")
    np.savez("data.npz", x=np.random.default_rng(0).standard_normal((40, 8), dtype=np.float32))
    common = ("-t", "hermes", "--data", "data.npz", "--train", "data.npz", "--allow-over-budget")
    assert hetmap("compile", "model.onnx", *common, "-o", "plain").exit_code == 0  # sensitivity scores the labels
    assert_one_line_error(hetmap("compile", "model.onnx", *common, "--finetune", "1"), "int64", "first output")


def test_labels_outside_the_model_classes_are_one_line(hetmap):
    np.savez("train.npz", x=np.load(reference_path("mlp.train.npz"))["x"][:8], y=np.full(8, 99))
    result = hetmap(
        "compile",
        reference_path("mlp.onnx"),
        "-t",
        "hermes",
        "--mapping",
        "all-analog",
        "--finetune",
        "1",
        "--train",
        "train.npz",
    )
    assert_one_line_error(result, "class indices 0..9", "99")


def test_a_fine_tune_that_maps_worse_ships_the_weights_from_before_it(hetmap):
    common = ("-t", "hermes", "--objective", "analog-share", "--data", reference_path("mlp.test.npz"), "--seeds", "2")
    common += ("--confidence", "0")  # the mean decides: this test is about which weights ship
    plain = hetmap("compile", reference_path("mlp.onnx"), "-o", "plain", *common)
    wrecked = hetmap(
        "compile",
        reference_path("mlp.onnx"),
        "-o",
        "wrecked",
        *common,
        "--train",
        reference_path("mlp.train.npz"),
        "--finetune",
        "1",
        "--finetune-lr",
        "0.5",
        "--refine",
        "0",  # the guard alone: no refine after it
    )
    assert plain.exit_code == 0 and wrecked.exit_code == 0, plain.stderr + wrecked.stderr
    assert not Path("wrecked/reports/refine.json").exists()
    finetune = json.loads(open("wrecked/reports/finetune.json").read())
    assert {s["mapping"]: s["mean"] for s in finetune["after"]}["full-precision"] < 90  # the fine-tune broke the model
    assign = json.loads(open("wrecked/reports/assign.json").read())
    assert assign["weights"] == "before fine-tuning" and assign["within_budget"] and assign["weights_compared"]
    assert assign["mapping"] == json.loads(open("plain/reports/assign.json").read())["mapping"]
    shipped, unadapted = (onnx.load(f"{out}/model.mapped.onnx").graph.initializer for out in ("wrecked", "plain"))
    arrays = {t.name: onnx.numpy_helper.to_array(t) for t in unadapted}
    assert all(np.array_equal(onnx.numpy_helper.to_array(t), arrays[t.name]) for t in shipped)
    assert "before fine-tuning" in open("wrecked/report.html").read()


def test_learning_rate_sweep_is_seeded_and_leaves_the_weights_as_it_found_them():
    from hetmap.train.recipe import CANDIDATE_RATES, choose_learning_rate

    _, reports, net = _supernet("mlp", "all-analog")
    data = np.load(reference_path("mlp.train.npz"))
    train = Dataset({"x": data["x"][:256]}, None, "mlp.train.npz")  # no labels: distillation alone
    names = [layer.name for layer in reports["partition"].layers]
    sampler = MappingSampler(names, ["analog", "int8", "int4", "int2"], None, 0.5)
    config = AdaptConfig(epochs=1, seed=3, noise_ramp=0.5)
    start = {name: p.detach().clone() for name, p in net.named_parameters()}
    sweeps = [choose_learning_rate(net, ["x"], train, sampler, config) for _ in range(2)]
    assert sweeps[0] == sweeps[1] and sweeps[0].chosen in CANDIDATE_RATES
    assert all(np.isfinite(loss) for loss in sweeps[0].validation_loss.values())
    for name, p in net.named_parameters():
        torch.testing.assert_close(p, start[name], rtol=0, atol=0, msg=name)


def test_a_relative_rate_scales_each_tensor_by_its_rms():
    from hetmap.train.adaptation import RMS_FLOOR, AdaptConfig, _rate_groups

    large, small, zeros = torch.full((4, 4), 0.5), torch.full((8,), 0.01), torch.zeros(3)
    relative = _rate_groups([large, small, zeros], AdaptConfig(epochs=1, learning_rate=0.01, relative_rate=True))
    assert [group["lr"] for group in relative] == pytest.approx([0.005, 1e-4, 0.01 * RMS_FLOOR])
    fixed = _rate_groups([large, small], AdaptConfig(epochs=1, learning_rate=0.01))
    assert len(fixed) == 1 and "lr" not in fixed[0]

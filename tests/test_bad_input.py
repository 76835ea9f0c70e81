"""Hostile and broken input: every case ends in one `error:` line and a non-zero exit, or in a correct result.

Nothing non-finite travels: NaN or inf in weights, data, labels, flags,
measurements or costs stops the compile naming where it came from.
"""

import json
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from onnx import helper

import hetmap.targets
import messy_models as messy
from helpers import HETMAP, assert_one_line_error
from hetmap.errors import HetmapError, NonFiniteError
from hetmap.graph.shapes import random_feeds
from hetmap.mapping.solver import Problem
from hetmap.models import reference_path
from hetmap.sim.metrics import Metric, choose_metric
from hetmap.sim.noise import noisy_weights
from hetmap.targets import load_target

CNN, CNN_DATA = reference_path("cnn.onnx"), reference_path("cnn.test.npz")
TARGETS = Path(hetmap.targets.__file__).parent
TINY_TOML = (TARGETS / "tiny.toml").read_text()


def _small_data(path: str, samples: int = 48, **changes) -> str:
    """The first `samples` of the digits test set, with arrays replaced by `changes`."""
    with np.load(CNN_DATA) as archive:
        arrays = {key: archive[key][:samples] for key in archive.files}
    np.savez(path, **{**arrays, **changes})
    return path


def _sequence_model() -> onnx.ModelProto:
    """x (N, 6, 8) -> MatMul (8, 5): class scores per position, as text recognisers emit them."""
    weight = np.random.default_rng(0).standard_normal((8, 5)).astype(np.float32)
    nodes = [helper.make_node("MatMul", ["x", "W"], ["y"], name="classifier")]
    return messy.model(
        nodes, [messy.tensor("x", ["N", 6, 8])], [messy.tensor("y", ["N", 6, 5])], [messy.init("W", weight)]
    )


def _gemm_with_denormal_columns() -> onnx.ModelProto:
    """A Gemm whose columns peak at a denormal, a tiny normal and a usual magnitude."""
    weight = np.random.default_rng(1).standard_normal((16, 6)).astype(np.float32)
    weight[:, 0] *= np.float32(1e-44)  # denormal
    weight[:, 1] *= np.float32(1e-38)
    weight[:, 2] = 0
    nodes = [helper.make_node("Gemm", ["x", "W"], ["y"], name="fc")]
    return messy.model(nodes, [messy.tensor("x", ["N", 16])], [messy.tensor("y", ["N", 6])], [messy.init("W", weight)])


# 1. Noise overflow: tiny column peaks must not become inf, then NaN.
def test_denormal_weight_columns_program_to_finite_weights_without_warnings():
    weight = onnx.numpy_helper.to_array(_gemm_with_denormal_columns().graph.initializer[0])
    hermes = load_target("hermes").analog.noise
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        drawn = noisy_weights(weight, hermes, 86400.0, np.random.default_rng(0))
    assert np.isfinite(drawn).all()
    assert np.abs(drawn[:, :2]).max() < 1e-12  # the near-zero columns stay near zero


def test_compile_of_a_model_with_near_zero_columns_is_finite_and_silent(hetmap):
    onnx.save(_gemm_with_denormal_columns(), "model.onnx")
    x = np.random.default_rng(2).standard_normal((32, 16)).astype(np.float32)
    np.savez("calib.npz", x=x)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        result = hetmap(
            "compile",
            "model.onnx",
            "-t",
            "tiny",
            "-o",
            "out",
            "--data",
            "calib.npz",
            "--seeds",
            "2",
            "--allow-over-budget",
        )
    assert result.exit_code == 0, result.stderr
    assert "nan" not in result.stdout.lower()
    sensitivity = Path("out/reports/sensitivity.json").read_text()
    assert "NaN" not in sensitivity and "Infinity" not in sensitivity


# 2. A NaN measurement or cost never reaches the MILP.
@pytest.mark.parametrize("figure", ["drop", "energy"])
def test_the_solver_refuses_a_non_finite_figure_naming_the_layer(figure):
    drop, energy = np.zeros((2, 2)), np.ones((2, 2))
    (drop if figure == "drop" else energy)[1, 0] = np.nan
    with pytest.raises(NonFiniteError, match=f"the {figure} of layer 'b' as analog is nan"):
        Problem(["a", "b"], ["analog", "int8"], drop, energy, np.ones(2), np.ones(2), 4, np.ones((2, 2), bool))


# 3. NaN weights are refused at import, named.
@pytest.mark.parametrize("stored_as", ["initializer", "Constant node"])
def test_a_nan_weight_is_refused_naming_it(hetmap, stored_as):
    proto = messy.conv_bn_relu_gemm_opset9() if stored_as == "initializer" else messy.constant_node_weights()
    tensors = list(proto.graph.initializer) + [
        a.t for node in proto.graph.node if node.op_type == "Constant" for a in node.attribute
    ]
    tensor = next(t for t in tensors if len(t.dims) >= 2)
    array = onnx.numpy_helper.to_array(tensor).copy()
    array.flat[5] = np.nan
    tensor.CopyFrom(onnx.numpy_helper.from_array(array, tensor.name))
    onnx.save(proto, "model.onnx")
    result = hetmap("compile", "model.onnx", "-t", "tiny", "-o", "out")
    assert_one_line_error(result, f"initializer '{tensor.name}' holds nan", "must be finite")
    assert not Path("out").exists()


# 4. NaN or inf in the data, named with the first bad index.
@pytest.mark.parametrize("array, value", [("x", np.nan), ("x", np.inf), ("y", np.nan)])
def test_non_finite_data_is_refused_naming_array_and_index(hetmap, array, value):
    with np.load(CNN_DATA) as archive:
        bad = archive[array][:48].astype(np.float32)
    bad.reshape(len(bad), -1)[7, -1] = value
    _small_data("calib.npz", **{array: bad})
    result = hetmap("compile", CNN, "-o", "out", "--data", "calib.npz")
    assert_one_line_error(result, f"data file 'calib.npz' array '{array}' holds {value}", "at index [7")


# 5. Labels must be class indices of the model's outputs, one per sample.
@pytest.mark.parametrize(
    "labels, message",
    [
        (lambda y: y + 100, "labels 'y' must be class indices 0..9"),
        (lambda y: y - 1 - y.max(), "labels 'y' must be class indices 0..9"),
        (lambda y: y[:-1], "arrays disagree on the number of samples"),
        (lambda y: y + 0.5, "found the fraction"),
    ],
    ids=["above", "negative", "count", "fraction"],
)
def test_bad_labels_are_refused(hetmap, labels, message):
    with np.load(CNN_DATA) as archive:
        y = archive["y"][:48]
    _small_data("calib.npz", y=labels(y))
    assert_one_line_error(hetmap("compile", CNN, "-o", "out", "--data", "calib.npz"), "data file 'calib.npz'", message)


# 6. Numeric flags must be finite.
@pytest.mark.parametrize("flag, value", [("--max-drop", "nan"), ("--max-drop", "inf"), ("--finetune-lr", "nan")])
def test_non_finite_flags_are_refused(hetmap, flag, value):
    result = hetmap("compile", CNN, "-o", "out", flag, value)
    assert_one_line_error(result, "is not a finite number")
    assert result.exit_code == 2


def test_an_automatic_learning_rate_needs_two_training_samples(hetmap):
    """The rate sweep trains on some samples and scores on others: one sample cannot be both."""
    result = hetmap("compile", CNN, "-o", "out", "--data", _small_data("calib.npz"), "--finetune", "1",
                    "--train", _small_data("train.npz", samples=1), "--finetune-lr", "auto")  # fmt: skip
    assert_one_line_error(result, "--finetune-lr auto needs at least 2 training samples")
    assert result.exit_code == 2


# 7. Sequence outputs are scored per position.
def test_auto_metric_scores_sequences_by_top1_per_position():
    reference = np.random.default_rng(0).standard_normal((4, 20, 30)).astype(np.float32)
    metric = choose_metric("auto", reference, None, "calib.npz")
    assert metric == Metric("top1", per_position=True) and metric.name == "agreement per position"
    changed = reference.copy()
    changed[0, 3] = changed[0, 3, ::-1]  # one position of one sample gets another winner
    assert metric.score(changed, None, reference) == pytest.approx(1 - 1 / 80)
    assert Metric("cosine").score(changed, None, reference) > 0.95  # what the flattened cosine hid


def test_per_position_labels_give_accuracy_per_position():
    reference = np.random.default_rng(0).standard_normal((4, 20, 30)).astype(np.float32)
    labels = reference.argmax(axis=-1)
    labels[1, 5] = (labels[1, 5] + 1) % 30
    metric = choose_metric("auto", reference, labels, "calib.npz")
    assert metric.name == "accuracy per position"
    assert metric.score(reference, labels, reference) == pytest.approx(1 - 1 / 80)


def test_class_indices_are_compared_as_they_are():
    """An argmax export's int64 output: the arg-max of one number per sample was always 0, so always agreed."""
    reference = np.array([3, 1, 4, 1], np.int64)
    metric = choose_metric("auto", reference, None, "calib.npz")
    assert metric.name == "agreement" and metric.score(np.array([3, 1, 4, 2]), None, reference) == 0.75
    assert choose_metric("auto", reference, np.array([3, 0, 4, 1]), "calib.npz").score(reference, np.array([3, 0, 4, 1]), reference) == 0.75  # fmt: skip
    with pytest.raises(HetmapError, match="needs float outputs"):
        choose_metric("cosine", reference, None, "calib.npz")


def test_one_value_per_sample_is_scored_against_the_datas_spread():
    """A regressor around 5 with a spread of 0.1: cosine is the sign (always 1), snr of each sample's own power near
    1; against the spread, an error as large as the spread scores one half."""
    reference = (5 + 0.1 * np.random.default_rng(0).standard_normal((400, 1))).astype(np.float32)
    metric = choose_metric("auto", reference, None, "calib.npz")
    assert metric.kind == "snr" and metric.signal == pytest.approx(0.01, rel=0.2)
    off = reference + np.float32(np.sqrt(metric.signal))
    assert metric.score(off, None, reference) == pytest.approx(0.5)
    assert Metric("snr").score(off, None, reference) > 0.999  # what each sample's own power hid
    with pytest.raises(HetmapError, match="cosine is its sign"):
        choose_metric("cosine", reference, None, "calib.npz")


@pytest.mark.parametrize("build, metric", [(messy.argmax_classifier, "agreement"), (messy.offset_regressor, "snr")])
def test_an_argmax_or_regressor_output_gets_drops_that_see_its_errors(hetmap, build, metric):
    onnx.save(build(), "model.onnx")
    np.savez("calib.npz", x=np.random.default_rng(1).standard_normal((200, 16)).astype(np.float32))
    args = ("-o", "out", "--data", "calib.npz", "--seeds", "1", "--workers", "1", "--allow-over-budget")
    assert hetmap("compile", "model.onnx", *args).exit_code == 0
    sensitivity = json.loads(Path("out/reports/sensitivity.json").read_text())
    assert sensitivity["metric"] == metric
    assert max(drops["int2"]["drop_points"] for drops in sensitivity["layers"].values()) > 1.0


def test_a_token_id_past_the_vocabulary_in_the_verification_data_is_a_data_error(hetmap):
    """The decision data ran; the held-out file holds id 15 of a 10-token vocabulary: onnxruntime's refusal, one line."""
    onnx.save(messy.token_classifier(), "model.onnx")
    ids = np.random.default_rng(0).integers(0, 10, (40, 3))
    np.savez("calib.npz", ids=ids)
    ids[7, 1] = 15
    np.savez("verify.npz", ids=ids)
    result = hetmap("compile", "model.onnx", "-o", "out", "--data", "calib.npz", "--verify", "verify.npz")
    assert_one_line_error(result, "cannot run the model on data file 'verify.npz'", "idx=15")
    assert result.exit_code == 2


def test_without_data_token_ids_are_drawn_below_the_vocabulary_and_other_integers_stay_zero():
    """All-zero ids made every random sample the same sentence: no option could show a drop."""
    rng = np.random.default_rng(0)
    tokens = ir.serde.deserialize_model(messy.token_classifier(vocabulary=10))
    ids = random_feeds(tokens, {"ids": (1, 3)}, rng, batch=64)["ids"]
    assert ids.dtype == np.int64 and ids.shape == (64, 3) and 0 <= ids.min() and ids.max() < 10
    assert len(np.unique(ids)) == 10
    scalar = ir.serde.deserialize_model(messy.multi_input_int64_scalar())
    assert random_feeds(scalar, {"x": (1, 8), "k": ()}, rng, batch=4)["k"] == 0


def test_compile_and_run_of_a_sequence_model_say_which_metric(hetmap):
    onnx.save(_sequence_model(), "model.onnx")
    np.savez("calib.npz", x=np.random.default_rng(3).standard_normal((16, 6, 8)).astype(np.float32))
    result = hetmap(
        "compile", "model.onnx", "-t", "tiny", "-o", "out", "--data", "calib.npz", "--seeds", "1", "--allow-over-budget"
    )
    assert result.exit_code == 0, result.stderr
    assert '"metric": "agreement per position"' in Path("out/reports/sensitivity.json").read_text()
    result = hetmap(
        "run",
        "out/model.mapped.onnx",
        "--data",
        "calib.npz",
        "--seeds",
        "1",
        "--drift",
        "1d",
        "--metric",
        "snr",
        "--json",
        "run.json",
    )
    assert result.exit_code == 0, result.stderr
    assert '"metric": "snr"' in Path("run.json").read_text()


def test_top1_on_an_output_without_classes_is_refused(hetmap):
    onnx.save(messy.wide_gemm(8, 1), "model.onnx")
    np.savez("calib.npz", x=np.ones((4, 8), np.float32))
    result = hetmap("compile", "model.onnx", "-t", "tiny", "-o", "out", "--data", "calib.npz", "--metric", "top1")
    assert_one_line_error(result, "--metric top1 needs class scores", "use cosine or snr")


# 8. A mapping over budget is a refusal unless the user accepts it; the reports are written either way.
def test_no_mapping_within_budget_exits_non_zero_after_writing_reports(hetmap):
    hermes = (TARGETS / "hermes.toml").read_text()
    Path("int2.toml").write_text(hermes.split("[[digital]]")[0] + "[[digital]]" + hermes.split("[[digital]]")[-1])
    _small_data("calib.npz")
    args = ("compile", CNN, "-t", "int2.toml", "-o", "out", "--data", "calib.npz", "--max-drop", "0", "--drift", "1y")
    args += ("--confidence", "0")  # the verified mean decides: over a budget of 0
    refused = hetmap(*args)
    assert_one_line_error(refused, "no mapping met the 0-point budget at 1y", "held-out samples", "--allow-over-budget")
    assert Path("out/reports/assign.json").is_file() and Path("out/report.html").is_file()
    assert "nan" not in refused.stdout.lower()
    accepted = hetmap(*args, "--allow-over-budget")
    assert accepted.exit_code == 0 and "over" in accepted.stdout


# Broken files and folders.
def test_truncated_model(hetmap):
    Path("model.onnx").write_bytes(Path(CNN).read_bytes()[:5000])
    assert_one_line_error(hetmap("compile", "model.onnx", "-o", "out"), "model file 'model.onnx'")


@pytest.mark.parametrize(
    "arrays, message",
    [
        ({"x": np.zeros((0, 1, 8, 8), np.float32)}, "holds no samples"),
        ({"x": np.zeros((4, 1, 8, 8), np.complex64)}, "is complex64, the model expects float32"),
        ({"x": np.array([["a"] * 64] * 4).reshape(4, 1, 8, 8)}, "the model expects float32"),
    ],
    ids=["empty", "complex", "strings"],
)
def test_unusable_data_arrays(hetmap, arrays, message):
    np.savez("calib.npz", **arrays)
    assert_one_line_error(hetmap("compile", CNN, "-o", "out", "--data", "calib.npz"), "data file 'calib.npz'", message)


def test_pickled_arrays_are_not_loaded(hetmap):
    np.savez("calib.npz", x=np.array([object(), 1], dtype=object))
    assert_one_line_error(hetmap("compile", CNN, "-o", "out", "--data", "calib.npz"), "data file 'calib.npz'")


def test_target_with_zero_tiles(hetmap):
    Path("none.toml").write_text(TINY_TOML.replace("count = 8", "count = 0"))
    assert_one_line_error(
        hetmap("compile", CNN, "-t", "none.toml", "-o", "out"), "field 'analog.count' must be positive"
    )


def test_mapping_naming_an_unknown_layer(hetmap):
    Path("mapping.json").write_text('{"format": "hetmap.mapping/1", "layers": {"no_such_layer": "analog"}}')
    result = hetmap("compile", CNN, "-o", "out", "--mapping", "mapping.json")
    assert_one_line_error(result, "mapping.json", "no_such_layer")


def test_output_folder_that_is_the_input_file(hetmap):
    Path("model.onnx").write_bytes(Path(CNN).read_bytes())
    assert_one_line_error(hetmap("compile", "model.onnx", "-o", "model.onnx"), "choose another -o")
    assert Path("model.onnx").read_bytes() == Path(CNN).read_bytes()


# An interrupted compile leaves nothing inspect or run would take for a whole compile.
@pytest.mark.parametrize(
    "after_s, stop, code, last_line",
    [
        (1.0, signal.SIGINT, 130, "aborted"),
        (4.5, signal.SIGINT, 130, "aborted"),
        (4.5, signal.SIGTERM, 143, "terminated"),
    ],
    ids=["Ctrl-C while loading", "Ctrl-C while measuring", "SIGTERM while measuring"],
)
def test_interrupted_compile_leaves_no_complete_output(tmp_path, after_s, stop, code, last_line):
    command = [HETMAP, "compile", CNN, "--data", CNN_DATA, "-o", "out", "--seeds", "50", "--pareto"]
    process = subprocess.Popen(
        command,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # a background shell ignores SIGINT
    )
    time.sleep(after_s)
    process.send_signal(stop)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == code and stderr.strip().splitlines()[-1] == last_line, stderr
    assert "Traceback" not in stderr
    assert not (tmp_path / "out/reports/pipeline.json").exists()
    assert not (tmp_path / "out/model.mapped.onnx").exists()
    inspect = subprocess.run([HETMAP, "inspect", "out"], cwd=tmp_path, capture_output=True, text=True)
    assert inspect.returncode == 2 and inspect.stderr.startswith("error: ")


def test_inspect_refuses_a_folder_whose_compile_did_not_finish(hetmap):
    assert hetmap("compile", "-o", "out", "--mapping", "all-digital-int8").exit_code == 0
    Path("out/reports/pipeline.json").unlink()  # as a compile interrupted while writing leaves it
    assert_one_line_error(hetmap("inspect", "out"), "holds an unfinished compile", "run hetmap compile again")


def test_python_dash_m_runs_the_same_entry_point(tmp_path):
    result = subprocess.run([sys.executable, "-m", "hetmap", "--version"], cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 0 and "hetmap, version" in result.stdout

"""`hetmap run MODEL --data test.npz`: the compiled model on simulated hardware, per drift time, over seeds.

The model is the reference CNN compiled for hermes (all-analog); the data
are its first 64 test samples, with labels (`labelled.npz`) and without
(`unlabelled.npz`).
"""

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

import messy_models as messy
from helpers import assert_one_line_error, ort_outputs
from hetmap.driver import compile_model
from hetmap.models import reference_path
from hetmap.targets import load_target

RUN_KEYS = {"model", "data", "metric", "samples", "seeds", "full_precision", "nominal", "drifts", "simulated_on"}
DRIFT_KEYS = {"drift", "t_inference_s", "mean", "std", "per_seed"}


@pytest.fixture(scope="module")
def build(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("run")
    test = np.load(reference_path("cnn.test.npz"))
    np.savez(folder / "labelled.npz", x=test["x"][:64], y=test["y"][:64])
    np.savez(folder / "unlabelled.npz", x=test["x"][:64])
    compile_model(reference_path("cnn.onnx"), load_target("hermes"), folder / "out", data_path=folder / "labelled.npz")
    return folder


def run(hetmap, build: Path, *args, data: str = "labelled.npz"):
    """`hetmap run` on the compiled CNN, its JSON written to result.json in the working folder."""
    return hetmap("run", build / "out" / "model.mapped.onnx", "--data", build / data, "--json", "result.json", *args)


def result_json() -> dict:
    return json.loads(Path("result.json").read_text())


# What it reports.


def test_with_labels_it_reports_accuracy(hetmap, build):
    assert run(hetmap, build, "--seeds", "2", "--drift", "1d").exit_code == 0
    result = result_json()
    test = np.load(build / "labelled.npz")
    logits = ort_outputs(onnx.load(reference_path("cnn.onnx")), {"x": test["x"]})[0]
    assert (result["metric"], result["samples"], result["seeds"]) == ("accuracy", 64, 2)
    assert result["full_precision"] == pytest.approx(np.mean(logits.argmax(axis=1) == test["y"]))
    assert result["nominal"] > result["full_precision"] - 0.1


def test_without_labels_it_reports_agreement_close_to_one_at_converters_only(hetmap, build):
    assert run(hetmap, build, "--seeds", "2", "--drift", "1d", data="unlabelled.npz").exit_code == 0
    result = result_json()
    assert (result["metric"], result["full_precision"]) == ("agreement", 1.0)
    assert result["nominal"] >= 0.95
    assert 0.5 < result["drifts"][0]["mean"] <= 1.0


def test_default_drift_times_are_a_second_an_hour_a_day_and_a_year(hetmap, build):
    assert run(hetmap, build, "--seeds", "1").exit_code == 0
    drifts = result_json()["drifts"]
    assert [(d["drift"], d["t_inference_s"]) for d in drifts] == [
        ("1s", 1.0),
        ("1h", 3600.0),
        ("1d", 86400.0),
        ("1y", 365.25 * 86400.0),
    ]


def test_drift_flag_chooses_the_times(hetmap, build):
    assert run(hetmap, build, "--seeds", "1", "--drift", "10m, 2w,0.5h").exit_code == 0
    assert [(d["drift"], d["t_inference_s"]) for d in result_json()["drifts"]] == [
        ("10m", 600.0),
        ("2w", 1209600.0),
        ("0.5h", 1800.0),
    ]


def test_each_drift_time_gets_mean_and_std_over_seeds(hetmap, build):
    assert run(hetmap, build, "--seeds", "3", "--drift", "1s,1y").exit_code == 0
    result = result_json()
    assert set(result) == RUN_KEYS
    for drift in result["drifts"]:
        assert set(drift) == DRIFT_KEYS and len(drift["per_seed"]) == 3
        assert drift["mean"] == pytest.approx(np.mean(drift["per_seed"]))
        assert drift["std"] == pytest.approx(np.std(drift["per_seed"]))


def test_table_on_stdout_has_a_row_per_drift_time(hetmap, build):
    result = run(hetmap, build, "--seeds", "2", "--drift", "1h,1y")
    assert result.exit_code == 0 and result.stderr == ""
    rows = [line for line in result.stdout.splitlines() if "│" in line]
    assert [row.split("│")[1].strip() for row in rows] == ["full precision", "converters only", "1h", "1y"]
    assert "accuracy on" in result.stdout and result.stdout.strip().endswith("wrote result.json")


def test_json_goes_beside_the_model_by_default(hetmap, build):
    Path("build").mkdir()
    shutil.copy(build / "out" / "model.mapped.onnx", "build/model.mapped.onnx")
    result = hetmap("run", "build/model.mapped.onnx", "--data", build / "labelled.npz", "--seeds", "1", "--drift", "1s")
    assert result.exit_code == 0 and "wrote build/model.mapped.run.json" in result.stdout
    assert set(json.loads(Path("build/model.mapped.run.json").read_text())) == RUN_KEYS


def test_two_runs_with_the_same_seed_write_identical_json(hetmap, build):
    assert run(hetmap, build, "--seeds", "2", "--seed", "7").exit_code == 0
    first = Path("result.json").read_bytes()
    assert run(hetmap, build, "--seeds", "2", "--seed", "7").exit_code == 0
    assert Path("result.json").read_bytes() == first


# Models as users bring them.


def compile_and_run(hetmap, proto: onnx.ModelProto, arrays: dict):
    onnx.save(proto, "model.onnx")
    np.savez("data.npz", **arrays)
    assert hetmap("compile", "model.onnx", "-t", "tiny", "-o", "out", "--data", "data.npz").exit_code == 0
    return hetmap(
        "run", "out/model.mapped.onnx", "--data", "data.npz", "--seeds", "1", "--drift", "1d", "--json", "result.json"
    )


def test_model_with_an_int64_scalar_input_runs(hetmap):
    arrays = {"x": np.random.default_rng(0).standard_normal((6, 8)).astype(np.float32), "k": np.int64(3)}
    result = compile_and_run(hetmap, messy.multi_input_int64_scalar(), arrays)
    assert result.exit_code == 0, result.stderr
    assert (result_json()["samples"], result_json()["metric"]) == (6, "agreement")


def test_model_exported_with_a_fixed_batch_of_one_compiles_and_runs_on_many_samples(hetmap):
    arrays = {"x": np.random.default_rng(0).standard_normal((5, 3, 8, 8)).astype(np.float32)}
    result = compile_and_run(hetmap, messy.conv_bn_relu_gemm_opset9(), arrays)
    assert result.exit_code == 0, result.stderr
    assert result_json()["samples"] == 5


def test_data_that_a_fixed_batch_does_not_divide_loses_its_last_samples_in_both_commands_with_a_note(hetmap):
    """Compile left the last samples out silently and run refused the same file: now both leave them out, and say so."""
    onnx.save(messy.gemm_bn(), "model.onnx")  # input x: 2 x 10
    np.savez("data.npz", x=np.random.default_rng(0).standard_normal((5, 10)).astype(np.float32))
    left_out = "note: data file 'data.npz': the model takes exactly 2 samples per run, so the last 1 of its 5"
    compiled = hetmap("compile", "model.onnx", "-t", "tiny", "-o", "out", "--data", "data.npz")
    assert compiled.exit_code == 0 and left_out in " ".join(compiled.stderr.split())
    ran = hetmap("run", "out/model.mapped.onnx", "--data", "data.npz", "--seeds", "1", "--json", "result.json")
    assert ran.exit_code == 0 and left_out in " ".join(ran.stderr.split())
    assert result_json()["samples"] == 4


# Bad input: one line on stderr, a non-zero exit, no traceback.


def test_unknown_drift_time(hetmap, build):
    assert_one_line_error(run(hetmap, build, "--drift", "1h,1x"), "unknown drift time '1x'", "s, m, h, d, w or y")


@pytest.mark.parametrize("drift", ["", " , "])
def test_a_drift_list_naming_no_time(hetmap, build, drift):
    assert_one_line_error(run(hetmap, build, "--drift", drift), "names no drift time")


def test_data_whose_shapes_do_not_match_the_model(hetmap, build):
    np.savez("wrong.npz", x=np.zeros((4, 1, 9, 9), np.float32))
    result = hetmap("run", build / "out" / "model.mapped.onnx", "--data", "wrong.npz")
    assert_one_line_error(result, "data file 'wrong.npz'", "N x 1x9x9 per sample but the model expects N x 1x8x8")


def test_model_that_was_never_compiled(hetmap, build):
    result = hetmap("run", reference_path("cnn.onnx"), "--data", build / "labelled.npz")
    assert_one_line_error(result, "carries no hetmap annotations", "hetmap compile")


def test_the_simulation_graph_is_pointed_to_the_annotated_model(hetmap, build):
    result = hetmap("run", build / "out" / "model.sim.onnx", "--data", build / "labelled.npz")
    assert_one_line_error(result, "is a simulation graph", "model.mapped.onnx")


def test_missing_model_file(hetmap, build):
    result = hetmap("run", "absent.onnx", "--data", build / "labelled.npz")
    assert_one_line_error(result, "model file 'absent.onnx' does not exist")


def test_zero_seeds(hetmap, build):
    assert_one_line_error(run(hetmap, build, "--seeds", "0"), "'--seeds'", "0 is not in the range x>=1")


def test_missing_data_flag(hetmap, build):
    result = hetmap("run", build / "out" / "model.mapped.onnx")
    assert_one_line_error(result, "Missing option '--data'", "hetmap run --help")


def test_bad_input_writes_no_json(hetmap, build):
    run(hetmap, build, "--drift", "1x")
    assert not Path("result.json").exists()


# Where it simulates.


def test_on_a_machine_without_a_gpu_auto_simulates_on_onnxruntime_and_says_so(hetmap, build):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: auto simulates there")
    assert run(hetmap, build, "--seeds", "1", "--drift", "1d").exit_code == 0
    assert result_json()["simulated_on"] == "onnxruntime (cpu)"


def test_cpu_simulates_on_onnxruntime_and_the_table_says_so(hetmap, build):
    result = run(hetmap, build, "--seeds", "1", "--drift", "1d", "--device", "cpu")
    assert result.exit_code == 0 and "simulated on onnxruntime (cpu)" in result.stdout
    assert result_json()["simulated_on"] == "onnxruntime (cpu)"


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_asked_for_without_a_gpu(hetmap, build):
    assert_one_line_error(run(hetmap, build, "--device", "cuda"), "--device cuda", "torch sees no CUDA device")
    assert not Path("result.json").exists()


def test_run_scores_with_the_metric_the_compile_was_given_unless_told_otherwise(hetmap, tmp_path):
    """Compiled with --metric cosine, a model's run scored agreement: two numbers for one mapping."""
    test = np.load(reference_path("cnn.test.npz"))
    np.savez("data.npz", x=test["x"][:64])
    compile_model(
        reference_path("cnn.onnx"), load_target("hermes"), tmp_path / "out", Path("data.npz"), metric="cosine"
    )
    mapped = tmp_path / "out" / "model.mapped.onnx"
    common = ("--data", "data.npz", "--seeds", "1", "--drift", "1d", "--json", "result.json")
    assert hetmap("run", mapped, *common).exit_code == 0 and result_json()["metric"] == "cosine"
    assert hetmap("run", mapped, *common, "--metric", "snr").exit_code == 0 and result_json()["metric"] == "snr"


def test_a_verify_file_with_a_scalar_input_is_compared_sample_by_sample(hetmap):
    """A 0-d input belongs to no sample: comparing the --verify file with --data indexed it and crashed."""
    onnx.save(messy.multi_input_int64_scalar(), "model.onnx")
    np.savez("data.npz", x=np.random.default_rng(0).standard_normal((6, 8)).astype(np.float32), k=np.int64(3))
    result = hetmap("compile", "model.onnx", "-t", "tiny", "--data", "data.npz", "--verify", "data.npz",
                    "--allow-over-budget")  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert "shares 6 of its 6 samples with --data" in " ".join(result.stderr.split())

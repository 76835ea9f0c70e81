"""The `hetmap` command line: what `compile` writes, `inspect` shows, and the import namespace."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

import messy_models as messy
from helpers import assert_same_outputs, ort_outputs, random_inputs, run_console_script
from hetmap.models import reference_path

OUTPUT_FILES = {
    "model.mapped.onnx",
    "model.sim.onnx",
    "mapping.json",
    "report.html",
    "reports/canonicalize.json",
    "reports/partition.json",
    "reports/calibrate.json",
    "reports/sensitivity.json",
    "reports/assign.json",
    "reports/emit.json",
    "reports/schedule.json",
    "reports/pipeline.json",
    "reports/schedule.png",
    "reports/sensitivity.png",
    "reports/tiles.png",
    "reports/energy.png",
}


def files_under(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()}


# The happy path, through the real console script.


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    """`hetmap compile model.onnx -t tiny -o out` on the opset-9 Conv+BN+Gemm model."""
    folder = tmp_path_factory.mktemp("compiled")
    onnx.save(messy.conv_bn_relu_gemm_opset9(), folder / "model.onnx")
    result = run_console_script("compile", "model.onnx", "-t", "tiny", "-o", "out", cwd=folder)
    assert result.returncode == 0, result.stderr
    return folder


def test_compile_writes_exactly_the_canonical_model_and_three_reports(compiled):
    assert files_under(compiled / "out") == OUTPUT_FILES  # no temporary file left behind


def test_written_canonical_model_is_checker_clean_and_computes_the_same_outputs(compiled):
    canonical = onnx.load(compiled / "out" / "model.mapped.onnx")
    onnx.checker.check_model(canonical, full_check=True)
    original = onnx.load(compiled / "model.onnx")
    feeds = random_inputs(original)
    assert_same_outputs(ort_outputs(original, feeds), ort_outputs(canonical, feeds))


@pytest.mark.parametrize(
    "report, keys",
    [
        (
            "canonicalize",
            {
                "producer",
                "ir_version_in",
                "opset_in",
                "opset_out",
                "nodes_in",
                "nodes_out",
                "op_counts_in",
                "op_counts_out",
                "initializers_out",
                "weight_count",
                "batchnorms_folded",
                "batchnorms_left",
                "earlier_mapping_cleared",
            },
        ),
        (
            "partition",
            {
                "target",
                "tile_rows",
                "tile_cols",
                "tile_count",
                "layers",
                "unmappable",
                "mappable_weights",
                "mappable_macs",
                "tiles_needed",
                "fits_on_chip",
            },
        ),
        ("pipeline", {"target", "seed", "input_shapes", "passes"}),
    ],
)
def test_reports_are_json_with_the_expected_keys(compiled, report, keys):
    assert set(json.loads((compiled / "out" / "reports" / f"{report}.json").read_text())) == keys


def test_partition_report_lists_the_layers_with_their_matrices(compiled):
    report = json.loads((compiled / "out" / "reports" / "partition.json").read_text())
    assert [(layer["name"], layer["rows"], layer["cols"], layer["tiles"]) for layer in report["layers"]] == [
        ("conv1", 27, 4, 1),
        ("fc", 144, 10, 5),
    ]


def test_pipeline_report_records_each_pass_and_its_parity(compiled):
    report = json.loads((compiled / "out" / "reports" / "pipeline.json").read_text())
    assert (report["target"], report["seed"], report["input_shapes"]) == ("tiny", 0, {"x": [1, 3, 8, 8]})
    assert [p["name"] for p in report["passes"]] == [
        "canonicalize",
        "partition",
        "calibrate",
        "sensitivity",
        "assign",
        "schedule",
        "emit",
    ]
    assert report["passes"][0]["parity_relative_error"] < 1e-4


def test_output_files_get_the_usual_permissions(compiled):
    umask = os.umask(0)
    os.umask(umask)
    for name in OUTPUT_FILES:
        assert (compiled / "out" / name).stat().st_mode & 0o777 == 0o666 & ~umask, name


@pytest.mark.parametrize("given", ["out", "out/model.mapped.onnx"])  # the folder, or the model in it
def test_inspect_prints_the_report_tables(compiled, hetmap, given):
    result = hetmap("inspect", compiled / given)
    assert result.exit_code == 0
    for text in ("canonicalize", "opset 9 -> 21", "Mappable layers on tiny", "conv1", "144 x 10", "pipeline"):
        assert text in result.stdout


def test_two_compiles_are_identical_but_for_timings(compiled, hetmap):
    assert hetmap("compile", compiled / "model.onnx", "-t", "tiny", "-o", "again").exit_code == 0
    first, again = compiled / "out", Path("again")
    for name in ("model.mapped.onnx", "model.sim.onnx", "reports/canonicalize.json", "reports/partition.json"):
        assert (first / name).read_bytes() == (again / name).read_bytes(), name
    untimed = [json.loads((folder / "reports/pipeline.json").read_text()) for folder in (first, again)]
    for report in untimed:
        for record in report["passes"]:
            record.pop("seconds")
    assert untimed[0] == untimed[1]


def test_successful_compile_prints_the_tables_and_on_stderr_only_the_note_on_missing_data(hetmap):
    onnx.save(messy.gemm_trans_b(), "model.onnx")
    result = hetmap("compile", "model.onnx", "-t", "tiny", "-o", "out")
    assert result.exit_code == 0 and "Mappable layers on tiny" in result.stdout
    assert result.stdout.strip().endswith("wrote out/")
    # without --data, one note says the random inputs decided it and verify nothing
    assert result.stderr.startswith("note: no --data: the mapping was decided on 1 random input (")  # batch 1
    assert len(result.stderr.strip().splitlines()) == 1


def test_compiling_again_into_the_same_folder_replaces_the_outputs(hetmap):
    onnx.save(messy.gemm_trans_b(), "model.onnx")
    assert hetmap("compile", "model.onnx", "-t", "tiny", "-o", "out").exit_code == 0
    assert hetmap("compile", "model.onnx", "-t", "hermes", "-o", "out").exit_code == 0
    assert files_under(Path("out")) == OUTPUT_FILES
    assert json.loads(Path("out/reports/partition.json").read_text())["target"] == "hermes"


def test_failed_compile_writes_nothing(hetmap):
    onnx.save(messy.no_mappable_layer(), "model.onnx")
    assert hetmap("compile", "model.onnx", "-t", "tiny", "-o", "out").exit_code != 0
    assert not Path("out").exists()


def test_input_shape_flag_sets_the_shapes_for_macs(hetmap):
    onnx.save(messy.symbolic_dims(), "model.onnx")
    args = ("compile", "model.onnx", "-t", "tiny", "-o", "out", "--input-shape", "x=1,3,16,12", "--allow-over-budget")
    assert hetmap(*args).exit_code == 0
    assert json.loads(Path("out/reports/pipeline.json").read_text())["input_shapes"] == {"x": [1, 3, 16, 12]}
    conv = json.loads(Path("out/reports/partition.json").read_text())["layers"][0]
    assert conv["macs"] == 8 * 16 * 12 * 27


def test_data_file_sets_the_shapes_for_macs(hetmap):
    onnx.save(messy.symbolic_dims(), "model.onnx")
    np.savez("calib.npz", x=np.zeros((5, 3, 10, 6), np.float32))
    assert hetmap("compile", "model.onnx", "-t", "tiny", "-o", "out", "--data", "calib.npz").exit_code == 0
    assert json.loads(Path("out/reports/pipeline.json").read_text())["input_shapes"] == {"x": [1, 3, 10, 6]}


def test_data_file_feeds_a_multi_input_model_with_an_int64_scalar(hetmap):
    onnx.save(messy.multi_input_int64_scalar(), "model.onnx")
    np.savez("calib.npz", x=np.ones((5, 8), np.float32), k=np.int64(3))
    result = hetmap("compile", "model.onnx", "-t", "tiny", "-o", "out", "--data", "calib.npz")
    assert result.exit_code == 0, result.stderr
    assert json.loads(Path("out/reports/pipeline.json").read_text())["input_shapes"] == {"x": [1, 8], "k": []}


# One import namespace: hetmap.*, never top-level `passes` or `targets`.


@pytest.mark.parametrize("module", ["passes", "targets", "compiler"])
def test_source_folders_are_not_top_level_modules(tmp_path, module):
    result = subprocess.run([sys.executable, "-c", f"import {module}"], cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode != 0 and f"No module named '{module}'" in result.stderr


def test_passes_and_targets_import_under_hetmap(tmp_path):
    code = "import hetmap.passes.partition, hetmap.targets; print(hetmap.targets.builtin_target_names())"
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.strip() == "['diana', 'hermes', 'tiny']"


def test_a_verify_file_without_labels_is_summarised_by_its_own_metric_and_full_precision(hetmap):
    """The decision data is labelled and the verification data not: the summary's figures are the latter's."""
    with np.load(reference_path("cnn.test.npz")) as data:
        np.savez("decide.npz", x=data["x"][:200], y=data["y"][:200])
        np.savez("verify.npz", x=data["x"][200:400])
    args = ["-o", "out", "--data", "decide.npz", "--verify", "verify.npz", "--max-drop", "5", "--workers", "1"]
    result = hetmap("compile", reference_path("cnn.onnx"), *args)
    assert result.exit_code == 0, result.stderr
    verification = json.loads(Path("out/reports/assign.json").read_text())["verification"]
    assert (verification["metric"], verification["full_precision"], verification["samples"]) == ("agreement", 1.0, 200)
    assert json.loads(Path("out/reports/sensitivity.json").read_text())["metric"] == "accuracy"
    assert "agreement" in result.stdout and "100.00% full precision" in result.stdout

"""Bad input to the `hetmap` command line: one line on stderr, a non-zero exit, never a traceback."""

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper

import messy_models as messy
from helpers import assert_one_line_error, run_console_script
from hetmap.models import reference_path


@pytest.fixture
def model_file(tmp_path):
    """model.onnx in the working folder: the opset-9 Conv+BN+Gemm model (input x: 1x3x8x8)."""
    onnx.save(messy.conv_bn_relu_gemm_opset9(), tmp_path / "model.onnx")
    return "model.onnx"


def test_missing_model_file(hetmap):
    assert_one_line_error(hetmap("compile", "absent.onnx", "-t", "tiny"), "model file 'absent.onnx' does not exist")


@pytest.mark.parametrize(
    "content",
    [np.random.default_rng(0).bytes(512), b"just some text\n", b""],
    ids=["random bytes", "text file", "empty file"],
)
def test_file_that_is_not_onnx(hetmap, content):
    Path("model.onnx").write_bytes(content)
    assert_one_line_error(hetmap("compile", "model.onnx", "-t", "tiny", "-o", "out"), "model file 'model.onnx'")


def test_folder_given_as_model(hetmap, tmp_path):
    (tmp_path / "model.onnx").mkdir()
    assert_one_line_error(hetmap("compile", "model.onnx", "-t", "tiny", "-o", "out"), "is a folder")


def test_model_that_fails_the_checker(hetmap):
    broken = messy.conv_bn_relu_gemm_opset9()
    broken.graph.node[2].input[0] = "undefined"
    onnx.save(broken, "model.onnx")
    result = hetmap("compile", "model.onnx", "-t", "tiny", "-o", "out")
    assert_one_line_error(result, "fails the ONNX checker", "undefined")


def test_model_with_missing_external_data(hetmap):
    onnx.save(messy.wide_gemm(), "model.onnx", save_as_external_data=True, location="weights.bin", size_threshold=0)
    Path("weights.bin").unlink()
    assert_one_line_error(hetmap("compile", "model.onnx", "-t", "tiny", "-o", "out"), "weights.bin")


def test_model_below_opset_9(hetmap):
    old = messy.no_mappable_layer()
    old.opset_import[0].version, old.ir_version = 8, 3
    onnx.save(old, "model.onnx")
    assert_one_line_error(hetmap("compile", "model.onnx", "-t", "tiny", "-o", "out"), "opset >= 9")


def test_model_with_no_mappable_layer(hetmap):
    onnx.save(messy.no_mappable_layer(), "model.onnx")
    assert_one_line_error(hetmap("compile", "model.onnx", "-t", "tiny", "-o", "out"), "no mappable layer")


def test_a_model_with_its_batch_axis_second_is_named_as_such(hetmap):
    """Sequence-first, as nn.TransformerEncoder defaults to: samples fed along the first axis break shape inference."""
    nodes = [
        onnx.helper.make_node("Transpose", ["x"], ["t"], perm=[1, 0, 2], name="batch_first"),
        onnx.helper.make_node("Reshape", ["t", "flat"], ["f"], name="flatten"),
        onnx.helper.make_node("Gemm", ["f", "fc.W"], ["y"], name="fc"),
    ]
    weights = [messy.init("flat", np.array([-1, 70], np.int64)), messy.init("fc.W", np.ones((70, 4), np.float32))]
    model = messy.model(nodes, [messy.tensor("x", [7, "batch", 10])], [messy.tensor("y", ["batch", 4])], weights)
    onnx.save(model, "model.onnx")
    np.savez("data.npz", x=np.ones((7, 12, 10), np.float32))
    result = hetmap("compile", "model.onnx", "-t", "hermes", "--data", "data.npz", "-o", "out")
    assert_one_line_error(result, "declared 7xbatchx10", "export the model batch first")


def test_a_float16_model_is_named_not_simulated_wrongly(hetmap):
    """Inputs, weights and compute in float16: the simulator's converters compute in float32."""
    model = onnx.load(reference_path("cnn.onnx"))
    for tensor in model.graph.initializer:
        array = onnx.numpy_helper.to_array(tensor)
        if array.dtype == np.float32:
            tensor.CopyFrom(onnx.numpy_helper.from_array(array.astype(np.float16), tensor.name))
    for value in [*model.graph.input, *model.graph.output]:
        value.type.tensor_type.elem_type = onnx.TensorProto.FLOAT16
    del model.graph.value_info[:]
    onnx.save(model, "model.onnx")
    np.savez("data.npz", x=np.load(reference_path("cnn.test.npz"))["x"][:16].astype(np.float16))
    result = hetmap("compile", "model.onnx", "-t", "hermes", "--data", "data.npz", "-o", "out")
    assert_one_line_error(result, "weight is float16", "float32")


def test_target_file_with_a_wrong_field(hetmap, model_file):
    Path("board.toml").write_text('name = "b"\ndescription = "d"\nclock_mhz = 1.0\n[analog]\nrows = "32"\n')
    result = hetmap("compile", model_file, "-t", "board.toml", "-o", "out")
    assert_one_line_error(result, "target file 'board.toml'", "field 'analog.rows' must be an integer")


def test_unknown_target_name(hetmap, model_file):
    assert_one_line_error(hetmap("compile", model_file, "-t", "hermez", "-o", "out"), "unknown target 'hermez'")


def test_output_folder_pointing_at_the_model_file(hetmap, model_file):
    assert_one_line_error(hetmap("compile", model_file, "-t", "tiny", "-o", model_file), "choose another -o")
    assert onnx.load(model_file) == messy.conv_bn_relu_gemm_opset9()


def test_model_lying_where_the_output_would_be_written(hetmap):
    Path("out").mkdir()
    onnx.save(messy.conv_bn_relu_gemm_opset9(), "out/model.mapped.onnx")
    result = hetmap("compile", "out/model.mapped.onnx", "-t", "tiny", "-o", "out")
    assert_one_line_error(result, "would overwrite the input", "choose another -o")


def test_data_file_lying_where_a_report_would_be_written(hetmap, model_file):
    Path("out/reports").mkdir(parents=True)
    np.savez("out/reports/calib.npz", x=np.zeros((2, 3, 8, 8), np.float32))
    result = hetmap("compile", model_file, "-t", "tiny", "-o", "out", "--data", "out/reports/calib.npz")
    assert_one_line_error(result, "would overwrite the input")


def test_symbolic_non_batch_dimension_without_shapes_names_both_flags(hetmap):
    onnx.save(messy.symbolic_dims(), "model.onnx")
    result = hetmap("compile", "model.onnx", "-t", "tiny", "-o", "out")
    assert_one_line_error(result, "symbolic dimension 'height'", "--data", "--input-shape x=1,3,N,N")


@pytest.mark.parametrize(
    "shape, message",
    [
        ((4, 3, 9, 9), "has shape N x 3x9x9 per sample but the model expects N x 3x8x8"),
        ((4, 3, 8), "has rank 3 but the model expects rank 4"),
    ],
    ids=["wrong size", "wrong rank"],
)
def test_data_file_whose_shapes_do_not_match_the_model(hetmap, model_file, shape, message):
    np.savez("calib.npz", x=np.zeros(shape, np.float32))
    result = hetmap("compile", model_file, "-t", "tiny", "-o", "out", "--data", "calib.npz")
    assert_one_line_error(result, "data file 'calib.npz'", message)


def test_data_file_without_an_array_for_an_input(hetmap):
    onnx.save(messy.multi_input_int64_scalar(), "model.onnx")
    np.savez("calib.npz", x=np.ones((5, 8), np.float32))
    result = hetmap("compile", "model.onnx", "-t", "tiny", "-o", "out", "--data", "calib.npz")
    assert_one_line_error(result, "has no array for model input 'k'")


@pytest.mark.parametrize("content", [b"not an npz", None], ids=["not npz", "absent"])
def test_data_file_that_cannot_be_read(hetmap, model_file, content):
    if content is not None:
        Path("calib.npz").write_bytes(content)
    result = hetmap("compile", model_file, "-t", "tiny", "-o", "out", "--data", "calib.npz")
    assert_one_line_error(result, "data file 'calib.npz'")


@pytest.mark.parametrize("flag", ["x=1,3,a,8", "x1,3,8,8", "x=", "=1,3,8,8", "x=1,0,8,8", "x=1,3,,8"])
def test_malformed_input_shape(hetmap, model_file, flag):
    result = hetmap("compile", model_file, "-t", "tiny", "-o", "out", "--input-shape", flag)
    assert_one_line_error(result, f"--input-shape '{flag}' must look like NAME=1,3,32,32")


def test_input_shape_for_an_input_the_model_lacks(hetmap, model_file):
    result = hetmap("compile", model_file, "-t", "tiny", "-o", "out", "--input-shape", "image=1,3,8,8")
    assert_one_line_error(result, "'image', which is not a model input (x)")


def test_input_shape_that_contradicts_the_model(hetmap, model_file):
    result = hetmap("compile", model_file, "-t", "tiny", "-o", "out", "--input-shape", "x=1,3,9,9")
    assert_one_line_error(result, "--input-shape: input 'x' has shape N x 3x9x9 per sample")


def test_inspect_a_folder_without_reports(hetmap):
    Path("empty").mkdir()
    assert_one_line_error(hetmap("inspect", "empty"), "holds no hetmap reports", "run hetmap compile first")
    assert_one_line_error(hetmap("inspect", "nowhere"), "'nowhere' does not exist")


@pytest.mark.parametrize("report", ["assign", "partition", "pipeline", "schedule", "sensitivity"])
@pytest.mark.parametrize("content", ["{}", "[]", "null"])
def test_inspect_of_reports_edited_into_other_json_is_one_line(hetmap, compiled, report, content):
    Path(f"out/reports/{report}.json").write_text(content)
    assert_one_line_error(hetmap("inspect", "out"), "run hetmap compile again")


def test_a_json_file_given_as_the_model_is_not_readable_onnx(hetmap, compiled):
    for command in (("compile", "out/mapping.json", "-o", "again"), ("run", "out/mapping.json", "--data", "data.npz")):
        assert_one_line_error(hetmap(*command), "model file 'out/mapping.json' is not a readable ONNX model")


def test_a_negative_seed_is_refused(hetmap, model_file):
    assert_one_line_error(hetmap("compile", model_file, "-t", "tiny", "--seed", "-1"), "'--seed'", "x>=0")


def test_an_output_without_a_sample_axis_is_named(hetmap):
    """ReduceMean over everything: one number for the whole batch, which no per-sample metric can score."""
    weight = np.random.default_rng(0).standard_normal((4, 3)).astype(np.float32)
    nodes = [
        helper.make_node("MatMul", ["x", "W"], ["h"], name="fc"),
        helper.make_node("ReduceMean", ["h"], ["y"], keepdims=0),
    ]
    onnx.save(
        messy.model(nodes, [messy.tensor("x", ["N", 4])], [messy.tensor("y", [])], [messy.init("W", weight)]), "m.onnx"
    )
    assert_one_line_error(
        hetmap("compile", "m.onnx", "-t", "tiny", "--input-shape", "x=8,4"), "has shape []", "first axis"
    )


@pytest.mark.parametrize(
    "args, message",
    [
        (("compile", "absent.onnx", "-t", "tiny"), "does not exist"),
        (("targets", "show", "board.toml"), "does not exist"),
        (("compile", "sym.onnx", "-t", "tiny"), "add --data FILE.npz or --input-shape"),
    ],
    ids=["missing model", "missing target file", "symbolic dims"],
)
def test_console_script_prints_one_line_and_exits_2(tmp_path, args, message):
    onnx.save(messy.symbolic_dims(), tmp_path / "sym.onnx")
    result = run_console_script(*args, cwd=tmp_path)
    assert result.returncode == 2 and result.stdout == ""
    assert len(result.stderr.strip().splitlines()) == 1 and message in result.stderr
    assert "Traceback" not in result.stderr


def test_training_data_of_the_wrong_shape(hetmap):
    np.savez("train.npz", x=np.zeros((4, 7), np.float32), y=np.zeros(4, np.int64))
    result = hetmap(
        "compile",
        reference_path("mlp.onnx"),
        "-t",
        "hermes",
        "-o",
        "out",
        "--data",
        reference_path("mlp.test.npz"),
        "--train",
        "train.npz",
        "--finetune",
        "1",
    )
    assert_one_line_error(result, "data file 'train.npz'", "N x 7")


def test_cuda_asked_for_without_a_gpu_before_any_pass_runs(hetmap):
    """--device cuda also moves sensitivity's simulations to the GPU: without fine-tuning too, it must be there."""
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    result = hetmap(
        "compile", reference_path("mlp.onnx"), "-o", "out", "--data", reference_path("mlp.test.npz"), "--device", "cuda"
    )
    assert_one_line_error(result, "--device cuda", "torch sees no CUDA device")
    assert not Path("out").exists()


@pytest.mark.parametrize(
    "output, message",
    [("model.onnx/out", "'model.onnx' is a file"), ("x" * 300, "longer than 255 bytes")],
    ids=["under a file", "name too long"],
)
def test_output_folder_that_cannot_be_written_is_refused_before_any_pass(hetmap, model_file, output, message):
    assert_one_line_error(hetmap("compile", model_file, "-t", "tiny", "-o", output), message, "choose another -o")


@pytest.fixture
def compiled(hetmap, model_file):
    """out/: the model compiled on tiny with one layer analog, and its data."""
    np.savez("data.npz", x=np.random.default_rng(0).standard_normal((8, 3, 8, 8), dtype=np.float32))
    assert hetmap("compile", model_file, "-t", "tiny", "-o", "out", "--mapping", "all-analog").exit_code == 0
    return "out/model.mapped.onnx"


@pytest.mark.parametrize(
    "json_path, message",
    [
        ("out/model.mapped.onnx", "would overwrite the input 'out/model.mapped.onnx'"),
        ("data.npz", "would overwrite the input 'data.npz'"),
        ("out/reports/assign.json", "would overwrite a file of the compile in 'out'"),
        ("out/mapping.json", "would overwrite a file of the compile in 'out'"),
        ("out", "is a folder"),
    ],
    ids=["the model", "the data", "a report", "the mapping", "a folder"],
)
def test_run_json_never_overwrites_what_it_reads_or_the_compile(hetmap, compiled, json_path, message):
    before = {path: path.read_bytes() for path in Path().rglob("*") if path.is_file()}
    result = hetmap("run", compiled, "--data", "data.npz", "--seeds", "1", "--drift", "1d", "--json", json_path)
    assert_one_line_error(result, message, "choose another")
    assert {path: path.read_bytes() for path in Path().rglob("*") if path.is_file()} == before


def test_a_mapped_model_compiles_again_afresh_and_a_simulation_graph_is_refused(hetmap, compiled):
    """Retargeting a compiled model: its earlier annotations must not leak into the new compile's measurements."""
    again = hetmap("compile", compiled, "-t", "tiny", "-o", "again", "--data", "data.npz")
    assert again.exit_code == 0, again.stderr
    assert "earlier compile's mapping (2 layers)" in again.stdout
    report = json.loads(Path("again/reports/canonicalize.json").read_text())
    assert report["earlier_mapping_cleared"] == 2
    result = hetmap("compile", "out/model.sim.onnx", "-t", "tiny", "-o", "sim")
    assert_one_line_error(result, "is a simulation graph", "model.mapped.onnx beside it")


def test_a_drift_list_given_to_compile_points_to_run(hetmap, model_file):
    result = hetmap("compile", model_file, "-t", "tiny", "--drift", "1h,1d")
    assert_one_line_error(result, "compile holds its budget at one drift time", "hetmap run takes a list")


def test_flags_a_given_mapping_leaves_unused_are_noted(hetmap, model_file):
    np.savez("train.npz", x=np.zeros((4, 3, 8, 8), np.float32))
    result = hetmap("compile", model_file, "-t", "tiny", "--mapping", "all-digital-int8", "--pareto", "--train",
                    "train.npz", "--max-drop", "2")  # fmt: skip
    assert result.exit_code == 0
    assert "note: --mapping fixes the mapping: --max-drop, --pareto ignored" in result.stderr
    assert "note: --train feeds --finetune only: --train ignored" in result.stderr


def test_layers_only_a_later_output_reads_are_named(hetmap):
    """Drops are measured on the first output: a layer feeding only the second measures 0 whatever its option."""
    weights = [messy.init(name, np.random.default_rng(0).standard_normal((16, 10)).astype(np.float32)) for name in "AB"]
    nodes = [helper.make_node("MatMul", ["x", w], [y], name=name) for w, y, name in [("A", "a", "first"),
                                                                                    ("B", "b", "second")]]  # fmt: skip
    outputs = [messy.tensor("a", ["N", 10]), messy.tensor("b", ["N", 10])]
    onnx.save(messy.model(nodes, [messy.tensor("x", ["N", 16])], outputs, weights), "two.onnx")
    result = hetmap("compile", "two.onnx", "-t", "tiny", "--input-shape", "x=8,16", "--allow-over-budget")
    assert result.exit_code == 0
    assert "note: layer second only feeds outputs after the first" in result.stderr
    assert "layer first" not in result.stderr


def test_a_verify_file_that_shares_the_decision_samples_is_not_called_held_out(hetmap, model_file):
    """The same file given as --data and --verify: its interval vouches for nothing the decisions did not see."""
    x = np.random.default_rng(0).standard_normal((40, 3, 8, 8), dtype=np.float32)
    np.savez("data.npz", x=x)
    np.savez("verify.npz", x=np.concatenate([x[:10], -x[:30]]))
    common = ("compile", model_file, "-t", "tiny", "--data", "data.npz", "--max-drop", "100", "-o")
    result = hetmap(*common, "same", "--verify", "data.npz")
    assert "note: the --verify file shares 40 of its 40 samples with --data" in result.stderr
    assert json.loads(Path("same/reports/assign.json").read_text())["verification"]["held_out"] is False
    result = hetmap(*common, "part", "--verify", "verify.npz")
    assert "shares 10 of its 40 samples with --data" in result.stderr
    np.savez("apart.npz", x=-x)
    result = hetmap(*common, "apart", "--verify", "apart.npz")
    assert "shares" not in result.stderr
    assert json.loads(Path("apart/reports/assign.json").read_text())["verification"]["held_out"] is True


def test_a_layer_without_weights_is_named_not_divided_by(hetmap):
    """x [N, 0] times a [10, 0] weight: no rows to put on a tile (partition divided by them)."""
    nodes = [helper.make_node("Gemm", ["x", "W"], ["y"], name="fc", transB=1)]
    weight = messy.init("W", np.zeros((10, 0), np.float32))
    onnx.save(messy.model(nodes, [messy.tensor("x", ["N", 0])], [messy.tensor("y", ["N", 10])], [weight]), "m.onnx")
    np.savez("d.npz", x=np.zeros((8, 0), np.float32))
    result = hetmap("compile", "m.onnx", "-t", "tiny", "--data", "d.npz")
    assert_one_line_error(result, "Gemm 'fc' is not (weight matrix is 0 x 10: it holds no weight)")


def test_onnxruntime_refusing_the_inputs_keeps_the_lines_that_say_why(hetmap):
    """A batch declared as 0: onnxruntime's reason (the index, the size got and expected) spans three lines."""
    nodes = [helper.make_node("Gemm", ["x", "W"], ["y"], name="fc", transB=1)]
    weight = messy.init("W", np.ones((10, 16), np.float32))
    onnx.save(messy.model(nodes, [messy.tensor("x", [0, 16])], [messy.tensor("y", [0, 10])], [weight]), "m.onnx")
    np.savez("d.npz", x=np.zeros((8, 16), np.float32))
    result = hetmap("compile", "m.onnx", "-t", "tiny", "--data", "d.npz")
    assert_one_line_error(result, "onnxruntime cannot run the model", "index: 0", "Expected: 0")

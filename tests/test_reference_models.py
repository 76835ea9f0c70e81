"""The bundled reference models load, pass the checker, reach their recorded accuracy in onnxruntime, and have the ops the compiler is meant to meet."""

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from hetmap.models import DEFAULT_MODEL, reference_path

MINIMUM_ACCURACY = {"cnn": 0.95, "mlp": 0.95, "resnet": 0.95, "transformer": 0.90, "resnet8": 0.80, "resnet20": 0.80}
SHAPES32_MODELS = ("resnet8", "resnet20")  # the harder task: full precision between 80 and 95 %


def load(name: str) -> onnx.ModelProto:
    return onnx.load(reference_path(f"{name}.onnx"))


def onnx_accuracy(name: str) -> float:
    session = ort.InferenceSession(str(reference_path(f"{name}.onnx")), providers=["CPUExecutionProvider"])
    data = np.load(reference_path(f"{name}.test.npz"))
    logits = session.run(["logits"], {"x": data["x"]})[0]
    return float(np.mean(logits.argmax(axis=1) == data["y"]))


@pytest.mark.parametrize("name", sorted(MINIMUM_ACCURACY))
def test_model_is_checker_clean_with_named_symbolic_batch_io(name):
    model = load(name)
    onnx.checker.check_model(model, full_check=True)
    assert [i.name for i in model.graph.input] == ["x"]
    assert [o.name for o in model.graph.output] == ["logits"]
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"


@pytest.mark.parametrize("name", sorted(MINIMUM_ACCURACY))
def test_data_files_hold_float32_x_and_int64_y(name):
    for part in ("train", "test"):
        data = np.load(reference_path(f"{name}.{part}.npz"))
        assert data["x"].dtype == np.float32 and data["y"].dtype == np.int64
        assert len(data["x"]) == len(data["y"])


@pytest.mark.parametrize("name", sorted(MINIMUM_ACCURACY))
def test_onnxruntime_accuracy_matches_record_and_minimum(name):
    recorded = json.loads(reference_path("accuracy.json").read_text())[name]
    accuracy = onnx_accuracy(name)
    assert accuracy == pytest.approx(recorded, abs=1e-9)
    assert accuracy >= MINIMUM_ACCURACY[name]


@pytest.mark.parametrize("name", SHAPES32_MODELS)
def test_shapes32_models_land_in_the_task_window(name):
    recorded = json.loads(reference_path("accuracy.json").read_text())[name]
    assert 0.80 <= recorded <= 0.95


@pytest.mark.parametrize("name", SHAPES32_MODELS)
def test_shapes32_models_take_rgb_32x32_and_have_their_depth(name):
    model = load(name)
    assert [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim[1:]] == [3, 32, 32]
    convolutions = sum(node.op_type == "Conv" for node in model.graph.node)
    assert convolutions == {"resnet8": 7 + 2, "resnet20": 19 + 2}[name]  # plus the two 1x1 projection shortcuts


def test_resnet_keeps_batchnorm_unfolded():
    assert "BatchNormalization" in {node.op_type for node in load("resnet").graph.node}


def test_mlp_has_gemm():
    assert "Gemm" in {node.op_type for node in load("mlp").graph.node}


def test_transformer_has_weight_matmul_and_activation_matmul():
    graph = load("transformer").graph
    constants = {init.name for init in graph.initializer}
    constant_operands = [sum(i in constants for i in node.input) for node in graph.node if node.op_type == "MatMul"]
    assert 1 in constant_operands  # x @ W: a mappable layer
    assert 0 in constant_operands  # Q @ K^T: two activations, stays digital


def test_default_model_is_bundled():
    assert reference_path(f"{DEFAULT_MODEL}.onnx").is_file()


def test_missing_reference_file_is_one_clear_error():
    with pytest.raises(FileNotFoundError, match="no bundled reference file 'absent.onnx'"):
        reference_path("absent.onnx")

"""ONNX files read and written a weight at a time (hetmap.graph.wire) hold the same tensors as onnx's own."""

import ml_dtypes
import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper, numpy_helper

from hetmap.graph.modelio import read_model, save_model_atomic


def _model_of_every_storage() -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    bfloat16 = np.array([1.5, -2], ml_dtypes.bfloat16).view(np.uint16).tolist()
    initializers = [
        numpy_helper.from_array(rng.standard_normal((4, 3)).astype(np.float32), "w"),  # raw_data
        numpy_helper.from_array(np.array(2.5, np.float32), "scalar"),
        numpy_helper.from_array(np.arange(6, dtype=np.int64).reshape(2, 3), "int64"),
        helper.make_tensor("bias", onnx.TensorProto.FLOAT, [3], [1.0, 2.0, 3.0]),  # float_data
        helper.make_tensor("int4", onnx.TensorProto.INT4, [3], [1, -2, 3]),  # two values a byte
        helper.make_tensor("bfloat16", onnx.TensorProto.BFLOAT16, [2], bfloat16),
        numpy_helper.from_array(np.zeros((0, 3), np.float32), "empty"),
    ]
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["m"]),
        helper.make_node("Mul", ["m", "scalar"], ["n"]),
        helper.make_node("Add", ["n", "bias"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [2, 4])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [2, 3])],
        initializers,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])


def _arrays(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {tensor.name: numpy_helper.to_array(tensor) for tensor in model.graph.initializer}


def test_weights_read_and_written_apart_round_trip_bit_for_bit(tmp_path):
    original = _model_of_every_storage()
    onnx.save(original, tmp_path / "in.onnx")
    model = read_model(tmp_path / "in.onnx")
    assert model.graph.initializers["w"].const_value.numpy().tobytes() == _arrays(original)["w"].tobytes()
    save_model_atomic(model, tmp_path / "out.onnx")

    written = onnx.load(tmp_path / "out.onnx")
    onnx.checker.check_model(written, full_check=True)
    expected, got = _arrays(original), _arrays(written)
    assert got.keys() == expected.keys()
    for name, array in expected.items():
        assert got[name].dtype == array.dtype and got[name].shape == array.shape, name
        assert got[name].tobytes() == array.tobytes(), name
    again = read_model(tmp_path / "out.onnx")  # one ModelProto per weight, then the rest: parsed as their merge
    assert [v.const_value.numpy().tobytes() for v in again.graph.initializers.values()] == [
        v.const_value.numpy().tobytes() for v in model.graph.initializers.values()
    ]
    x = np.ones((2, 4), np.float32)
    runs = [ort.InferenceSession(str(tmp_path / f)).run(None, {"x": x})[0] for f in ("in.onnx", "out.onnx")]
    np.testing.assert_array_equal(*runs)

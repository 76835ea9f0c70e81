"""onnxruntime sessions over an onnx-ir model, its weights read in place rather than serialised.

Serialising a large model's weights into the payload, and onnxruntime
parsing them back, cost a copy each and most of a session's build time;
instead every large initializer is declared as external data and handed to
onnxruntime as an OrtValue over the model's own array, which the session
keeps. Initializers named in `fed` become inputs, so draws need no rebuild.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort

from hetmap.sim import jobs

IN_PLACE_ABOVE_BYTES = 1024
_IN_PLACE_DTYPES = {np.dtype(t) for t in (np.float16, np.float32, np.float64, np.int8, np.uint8, np.int32, np.int64)}


def session_for(model: ir.Model, fed: set[str]) -> ort.InferenceSession:
    graph = model.graph
    moved = [value for name, value in graph.initializers.items() if name in fed or _in_place(value)]
    for value in moved:
        graph.initializers.pop(value.name)
    try:
        proto = ir.to_proto(model)
    finally:
        for value in moved:
            graph.register_initializer(value)
    names, arrays = [], []
    for value in moved:
        tensor = value.const_value
        if value.name in fed:
            proto.graph.input.append(
                onnx.helper.make_tensor_value_info(value.name, int(tensor.dtype), list(tensor.shape))
            )
            continue
        array = np.ascontiguousarray(tensor.numpy())
        proto.graph.initializer.append(_external(value.name, int(tensor.dtype), array))
        names.append(value.name)
        arrays.append(array)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = jobs.SESSION_THREADS
    values = [ort.OrtValue.ortvalue_from_numpy(array) for array in arrays]
    if names:
        options.add_external_initializers(names, values)
    session = ort.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])
    session.hetmap_weights = (arrays, values)  # read in place: they must live as long as the session
    return session


def _in_place(value: ir.Value) -> bool:
    tensor = value.const_value
    return tensor is not None and tensor.nbytes > IN_PLACE_ABOVE_BYTES and tensor.dtype.numpy() in _IN_PLACE_DTYPES


def _external(name: str, data_type: int, array: np.ndarray) -> onnx.TensorProto:
    """A TensorProto whose data onnxruntime takes from the OrtValue of the same name."""
    tensor = onnx.TensorProto(name=name, data_type=data_type, dims=array.shape)
    tensor.data_location = onnx.TensorProto.EXTERNAL
    for key, text in (("location", "hetmap-in-memory"), ("offset", "0"), ("length", str(array.nbytes))):
        entry = tensor.external_data.add()
        entry.key, entry.value = key, text
    return tensor

"""ONNX files read and written one weight at a time, through protobuf's wire format.

A parsed ModelProto keeps every weight's bytes in its arena until the whole
message is freed, and serialising one copies them again: a model would be in
memory two or three times over. Here the raw bytes of each initializer go
between the file and a numpy array directly. A file of concatenated
ModelProto messages parses as their merge (repeated fields append), so
writing needs no lengths of the whole.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
from google.protobuf.message import DecodeError

VARINT, I64, LEN, I32 = 0, 1, 2, 5  # protobuf wire types
MODEL_GRAPH, GRAPH_INITIALIZER, TENSOR_RAW_DATA = 7, 5, 9  # field numbers in onnx.proto
_PACKED = {ir.DataType.INT4, ir.DataType.UINT4, ir.DataType.FLOAT4E2M1}  # two values per byte


def _varint(number: int) -> bytes:
    out = bytearray()
    while number > 0x7F:
        out.append(number & 0x7F | 0x80)
        number >>= 7
    out.append(number)
    return bytes(out)


def _key(number: int, kind: int) -> bytes:
    return _varint(number << 3 | kind)


def _read_varint(handle) -> int:
    result = shift = 0
    while shift < 64:
        byte = handle.read(1)
        if not byte:
            raise DecodeError("truncated varint")
        result |= (byte[0] & 0x7F) << shift
        if byte[0] < 0x80:
            return result
        shift += 7
    raise DecodeError("varint longer than 10 bytes")


def _fields(handle, end: int):
    """(field number, wire type, value) up to offset `end`; a LEN field's value is its length, its bytes unread."""
    while handle.tell() < end:
        key = _read_varint(handle)
        number, kind = key >> 3, key & 7
        if kind in (VARINT, LEN):
            value = _read_varint(handle)
            if kind == LEN and handle.tell() + value > end:
                raise DecodeError(f"field {number} runs past its message")
            yield number, kind, value
        elif kind in (I64, I32):
            yield number, kind, _read_exactly(handle, 8 if kind == I64 else 4)
        else:
            raise DecodeError(f"unsupported wire type {kind}")


def _read_exactly(handle, size: int) -> bytes:
    data = handle.read(size)
    if len(data) != size:
        raise DecodeError("truncated message")
    return data


def _copy(handle, number: int, kind: int, value) -> bytes:
    """One field as read, encoded again."""
    if kind == VARINT:
        return _key(number, kind) + _varint(value)
    if kind == LEN:
        return _key(number, kind) + _varint(value) + _read_exactly(handle, value)
    return _key(number, kind) + value


def read_apart(path) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """The ModelProto in `path` and, by name, its graph's initializers held in raw bytes as arrays, which the
    proto then leaves out (their dims and type stay). Packed types (INT4) keep their bytes in the proto."""
    raws: list[np.ndarray | None] = []
    with open(path, "rb") as handle:
        end = handle.seek(0, 2)
        handle.seek(0)
        model = bytearray()
        for number, kind, value in _fields(handle, end):
            if (number, kind) != (MODEL_GRAPH, LEN):
                model += _copy(handle, number, kind, value)
                continue
            graph = _graph_apart(handle, handle.tell() + value, raws)
            model += _key(number, LEN) + _varint(len(graph)) + graph
    proto = onnx.ModelProto.FromString(bytes(model))
    arrays = {}
    for tensor, raw in zip(proto.graph.initializer, raws):
        if raw is None:
            continue
        array = _typed(tensor, raw)
        if array is None:
            tensor.raw_data = raw.tobytes()
        else:
            arrays[tensor.name] = array
    return proto, arrays


def _graph_apart(handle, end: int, raws: list) -> bytes:
    """A GraphProto's bytes without its initializers' raw data, which is appended to `raws` (None where absent)."""
    graph = bytearray()
    for number, kind, value in _fields(handle, end):
        if (number, kind) != (GRAPH_INITIALIZER, LEN):
            graph += _copy(handle, number, kind, value)
            continue
        tensor, raw = bytearray(), None
        for field, field_kind, field_value in _fields(handle, handle.tell() + value):
            if (field, field_kind) != (TENSOR_RAW_DATA, LEN):
                tensor += _copy(handle, field, field_kind, field_value)
                continue
            raw = np.empty(field_value, np.uint8)
            if handle.readinto(raw) != field_value:
                raise DecodeError("truncated tensor")
        raws.append(raw)
        graph += _key(number, LEN) + _varint(len(tensor)) + tensor
    return bytes(graph)


def _typed(tensor: onnx.TensorProto, raw: np.ndarray) -> np.ndarray | None:
    """The raw (little-endian) bytes as an array of the tensor's type and shape; None for packed or unknown types."""
    try:
        dtype = ir.DataType(tensor.data_type)
    except ValueError:
        return None
    if dtype in _PACKED or dtype == ir.DataType.STRING or dtype == ir.DataType.UNDEFINED:
        return None
    numpy_type = dtype.numpy().newbyteorder("<")
    if numpy_type.itemsize * int(np.prod(tensor.dims)) != raw.nbytes:
        return None
    return raw.view(numpy_type).reshape(tuple(tensor.dims))


def write_initializer(handle, value: ir.Value) -> None:
    """One initializer as a ModelProto of its own: its array's bytes written as they lie in memory."""
    tensor = value.const_value
    array = _plain_array(tensor)
    if array is None:
        chunk = onnx.ModelProto()
        tensor.name = value.name
        ir.serde.serialize_tensor_into(chunk.graph.initializer.add(), tensor)
        handle.write(chunk.SerializeToString())
        return
    meta = onnx.TensorProto(name=value.name, data_type=tensor.dtype.value, dims=tensor.shape.numpy())
    meta = meta.SerializeToString()
    tensor_head = meta + _key(TENSOR_RAW_DATA, LEN) + _varint(array.nbytes)
    graph_head = _key(GRAPH_INITIALIZER, LEN) + _varint(len(tensor_head) + array.nbytes)
    model_head = _key(MODEL_GRAPH, LEN) + _varint(len(graph_head) + len(tensor_head) + array.nbytes)
    handle.write(model_head + graph_head + tensor_head)
    handle.write(array.reshape(-1).view(np.uint8))


def _plain_array(tensor) -> np.ndarray | None:
    """A tensor's array when its bytes in memory are its raw_data (contiguous, little-endian, not packed)."""
    if type(tensor) is not ir.Tensor or tensor.doc_string or tensor.metadata_props or tensor.dtype in _PACKED:
        return None
    array = tensor.numpy()
    if not isinstance(array, np.ndarray) or array.dtype.newbyteorder("<") != array.dtype:
        return None
    return np.ascontiguousarray(array)  # (at least 1-d: the shape is the tensor's)

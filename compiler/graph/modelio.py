"""Reading user files with one-line errors, and writing outputs atomically."""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path

import google.protobuf.message
import numpy as np
import onnx
import onnx_ir as ir
from google.protobuf import json_format

from hetmap.errors import HetmapError
from hetmap.graph import wire


def load_onnx(path: Path) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """Load an ONNX file (external data included) or explain why it cannot be read.

    Returns the ModelProto and, by name, the graph initializers it leaves out (hetmap.graph.wire.read_apart).

    The checker runs by path before the load, so its own C++ copy of the
    model and the Python one never coexist; load errors take precedence.
    """
    if not path.exists():
        raise HetmapError(f"model file '{path}' does not exist")
    if path.is_dir():
        raise HetmapError(f"model path '{path}' is a folder, not an .onnx file")
    unreadable = (google.protobuf.message.DecodeError, json_format.ParseError, RuntimeError, ValueError, OSError)
    try:
        onnx.checker.check_model(str(path))  # by path: models over 2 GB and external data included
        checker_error = None
    except onnx.checker.ValidationError as error:
        checker_error = " ".join(str(error).split())  # the checker's message spans lines
    except json_format.ParseError:  # onnx reads a .json path as the model in JSON: the load below says why not
        checker_error = None
    try:
        model, arrays = _load_apart(path)
    except unreadable as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise HetmapError(f"model file '{path}' is not a readable ONNX model ({reason})") from None
    except onnx.checker.ValidationError as error:  # external data missing or outside the model's folder
        raise HetmapError(f"model file '{path}': {str(error).splitlines()[0]}") from None
    if not model.graph.node and not model.graph.output:
        raise HetmapError(f"model file '{path}' holds no ONNX graph")
    if checker_error is not None:
        raise HetmapError(f"model file '{path}' fails the ONNX checker: {checker_error}")
    return model, arrays


def _load_apart(path: Path) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """onnx.load, but the graph's raw initializers come apart as arrays (hetmap.graph.wire): one copy of them."""
    if onnx.serialization.registry.get_format_from_file_extension(path.suffix) not in (None, "protobuf"):
        return onnx.load(str(path)), {}  # a text format
    model, arrays = wire.read_apart(path)
    onnx.external_data_helper.load_external_data_for_model(model, str(path.parent))
    return model, arrays


def _holds_map(type_proto: onnx.TypeProto) -> bool:
    kind = type_proto.WhichOneof("value")
    if kind in ("sequence_type", "optional_type"):
        return _holds_map(getattr(type_proto, kind).elem_type)
    return kind == "map_type"


def read_model(path: Path) -> ir.Model:
    """Load an ONNX file into onnx-ir, which has no map types (skl2onnx's ZipMap output)."""
    proto, arrays = load_onnx(path)
    for info in [*proto.graph.input, *proto.graph.output, *proto.graph.value_info]:
        if _holds_map(info.type):
            raise HetmapError(
                f"model file '{path}': value '{info.name}' is a map (as skl2onnx's ZipMap writes); "
                "hetmap needs tensors: convert with options={'zipmap': False}"
            )
    try:
        model = ir.serde.deserialize_model(proto)
    except ir.serde.SerdeError as error:
        raise HetmapError(f"model file '{path}' cannot be read into hetmap's graph IR ({error})") from None
    for name, array in arrays.items():
        value = model.graph.initializers[name]
        value.const_value = ir.Tensor(array, dtype=value.const_value.dtype, name=name)
    _negative_dims_to_symbolic(model)
    return _detach_from_proto(model)


def _negative_dims_to_symbolic(model: ir.Model) -> None:
    """PaddlePaddle's exporter writes -1 for a dynamic dimension, where ONNX has a symbolic one."""
    for graph in model.graphs():
        for value in [*graph.inputs, *graph.outputs, *(v for node in graph for v in node.outputs)]:
            if value.shape is not None and any(isinstance(d, int) and d < 0 for d in value.shape):
                value.shape = ir.Shape([None if isinstance(d, int) and d < 0 else d for d in value.shape])


def _detach_from_proto(model: ir.Model) -> ir.Model:
    """Give every weight its own numpy buffer so the parsed ModelProto can be freed.

    Tensors read from a proto keep the whole message alive (one protobuf
    arena); once folding replaces weights, the original would stay resident.
    """
    for graph in model.graphs():
        for value in graph.initializers.values():
            tensor = value.const_value
            if isinstance(tensor, ir.serde.TensorProtoTensor):
                value.const_value = ir.Tensor(tensor.numpy(), dtype=tensor.dtype, name=tensor.name)
    return model


def proto_without(model: ir.Model, initializers: list[ir.Value]) -> onnx.ModelProto:
    """The model as a ModelProto leaving out `initializers`, whose bytes are then never copied."""
    graph = model.graph
    for value in initializers:
        graph.initializers.pop(value.name)
    try:
        return ir.to_proto(model)
    finally:
        for value in initializers:
            graph.register_initializer(value)


def _atomic_write(path: Path, write) -> None:
    tmp_path = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # mode 0o666 less the umask, as open() gives (mkstemp would leave 0o600)
        fd = os.open(tmp_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    except OSError as error:  # the file system's refusal (full, read-only, no such place): the user's to mend
        raise HetmapError(f"cannot write '{path}': {error.strerror or error}") from None
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def write_bytes_atomic(path: Path, data: bytes) -> None:
    _atomic_write(path, lambda handle: handle.write(data))


NAME_MAX = 255  # bytes in one path component (Linux, macOS)


def check_writable(path: Path, what: str, flag: str, folder: bool = False) -> None:
    """Refuse, before any work, a `path` (a file, or a `folder` to fill) that could not be written: a name too
    long, a file or an unwritable folder on the way to it. `what` names it, `flag` the option that gave it."""
    again = f"; choose another {flag}"
    if any(len(os.fsencode(part)) > NAME_MAX for part in path.parts):
        raise HetmapError(f"{what} '{path}': a name in it is longer than {NAME_MAX} bytes{again}")
    if path.is_dir() and not folder:
        raise HetmapError(f"{what} '{path}' is a folder{again}")
    start = path if folder else path.parent
    existing = next(p for p in [start, *start.parents] if p.exists() or p == p.parent)
    if not existing.is_dir():
        raise HetmapError(f"{what} '{path}': '{existing}' is a file, not a folder{again}")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise HetmapError(f"{what} '{path}': the folder '{existing}' is not writable{again}")


def write_json_atomic(path: Path, obj) -> None:
    text = json.dumps(obj, indent=2, sort_keys=False) + "\n"
    write_bytes_atomic(path, text.encode())


def save_model_atomic(model: ir.Model, path: Path) -> None:
    """Serialise `model` into `path` via a temporary file, one weight at a time.

    A file of concatenated ModelProto messages parses as their merge
    (repeated fields append), so each initializer is written as its own
    one-tensor message, its array's bytes written from where they lie
    (hetmap.graph.wire), and then the model without initializers: no
    weight is copied.
    """

    def write(handle) -> None:
        graph = model.graph
        values = list(graph.initializers.values())
        for value in values:
            wire.write_initializer(handle, value)
        for value in values:
            graph.initializers.pop(value.name)
        try:
            handle.write(ir.to_proto(model).SerializeToString())
        finally:
            for value in values:
                graph.register_initializer(value)

    _atomic_write(path, write)

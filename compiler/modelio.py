"""Reading user files with one-line errors, and writing outputs atomically."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import google.protobuf.message
import onnx
import onnx_ir as ir

from hetmap.errors import HetmapError


def load_onnx(path: Path) -> onnx.ModelProto:
    """Load an ONNX file (external data included) or explain why it cannot be read."""
    if not path.exists():
        raise HetmapError(f"model file '{path}' does not exist")
    if path.is_dir():
        raise HetmapError(f"model path '{path}' is a folder, not an .onnx file")
    try:
        model = onnx.load(str(path))
    except (google.protobuf.message.DecodeError, RuntimeError, ValueError, OSError) as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise HetmapError(f"model file '{path}' is not a readable ONNX model ({reason})") from None
    if not model.graph.node and not model.graph.output:
        raise HetmapError(f"model file '{path}' holds no ONNX graph")
    return model


def _atomic_write(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


def write_bytes_atomic(path: Path, data: bytes) -> None:
    _atomic_write(path, lambda handle: handle.write(data))


def write_json_atomic(path: Path, obj) -> None:
    text = json.dumps(obj, indent=2, sort_keys=False) + "\n"
    write_bytes_atomic(path, text.encode())


def save_model_atomic(model: ir.Model, path: Path) -> None:
    """Serialise `model` into `path` via a temporary file in the same folder."""
    _atomic_write(path, lambda handle: handle.write(ir.to_proto(model).SerializeToString()))

"""Concrete shapes: per-sample input shapes from data or flags, and every value's shape.

MACs and tile counts need concrete shapes. A symbolic leading dimension is
taken as the batch (1 per inference); any other symbolic dimension must come
from `--data` or `--input-shape`.
"""

from __future__ import annotations

import functools

import numpy as np
import onnx
import onnx_ir as ir
from onnx_ir.passes.common import _c_api_utils  # strips large initializers around onnx's C API

from hetmap.errors import HetmapError
from hetmap.graph.data import Dataset


def graph_inputs(model: ir.Model) -> list[ir.Value]:
    """The inputs a caller feeds (old IR versions also list initializers as inputs)."""
    return [value for value in model.graph.inputs if value.name not in model.graph.initializers]


def fixed_batch(model: ir.Model) -> int | None:
    """The batch size a model was exported with (a fixed leading input dimension), else None."""
    for value in graph_inputs(model):
        if value.shape is not None and len(value.shape) and isinstance(value.shape[0], int):
            return value.shape[0]
    return None


def parse_input_shape(text: str) -> tuple[str, tuple[int, ...]]:
    """Parse `NAME=1,3,32,32` from the command line."""
    name, sep, dims = text.partition("=")
    try:
        shape = tuple(int(d) for d in dims.split(","))
    except ValueError:
        shape = ()
    if not sep or not name or not shape or min(shape) <= 0:
        raise HetmapError(f"--input-shape '{text}' must look like NAME=1,3,32,32 (positive integers)")
    return name, shape


def resolve_input_shapes(
    model: ir.Model, dataset: Dataset | None, overrides: dict[str, tuple[int, ...]]
) -> dict[str, tuple[int, ...]]:
    """One concrete shape per graph input, batch dimension 1."""
    inputs = {value.name: value for value in graph_inputs(model)}
    unknown = sorted(set(overrides) - set(inputs))
    if unknown:
        raise HetmapError(f"--input-shape names '{unknown[0]}', which is not a model input ({', '.join(inputs)})")
    shapes = {}
    for name, value in inputs.items():
        declared = list(value.shape) if value.shape is not None else None
        if name in overrides:
            candidate = overrides[name]
        elif dataset is not None:
            array = dataset.inputs[name]
            candidate = (1, *array.shape[1:]) if array.ndim else ()
        elif declared is None:
            raise HetmapError(f"model input '{name}' has no declared shape: add --data or --input-shape {name}=...")
        else:
            candidate = tuple(1 if (i == 0 and not isinstance(d, int)) else d for i, d in enumerate(declared))
            symbolic = [str(d) for d in candidate if not isinstance(d, int)]
            if symbolic:
                example = ",".join("N" if not isinstance(d, int) else str(d) for d in candidate)
                raise HetmapError(
                    f"model input '{name}' has symbolic dimension '{symbolic[0]}': "
                    f"add --data FILE.npz or --input-shape {name}={example}"
                )
        if declared is not None:
            _check_against_declared(name, tuple(candidate), declared, dataset)
        shapes[name] = tuple(int(d) for d in candidate)
    return shapes


def _check_against_declared(name, shape, declared, dataset) -> None:
    source = f"data file '{dataset.source}'" if dataset is not None else "--input-shape"
    if len(shape) != len(declared):
        raise HetmapError(
            f"{source}: input '{name}' has rank {len(shape)} but the model expects rank {len(declared)} "
            f"({_format(declared)})"
        )
    for i, (given, expected) in enumerate(zip(shape, declared)):
        if isinstance(expected, int) and given != expected and i != 0:
            raise HetmapError(
                f"{source}: input '{name}' has shape {_format(shape[1:], batch=True)} per sample "
                f"but the model expects {_format(declared[1:], batch=True)}"
            )


def _format(dims, batch: bool = False) -> str:
    text = "x".join(str(d) for d in dims)
    return f"N x {text}" if batch else text


def infer_value_shapes(model: ir.Model, input_shapes: dict[str, tuple[int, ...]]) -> dict[str, tuple]:
    """Shapes of every value (subgraphs included) for the given concrete input shapes.

    Runs onnx shape inference on a copy without the large initializer payloads,
    so memory stays near the model's own size.
    """
    originals = {value.name: value.shape for value in graph_inputs(model)}
    try:
        for value in graph_inputs(model):
            value.shape = ir.Shape(input_shapes[value.name])
        infer = functools.partial(onnx.shape_inference.infer_shapes, data_prop=True)
        inferred = _c_api_utils.call_onnx_api(infer, model)
    except onnx.shape_inference.InferenceError as error:
        raise HetmapError(f"shape inference failed: {str(error).splitlines()[0]}") from None
    finally:
        for value in graph_inputs(model):
            value.shape = originals[value.name]
    shapes: dict[str, tuple] = {}
    for graph in _all_graphs(inferred.graph):
        for info in [*graph.input, *graph.value_info, *graph.output]:
            if info.type.HasField("tensor_type") and info.type.tensor_type.HasField("shape"):
                shapes[info.name] = tuple(
                    d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
                    for d in info.type.tensor_type.shape.dim
                )
    for name, value in model.graph.initializers.items():
        shapes[name] = tuple(value.const_value.shape) if value.const_value is not None else shapes.get(name)
    return shapes


def _all_graphs(graph: onnx.GraphProto):
    yield graph
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.type == onnx.AttributeProto.GRAPH:
                yield from _all_graphs(attribute.g)
            for sub in attribute.graphs:
                yield from _all_graphs(sub)


def random_feeds(model: ir.Model, input_shapes, rng: np.random.Generator, batch: int) -> dict[str, np.ndarray]:
    """Inputs for a parity check when the user gave no data: normal floats; integers below the rows of the table
    they index (token ids into an embedding: all-zero ids made every sample the same), else zero."""
    rows = _indexed_rows(model)
    feeds = {}
    for value in graph_inputs(model):
        shape = input_shapes[value.name]
        fixed_leading = value.shape is not None and len(value.shape) > 0 and isinstance(value.shape[0], int)
        if shape and not fixed_leading:  # a declared leading dimension stays as declared
            shape = (batch, *shape[1:])
        dtype = value.dtype.numpy() if value.dtype is not None else np.dtype(np.float32)
        if np.issubdtype(dtype, np.floating):
            feeds[value.name] = rng.standard_normal(shape).astype(dtype)
        elif value.name in rows:
            feeds[value.name] = rng.integers(0, rows[value.name], shape).astype(dtype)
        else:
            feeds[value.name] = np.zeros(shape, dtype=dtype)
    return feeds


def _indexed_rows(model: ir.Model) -> dict[str, int]:
    """Integer graph inputs that are the indices of a Gather from a constant table (axis 0): its row count."""
    inputs = {value.name for value in graph_inputs(model)}
    rows: dict[str, int] = {}
    for node in model.graph:
        if node.op_type != "Gather" or node.domain not in ("", "ai.onnx") or node.attributes.get_int("axis", 0) != 0:
            continue
        table, indices = node.inputs[0], node.inputs[1]
        if indices is not None and indices.name in inputs and table is not None and table.const_value is not None:
            count = int(table.const_value.shape[0])
            rows[indices.name] = min(rows.get(indices.name, count), count)
    return rows

"""Shape, indexing and constant ONNX ops in torch, for hetmap.train.ops' registry.

Shapes, axes and indices arrive as int64 tensors (opset 21) and are read
as Python values; negative indices wrap as onnxruntime wraps them.
"""

from __future__ import annotations

import math

import onnx_ir as ir
import torch

from hetmap.train.ops import from_ir, int_values, normalized_axis, op, optional_inputs

# Shapes and indexing -----------------------------------------------------------------------------


@op("Shape")
def _shape(node, inputs):
    x = inputs[0]
    dims = x.shape[node.attributes.get_int("start", 0) : node.attributes.get_int("end", None)]
    return torch.tensor(dims, dtype=torch.int64, device=x.device)


@op("Size")
def _size(node, inputs):
    return torch.tensor(inputs[0].numel(), dtype=torch.int64, device=inputs[0].device)


@op("Reshape")
def _reshape(node, inputs):
    x, shape = inputs
    shape = int_values(shape)
    if not node.attributes.get_int("allowzero", 0):
        shape = [x.shape[i] if size == 0 else size for i, size in enumerate(shape)]
    return x.reshape(shape)


@op("Flatten")
def _flatten(node, inputs):
    x = inputs[0]
    axis = node.attributes.get_int("axis", 1)
    axis += x.dim() if axis < 0 else 0
    return x.reshape(math.prod(x.shape[:axis]), math.prod(x.shape[axis:]))


@op("Transpose")
def _transpose(node, inputs):
    x = inputs[0]
    return x.permute(node.attributes.get_ints("perm", list(reversed(range(x.dim())))))


@op("Squeeze")
def _squeeze(node, inputs):
    x, axes = optional_inputs(inputs, 2)
    return x.squeeze() if axes is None else x.squeeze(tuple(a % x.dim() for a in int_values(axes)))


@op("Unsqueeze")
def _unsqueeze(node, inputs):
    x, axes = inputs
    axes = int_values(axes)
    for axis in sorted(a % (x.dim() + len(axes)) for a in axes):
        x = x.unsqueeze(axis)
    return x


@op("Concat")
def _concat(node, inputs):
    return torch.cat(inputs, node.attributes.get_int("axis"))


@op("Split")
def _split(node, inputs):
    x, split = optional_inputs(inputs, 2)
    axis = normalized_axis(node, x.dim())
    if split is not None:
        return torch.split(x, int_values(split), axis)
    count = node.attributes.get_int("num_outputs", len(node.outputs))
    chunk = -(-x.shape[axis] // count)
    return torch.split(x, [max(0, min(chunk, x.shape[axis] - i * chunk)) for i in range(count)], axis)


@op("Slice")
def _slice(node, inputs):
    x, starts, ends, axes, steps = optional_inputs(inputs, 5)
    starts, ends = int_values(starts), int_values(ends)
    axes = int_values(axes) if axes is not None else range(len(starts))
    steps = int_values(steps) if steps is not None else [1] * len(starts)
    for start, end, axis, step in zip(starts, ends, axes, steps):
        axis %= x.dim()
        # Python's slice clamps starts and ends exactly as ONNX does, negative steps included
        first, stop, step = slice(start, end, step).indices(x.shape[axis])
        if step > 0:
            x = x[(slice(None),) * axis + (slice(first, stop, step),)]
        else:
            x = x.index_select(axis, torch.arange(first, stop, step, device=x.device))
    return x


def _wrapped(indices: torch.Tensor, size: int) -> torch.Tensor:
    return torch.where(indices < 0, indices + size, indices)


@op("Gather")
def _gather(node, inputs):
    x, indices = inputs
    axis = normalized_axis(node, x.dim())
    picked = x.index_select(axis, _wrapped(indices, x.shape[axis]).reshape(-1))
    return picked.reshape((*x.shape[:axis], *indices.shape, *x.shape[axis + 1 :]))


@op("GatherElements")
def _gather_elements(node, inputs):
    x, indices = inputs
    axis = normalized_axis(node, x.dim())
    return torch.gather(x, axis, _wrapped(indices, x.shape[axis]))


@op("ArrayFeatureExtractor", domain="ai.onnx.ml")
def _array_feature_extractor(node, inputs):
    x, indices = inputs
    picked = x.index_select(x.dim() - 1, indices.reshape(-1))
    return picked.reshape(1, -1) if x.dim() == 1 else picked


@op("Expand")
def _expand(node, inputs):
    x, shape = inputs
    return x.expand(torch.broadcast_shapes(x.shape, tuple(int_values(shape))))


@op("Tile")
def _tile(node, inputs):
    x, repeats = inputs
    return x.repeat(int_values(repeats))


@op("Trilu")
def _trilu(node, inputs):
    x, k = optional_inputs(inputs, 2)
    diagonal = int_values(k)[0] if k is not None else 0
    return (torch.triu if node.attributes.get_int("upper", 1) else torch.tril)(x, diagonal)


# Constants ---------------------------------------------------------------------------------------


_CONSTANT_ATTRIBUTES = {
    "value_float": torch.float32,
    "value_floats": torch.float32,
    "value_int": torch.int64,
    "value_ints": torch.int64,
}


def _constant_limit(node: ir.Node) -> str | None:
    kind = next(iter(node.attributes))
    return None if kind in ("value", *_CONSTANT_ATTRIBUTES) else kind


@op("Constant", limit=_constant_limit)
def _constant(node, inputs):
    name, attribute = next(iter(node.attributes.items()))
    if name == "value":
        return from_ir(attribute.as_tensor())
    return torch.tensor(attribute.value, dtype=_CONSTANT_ATTRIBUTES[name])


@op("ConstantOfShape")
def _constant_of_shape(node, inputs):
    value = node.attributes.get_tensor("value", None)
    fill = from_ir(value).reshape(()) if value is not None else torch.tensor(0.0, dtype=torch.float32)
    return fill.to(inputs[0].device).expand(int_values(inputs[0])).clone()


@op("Range")
def _range(node, inputs):
    start, limit, delta = inputs
    count = max(math.ceil((limit.item() - start.item()) / delta.item()), 0)
    return start + torch.arange(count, dtype=start.dtype, device=start.device) * delta


@op("Dropout")
def _dropout(node, inputs):
    return inputs[0], torch.ones_like(inputs[0], dtype=torch.bool)  # inference: identity and a full mask

"""ONNX ops as torch functions: the registry the graph interpreter (hetmap.torch_graph) runs.

Opset 21 semantics only, as Canonicalize leaves models: axes, shapes,
pads and split sizes arrive as int64 inputs and are read as Python values.
Each function takes the node and its input tensors (None for a missing
optional input) and returns one tensor or a sequence of them.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import onnx_ir as ir
import torch
import torch.nn.functional as F

OpFunction = Callable[[ir.Node, list], "torch.Tensor | tuple[torch.Tensor, ...] | list[torch.Tensor]"]

REGISTRY: dict[tuple[str, str], OpFunction] = {}
# (domain, op_type) -> reason a node's form is not supported (None when it is)
LIMITS: dict[tuple[str, str], Callable[[ir.Node], str | None]] = {}

TORCH_DTYPES = {
    ir.DataType.FLOAT: torch.float32, ir.DataType.DOUBLE: torch.float64, ir.DataType.FLOAT16: torch.float16,
    ir.DataType.BFLOAT16: torch.bfloat16, ir.DataType.INT8: torch.int8, ir.DataType.INT16: torch.int16,
    ir.DataType.INT32: torch.int32, ir.DataType.INT64: torch.int64, ir.DataType.UINT8: torch.uint8,
    ir.DataType.BOOL: torch.bool, ir.DataType.COMPLEX64: torch.complex64, ir.DataType.COMPLEX128: torch.complex128,
}  # fmt: skip


def op_key(node: ir.Node) -> tuple[str, str]:
    return ("" if node.domain == "ai.onnx" else node.domain, node.op_type)


def op(*op_types: str, domain: str = "", limit: Callable[[ir.Node], str | None] | None = None):
    """Register the decorated function for `op_types`; `limit` names forms it cannot run."""

    def register(function: OpFunction) -> OpFunction:
        for op_type in op_types:
            REGISTRY[domain, op_type] = function
            if limit is not None:
                LIMITS[domain, op_type] = limit
        return function

    return register


def int_values(tensor: torch.Tensor) -> list[int]:
    return [int(v) for v in tensor.reshape(-1).tolist()]


def optional_inputs(inputs: list, count: int) -> list:
    """The inputs with absent optional ones as None, `count` in all."""
    return [*inputs, *[None] * (count - len(inputs))]


def _axis(node: ir.Node, rank: int, default: int = 0) -> int:
    return node.attributes.get_int("axis", default) % max(rank, 1)


def from_ir(tensor: ir.TensorProtocol) -> torch.Tensor:
    """A torch copy of an ONNX tensor (initializer or attribute)."""
    return torch.tensor(tensor.numpy())


# Element-wise ------------------------------------------------------------------------------------

_UNARY = {
    "Abs": torch.abs, "Neg": torch.neg, "Sqrt": torch.sqrt, "Exp": torch.exp, "Log": torch.log,
    "Reciprocal": torch.reciprocal, "Relu": torch.relu, "Sigmoid": torch.sigmoid, "Tanh": torch.tanh,
    "Erf": torch.erf, "Floor": torch.floor, "Ceil": torch.ceil, "Round": torch.round, "Sign": torch.sign,
    "Sin": torch.sin, "Cos": torch.cos, "Tan": torch.tan, "Asin": torch.asin, "Acos": torch.acos,
    "Atan": torch.atan, "Sinh": torch.sinh, "Cosh": torch.cosh, "Asinh": torch.asinh, "Acosh": torch.acosh,
    "Atanh": torch.atanh, "Softplus": F.softplus, "Softsign": F.softsign, "HardSwish": F.hardswish,
    "Mish": F.mish, "Not": torch.logical_not, "BitwiseNot": torch.bitwise_not, "IsNaN": torch.isnan,
    "Identity": lambda x: x,
}  # fmt: skip

_UNARY_WITH_ATTRIBUTES = {
    "LeakyRelu": lambda x, a: F.leaky_relu(x, a.get_float("alpha", 0.01)),
    "Elu": lambda x, a: F.elu(x, a.get_float("alpha", 1.0)),
    "Celu": lambda x, a: F.celu(x, a.get_float("alpha", 1.0)),
    "Selu": lambda x, a: a.get_float("gamma", 1.05070102214813232421875)
    * F.elu(x, a.get_float("alpha", 1.67326319217681884765625)),
    "ThresholdedRelu": lambda x, a: torch.where(x > a.get_float("alpha", 1.0), x, 0.0),
    "HardSigmoid": lambda x, a: torch.clamp(a.get_float("alpha", 0.2) * x + a.get_float("beta", 0.5), 0, 1),
    "Gelu": lambda x, a: F.gelu(x, approximate=a.get_string("approximate", "none")),
    "Shrink": lambda x, a: torch.where(
        x < -a.get_float("lambd", 0.5), x + a.get_float("bias", 0.0),
        torch.where(x > a.get_float("lambd", 0.5), x - a.get_float("bias", 0.0), 0.0)),
    "IsInf": lambda x, a: (torch.isposinf(x) & bool(a.get_int("detect_positive", 1)))
    | (torch.isneginf(x) & bool(a.get_int("detect_negative", 1))),
}  # fmt: skip


def _divide(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return a / b if a.is_floating_point() else torch.div(a, b, rounding_mode="trunc")


_BINARY = {
    "Add": torch.add, "Sub": torch.sub, "Mul": torch.mul, "Div": _divide,
    "Pow": lambda a, b: torch.pow(a, b).to(a.dtype),  # ONNX keeps the base's type
    "Equal": torch.eq, "Less": torch.lt, "Greater": torch.gt, "LessOrEqual": torch.le, "GreaterOrEqual": torch.ge,
    "And": torch.logical_and, "Or": torch.logical_or, "Xor": torch.logical_xor,
    "BitwiseAnd": torch.bitwise_and, "BitwiseOr": torch.bitwise_or, "BitwiseXor": torch.bitwise_xor,
}  # fmt: skip

_VARIADIC = {"Max": torch.maximum, "Min": torch.minimum, "Sum": torch.add, "Mean": torch.add}


@op(*_UNARY)
def _unary(node, inputs):
    return _UNARY[node.op_type](inputs[0])


@op(*_UNARY_WITH_ATTRIBUTES)
def _unary_with_attributes(node, inputs):
    return _UNARY_WITH_ATTRIBUTES[node.op_type](inputs[0], node.attributes)


@op(*_BINARY)
def _binary(node, inputs):
    return _BINARY[node.op_type](inputs[0], inputs[1])


@op(*_VARIADIC)
def _variadic(node, inputs):
    result = functools.reduce(_VARIADIC[node.op_type], inputs)
    return result / len(inputs) if node.op_type == "Mean" else result


@op("Mod")
def _mod(node, inputs):
    return (torch.fmod if node.attributes.get_int("fmod", 0) else torch.remainder)(inputs[0], inputs[1])


@op("PRelu")
def _prelu(node, inputs):
    x, slope = inputs
    return torch.where(x < 0, x * slope, x)


@op("Clip")
def _clip(node, inputs):
    x, low, high = optional_inputs(inputs, 3)
    return x if low is None and high is None else torch.clamp(x, low, high)


@op("Where")
def _where(node, inputs):
    return torch.where(*inputs)


def _cast_limit(node: ir.Node) -> str | None:
    target = ir.DataType(node.attributes.get_int("to"))
    return None if target in TORCH_DTYPES else f"to {target.name}"


@op("Cast", limit=_cast_limit)
def _cast(node, inputs):
    return inputs[0].to(TORCH_DTYPES[ir.DataType(node.attributes.get_int("to"))])


@op("CastLike")
def _cast_like(node, inputs):
    return inputs[0].to(inputs[1].dtype)


# Linear algebra ----------------------------------------------------------------------------------


@op("MatMul")
def _matmul(node, inputs):
    return torch.matmul(inputs[0], inputs[1])


@op("Gemm")
def _gemm(node, inputs):
    a, b, c = optional_inputs(inputs, 3)
    attributes = node.attributes
    a = a.T if attributes.get_int("transA", 0) else a
    b = b.T if attributes.get_int("transB", 0) else b
    alpha, beta = attributes.get_float("alpha", 1.0), attributes.get_float("beta", 1.0)
    y = a @ b if alpha == 1.0 else alpha * (a @ b)
    return y if c is None else y + (c if beta == 1.0 else beta * c)


@op("Einsum")
def _einsum(node, inputs):
    return torch.einsum(node.attributes.get_string("equation"), *inputs)


# Normalization -----------------------------------------------------------------------------------


@op("BatchNormalization", limit=lambda node: "training_mode" if node.attributes.get_int("training_mode", 0) else None)
def _batch_norm(node, inputs):
    x, scale, bias, mean, variance = inputs
    return F.batch_norm(x, mean, variance, scale, bias, training=False, eps=node.attributes.get_float("epsilon", 1e-5))


@op("LayerNormalization")
def _layer_norm(node, inputs):
    x, scale, bias = optional_inputs(inputs, 3)
    dims = tuple(range(_axis(node, x.dim(), -1), x.dim()))
    mean = x.mean(dims, keepdim=True)
    variance = (x - mean).square().mean(dims, keepdim=True)
    inverse_deviation = torch.rsqrt(variance + node.attributes.get_float("epsilon", 1e-5))
    y = (x - mean) * inverse_deviation * scale
    return [y if bias is None else y + bias, mean, inverse_deviation]


@op("InstanceNormalization")
def _instance_norm(node, inputs):
    x, scale, bias = inputs
    return F.instance_norm(x, weight=scale, bias=bias, eps=node.attributes.get_float("epsilon", 1e-5))


@op("GroupNormalization")
def _group_norm(node, inputs):
    x, scale, bias = inputs
    groups = node.attributes.get_int("num_groups")
    return F.group_norm(x, groups, scale, bias, eps=node.attributes.get_float("epsilon", 1e-5))


@op("Softmax", "LogSoftmax")
def _softmax(node, inputs):
    x = inputs[0]
    function = torch.softmax if node.op_type == "Softmax" else torch.log_softmax
    return function(x, _axis(node, x.dim(), -1))


# Reductions --------------------------------------------------------------------------------------


def _product(x: torch.Tensor, dims: tuple[int, ...], keepdim: bool) -> torch.Tensor:
    for dim in sorted(dims, reverse=True):
        x = x.prod(dim, keepdim=keepdim)
    return x


_REDUCTIONS = {
    "ReduceSum": torch.sum, "ReduceMean": torch.mean, "ReduceMax": torch.amax, "ReduceMin": torch.amin,
    "ReduceProd": _product,
    "ReduceL1": lambda x, dims, keepdim: x.abs().sum(dims, keepdim=keepdim),
    "ReduceL2": lambda x, dims, keepdim: torch.linalg.vector_norm(x, 2, dims, keepdim),
    "ReduceSumSquare": lambda x, dims, keepdim: x.square().sum(dims, keepdim=keepdim),
    "ReduceLogSum": lambda x, dims, keepdim: x.sum(dims, keepdim=keepdim).log(),
    "ReduceLogSumExp": torch.logsumexp,
}  # fmt: skip


@op(*_REDUCTIONS)
def _reduce(node, inputs):
    x, axes = optional_inputs(inputs, 2)
    axes = int_values(axes) if axes is not None else []
    if not axes and node.attributes.get_int("noop_with_empty_axes", 0):
        return x
    dims = tuple(a % x.dim() for a in axes) if axes else tuple(range(x.dim()))
    # torch sums integers as int64; ONNX keeps the input's type
    return _REDUCTIONS[node.op_type](x, dims, bool(node.attributes.get_int("keepdims", 1))).to(x.dtype)


@op("ArgMax", "ArgMin")
def _arg_extreme(node, inputs):
    x = inputs[0]
    axis = _axis(node, x.dim())
    keepdim = bool(node.attributes.get_int("keepdims", 1))
    function = torch.argmax if node.op_type == "ArgMax" else torch.argmin
    if node.attributes.get_int("select_last_index", 0):
        return x.shape[axis] - 1 - function(x.flip(axis), axis, keepdim)
    return function(x, axis, keepdim)


@op("TopK")
def _top_k(node, inputs):
    x, k = inputs
    largest, ordered = bool(node.attributes.get_int("largest", 1)), bool(node.attributes.get_int("sorted", 1))
    return torch.topk(x, int_values(k)[0], _axis(node, x.dim(), -1), largest, ordered)


@op("CumSum")
def _cumulative_sum(node, inputs):
    x, axis = inputs
    axis = int_values(axis)[0] % x.dim()
    reverse = node.attributes.get_int("reverse", 0)
    x = x.flip(axis) if reverse else x
    y = torch.cumsum(x, axis, dtype=x.dtype)
    if node.attributes.get_int("exclusive", 0):
        y = torch.cat([torch.zeros_like(y.narrow(axis, 0, 1)), y.narrow(axis, 0, y.shape[axis] - 1)], axis)
    return y.flip(axis) if reverse else y


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
    axis = _axis(node, x.dim())
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
    axis = _axis(node, x.dim())
    picked = x.index_select(axis, _wrapped(indices, x.shape[axis]).reshape(-1))
    return picked.reshape((*x.shape[:axis], *indices.shape, *x.shape[axis + 1 :]))


@op("GatherElements")
def _gather_elements(node, inputs):
    x, indices = inputs
    axis = _axis(node, x.dim())
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


_CONSTANT_ATTRIBUTES = {"value_float": torch.float32, "value_floats": torch.float32, "value_int": torch.int64,
                        "value_ints": torch.int64}  # fmt: skip


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

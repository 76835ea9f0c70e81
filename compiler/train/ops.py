"""ONNX ops as torch functions: the registry the graph interpreter (hetmap.train.interpreter) runs.

Opset 21 semantics only, as Canonicalize leaves models: axes, shapes,
pads and split sizes arrive as int64 inputs and are read as Python values.
Each function takes the node and its input tensors (None for a missing
optional input) and returns one tensor or a sequence of them.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import onnx_ir as ir
import torch
import torch.nn.functional as F

OpFunction = Callable[[ir.Node, list], "torch.Tensor | tuple[torch.Tensor, ...] | list[torch.Tensor]"]

REGISTRY: dict[tuple[str, str], OpFunction] = {}
# (domain, op_type) -> reason a node's form is not supported (None when it is)
LIMITS: dict[tuple[str, str], Callable[[ir.Node], str | None]] = {}

TORCH_DTYPES = {
    ir.DataType.FLOAT: torch.float32,
    ir.DataType.DOUBLE: torch.float64,
    ir.DataType.FLOAT16: torch.float16,
    ir.DataType.BFLOAT16: torch.bfloat16,
    ir.DataType.INT8: torch.int8,
    ir.DataType.INT16: torch.int16,
    ir.DataType.INT32: torch.int32,
    ir.DataType.INT64: torch.int64,
    ir.DataType.UINT8: torch.uint8,
    ir.DataType.BOOL: torch.bool,
    ir.DataType.COMPLEX64: torch.complex64,
    ir.DataType.COMPLEX128: torch.complex128,
}


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


def normalized_axis(node: ir.Node, rank: int, default: int = 0) -> int:
    return node.attributes.get_int("axis", default) % max(rank, 1)


def from_ir(tensor: ir.TensorProtocol) -> torch.Tensor:
    """A torch copy of an ONNX tensor (initializer or attribute)."""
    return torch.tensor(tensor.numpy())


# Element-wise ------------------------------------------------------------------------------------

_UNARY = {
    "Abs": torch.abs,
    "Neg": torch.neg,
    "Sqrt": torch.sqrt,
    "Exp": torch.exp,
    "Log": torch.log,
    "Reciprocal": torch.reciprocal,
    "Relu": torch.relu,
    "Sigmoid": torch.sigmoid,
    "Tanh": torch.tanh,
    "Erf": torch.erf,
    "Floor": torch.floor,
    "Ceil": torch.ceil,
    "Round": torch.round,
    "Sign": torch.sign,
    "Sin": torch.sin,
    "Cos": torch.cos,
    "Tan": torch.tan,
    "Asin": torch.asin,
    "Acos": torch.acos,
    "Atan": torch.atan,
    "Sinh": torch.sinh,
    "Cosh": torch.cosh,
    "Asinh": torch.asinh,
    "Acosh": torch.acosh,
    "Atanh": torch.atanh,
    "Softplus": F.softplus,
    "Softsign": F.softsign,
    "HardSwish": F.hardswish,
    "Mish": F.mish,
    "Not": torch.logical_not,
    "BitwiseNot": torch.bitwise_not,
    "IsNaN": torch.isnan,
    "Identity": lambda x: x,
}

_UNARY_WITH_ATTRIBUTES = {
    "LeakyRelu": lambda x, a: F.leaky_relu(x, a.get_float("alpha", 0.01)),
    "Elu": lambda x, a: F.elu(x, a.get_float("alpha", 1.0)),
    "Celu": lambda x, a: F.celu(x, a.get_float("alpha", 1.0)),
    "Selu": lambda x, a: (
        a.get_float("gamma", 1.05070102214813232421875) * F.elu(x, a.get_float("alpha", 1.67326319217681884765625))
    ),
    "ThresholdedRelu": lambda x, a: torch.where(x > a.get_float("alpha", 1.0), x, 0.0),
    "HardSigmoid": lambda x, a: torch.clamp(a.get_float("alpha", 0.2) * x + a.get_float("beta", 0.5), 0, 1),
    "Gelu": lambda x, a: F.gelu(x, approximate=a.get_string("approximate", "none")),
    "Shrink": lambda x, a: torch.where(
        x < -a.get_float("lambd", 0.5),
        x + a.get_float("bias", 0.0),
        torch.where(x > a.get_float("lambd", 0.5), x - a.get_float("bias", 0.0), 0.0),
    ),
    "IsInf": lambda x, a: (
        (torch.isposinf(x) & bool(a.get_int("detect_positive", 1)))
        | (torch.isneginf(x) & bool(a.get_int("detect_negative", 1)))
    ),
}


def _divide(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return a / b if a.is_floating_point() else torch.div(a, b, rounding_mode="trunc")


_BINARY = {
    "Add": torch.add,
    "Sub": torch.sub,
    "Mul": torch.mul,
    "Div": _divide,
    "Pow": lambda a, b: torch.pow(a, b).to(a.dtype),  # ONNX keeps the base's type
    "Equal": torch.eq,
    "Less": torch.lt,
    "Greater": torch.gt,
    "LessOrEqual": torch.le,
    "GreaterOrEqual": torch.ge,
    "And": torch.logical_and,
    "Or": torch.logical_or,
    "Xor": torch.logical_xor,
    "BitwiseAnd": torch.bitwise_and,
    "BitwiseOr": torch.bitwise_or,
    "BitwiseXor": torch.bitwise_xor,
}

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
    dims = tuple(range(normalized_axis(node, x.dim(), -1), x.dim()))
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
    return function(x, normalized_axis(node, x.dim(), -1))


# Reductions --------------------------------------------------------------------------------------


def _product(x: torch.Tensor, dims: tuple[int, ...], keepdim: bool) -> torch.Tensor:
    for dim in sorted(dims, reverse=True):
        x = x.prod(dim, keepdim=keepdim)
    return x


_REDUCTIONS = {
    "ReduceSum": torch.sum,
    "ReduceMean": torch.mean,
    "ReduceMax": torch.amax,
    "ReduceMin": torch.amin,
    "ReduceProd": _product,
    "ReduceL1": lambda x, dims, keepdim: x.abs().sum(dims, keepdim=keepdim),
    "ReduceL2": lambda x, dims, keepdim: torch.linalg.vector_norm(x, 2, dims, keepdim),
    "ReduceSumSquare": lambda x, dims, keepdim: x.square().sum(dims, keepdim=keepdim),
    "ReduceLogSum": lambda x, dims, keepdim: x.sum(dims, keepdim=keepdim).log(),
    "ReduceLogSumExp": torch.logsumexp,
}


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
    axis = normalized_axis(node, x.dim())
    keepdim = bool(node.attributes.get_int("keepdims", 1))
    function = torch.argmax if node.op_type == "ArgMax" else torch.argmin
    if node.attributes.get_int("select_last_index", 0):
        return x.shape[axis] - 1 - function(x.flip(axis), axis, keepdim)
    return function(x, axis, keepdim)


@op("TopK")
def _top_k(node, inputs):
    x, k = inputs
    largest, ordered = bool(node.attributes.get_int("largest", 1)), bool(node.attributes.get_int("sorted", 1))
    return torch.topk(x, int_values(k)[0], normalized_axis(node, x.dim(), -1), largest, ordered)


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

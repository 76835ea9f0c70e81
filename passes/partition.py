"""Partition: which layers can run on analog tiles, how big they are, what they cost.

A mappable layer multiplies activations by a constant weight matrix: Conv,
ConvTranspose, Gemm, or MatMul with one constant operand. Its crossbar
matrix has rows = inputs (Cin/groups * kernel size) and cols = outputs
(Cout); a matrix larger than a tile is split into row and column blocks,
one tile each. A convolution's row blocks hold whole input channels (all
kernel taps of a channel on one tile), so each block is itself a smaller
convolution over a subset of channels. MACs are per inference (batch 1),
from inferred shapes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import onnx_ir as ir

from hetmap.errors import HetmapError
from hetmap.graph.parity import run_shapes
from hetmap.graph.shapes import graph_inputs, infer_value_shapes
from hetmap.pipeline import Pass, PassContext, parity_feeds

MAPPABLE_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
# Ops that carry MACs but have no analog lowering here; listed so users see them.
DIGITAL_ONLY_OPS = (
    "ConvInteger",
    "MatMulInteger",
    "QLinearConv",
    "QLinearMatMul",
    "Einsum",
    "LSTM",
    "GRU",
    "RNN",
    "Attention",
)


@dataclass
class MappableLayer:
    """One layer's weight matrix as the crossbar sees it."""

    name: str
    op_type: str
    weight: str  # initializer name
    weight_operand: int  # input index of the constant operand
    weight_transposed: bool  # True when the initializer holds the matrix as (cols, rows)
    activation_rank: int  # rank of the activation operand
    rows: int
    cols: int
    groups: int
    weight_count: int
    macs: int
    block_rows: int  # rows of one full row block (whole channels for convolutions)
    row_blocks: int
    col_blocks: int
    tiles: int
    input_elements: int  # of the activation it multiplies, one inference (batch 1): activation traffic
    output_elements: int


@dataclass
class UnmappableLayer:
    name: str
    op_type: str
    reason: str


@dataclass
class PartitionReport:
    target: str
    tile_rows: int
    tile_cols: int
    tile_count: int
    layers: list[MappableLayer]
    unmappable: list[UnmappableLayer] = field(default_factory=list)
    mappable_weights: int = 0
    mappable_macs: int = 0
    tiles_needed: int = 0
    fits_on_chip: bool = True


class _NotMappable(Exception):
    pass


class _UnknownShape(_NotMappable):
    """Shape inference did not reach a layer's output; why depends on the inputs (partition's reason says)."""

    def __init__(self, value_name: str):
        super().__init__(value_name)
        self.value_name = value_name


def _constant(value: ir.Value | None) -> np.ndarray | None:
    if value is None or value.const_value is None:
        return None
    return value.const_value


def _matrix_for_conv(node: ir.Node, shapes) -> tuple[int, int, int, int, int, bool]:
    weight = _constant(node.inputs[1])
    if weight is None:
        raise _NotMappable("weight is computed at run time (not a constant)")
    groups = node.attributes.get_int("group", 1)
    kernel = math.prod(weight.shape[2:])
    if node.op_type == "Conv":
        cout, cin_per_group = weight.shape[0], weight.shape[1]
        rows, cols = cin_per_group * kernel, cout
        macs_source, macs_per_element = node.outputs[0].name, rows
    else:  # ConvTranspose: weight (Cin, Cout/groups, k...)
        cin, cout_per_group = weight.shape[0], weight.shape[1]
        rows, cols = cin // groups * kernel, cout_per_group * groups
        macs_source, macs_per_element = node.inputs[0].name, cout_per_group * kernel
    return rows, cols, groups, 1, _macs(shapes, macs_source, macs_per_element), False


def _matrix_for_gemm(node: ir.Node, shapes) -> tuple[int, int, int, int, int, bool]:
    a, b = _constant(node.inputs[0]), _constant(node.inputs[1])
    trans_a = bool(node.attributes.get_int("transA", 0))
    trans_b = bool(node.attributes.get_int("transB", 0))
    if b is not None:  # Y = A B: rows K, cols N
        k, n = (b.shape[1], b.shape[0]) if trans_b else b.shape
        rows, cols, operand, transposed = k, n, 1, trans_b
    elif a is not None:  # Y = A B with A constant: Y^T = B^T A^T, rows K, cols M
        m, k = (a.shape[1], a.shape[0]) if trans_a else a.shape
        rows, cols, operand, transposed = k, m, 0, not trans_a
    else:
        raise _NotMappable("both operands are activations (no constant weight)")
    return rows, cols, 1, operand, _macs(shapes, node.outputs[0].name, rows), transposed


def _matrix_for_matmul(node: ir.Node, shapes) -> tuple[int, int, int, int, int, bool]:
    a, b = _constant(node.inputs[0]), _constant(node.inputs[1])
    if b is not None:
        operand, weight = 1, b
    elif a is not None:
        operand, weight = 0, a
    else:
        raise _NotMappable("both operands are activations (no constant weight)")
    rank = len(weight.shape)  # an ir.Tensor: no .ndim
    if rank > 2:
        raise _NotMappable(f"constant operand has rank {rank} (a batch of matrices)")
    if operand == 1:
        rows, cols = (weight.shape[0], 1) if rank == 1 else weight.shape
        transposed = False
    else:  # X = W A: each column of A meets W's rows; the crossbar holds W^T
        rows, cols = (weight.shape[0], 1) if rank == 1 else (weight.shape[1], weight.shape[0])
        transposed = True
    return rows, cols, 1, operand, _macs(shapes, node.outputs[0].name, rows), transposed


def _value_shapes(model: ir.Model, context: PassContext) -> dict[str, tuple]:
    """Every value's shape for the compile's input shapes: onnx shape inference, then one onnxruntime run on the
    first samples for the mappable nodes' values it left unknown (a Slice whose end comes from a Shape), where
    the model runs on them."""
    input_shapes = context.config.input_shapes
    shapes = infer_value_shapes(model, input_shapes)
    unknown = [
        value.name
        for node in model.graph
        if node.op_type in MAPPABLE_OPS and node.domain in ("", "ai.onnx")
        for value in (*node.inputs, *node.outputs)
        if value is not None and not _concrete(shapes.get(value.name))
    ]
    if not unknown:
        return shapes
    feeds = {
        name: array[: input_shapes[name][0]] if array.ndim and input_shapes.get(name) else array
        for name, array in parity_feeds(model, context.config).items()
    }
    try:
        return {**shapes, **run_shapes(model, feeds, unknown)}
    except HetmapError:  # the samples do not fit the model (its batch axis second, say): the layers say why
        return shapes


def _concrete(shape: tuple | None) -> bool:
    return shape is not None and all(isinstance(d, int) for d in shape)


def _macs(shapes, value_name: str, macs_per_element: int) -> int:
    shape = shapes.get(value_name)
    if not _concrete(shape):
        raise _UnknownShape(value_name)
    return int(math.prod(shape)) * int(macs_per_element)


_MATRIX_OF = {
    "Conv": _matrix_for_conv,
    "ConvTranspose": _matrix_for_conv,
    "Gemm": _matrix_for_gemm,
    "MatMul": _matrix_for_matmul,
}


def _activation(node: ir.Node, operand: int) -> ir.Value:
    return node.inputs[0 if node.op_type in ("Conv", "ConvTranspose") else 1 - operand]


def _elements(shapes, value_name: str, fallback: int) -> int:
    """Elements of a value in one inference (shapes are per inference, as for MACs)."""
    shape = shapes.get(value_name)
    if not _concrete(shape):
        return int(fallback)
    return int(math.prod(shape))


def _activation_rank(node: ir.Node, operand: int, shapes) -> int:
    """Rank of the operand multiplied by the weight (from the output's when unknown)."""
    activation = _activation(node, operand)
    if shapes.get(activation.name) is not None:
        return len(shapes[activation.name])
    vector_weight = len(node.inputs[operand].const_value.shape) == 1
    return len(shapes[node.outputs[0].name]) + int(vector_weight)


def _block_rows(node: ir.Node, tile_rows: int) -> int:
    """Rows per row block: whole kernels for convolutions, a full tile otherwise."""
    if node.op_type not in ("Conv", "ConvTranspose"):
        return tile_rows
    kernel = math.prod(node.inputs[1].const_value.shape[2:])
    if kernel > tile_rows:
        raise _NotMappable(f"one channel's kernel ({kernel} taps) is larger than a tile's {tile_rows} rows")
    return kernel * (tile_rows // kernel)


def _check_weight_dtype(node: ir.Node, operand: int) -> None:
    """The simulator computes in float32: a layer of another float type is named, not simulated wrongly."""
    dtype = node.inputs[operand].const_value.dtype
    if not dtype.is_floating_point():
        raise _NotMappable("weight is not a floating-point tensor")
    if dtype != ir.DataType.FLOAT:
        raise _NotMappable(f"weight is {dtype.name.lower()}; hetmap simulates float32 layers: convert the model")


def _subgraph_nodes(graph: ir.Graph):
    """(node, owner description) for every node inside an If/Loop/Scan body."""
    for node in graph:
        for attribute in node.attributes.values():
            bodies = []
            if attribute.type == ir.AttributeType.GRAPH:
                bodies = [attribute.as_graph()]
            elif attribute.type == ir.AttributeType.GRAPHS:
                bodies = list(attribute.as_graphs())
            for body in bodies:
                owner = f"inside the '{attribute.name}' body of {node.op_type} node '{node.name}'"
                for inner in ir.traversal.RecursiveGraphIterator(body):
                    yield inner, owner


def _unknown_shape_reason(value_name: str, model: ir.Model, input_shapes: dict[str, tuple[int, ...]]) -> str:
    """Why onnx shape inference did not reach a value, as far as the inputs tell."""
    reason = f"shape of '{value_name}' is unknown"
    if not input_shapes:
        return reason + " (give --data or --input-shape)"
    for value in graph_inputs(model):
        declared = list(value.shape) if value.shape is not None else []
        later_free = any(not isinstance(d, int) for d in declared[1:])
        if declared and isinstance(declared[0], int) and declared[0] != 1 and later_free:
            shown = "x".join(str(d) for d in declared)
            return reason + (
                f": input '{value.name}' is declared {shown}, its free axis after the first; hetmap takes one "
                "sample per row of the first axis (export the model batch first)"
            )
    fed = ", ".join(f"'{name}' {'x'.join(map(str, shape))}" for name, shape in input_shapes.items())
    return reason + f": onnx shape inference does not reach it from the inputs {fed}"


def _no_layer_message(unmappable: list[UnmappableLayer]) -> str:
    """One line; it names the first layer that could have been mapped and why it is not."""
    message = "model has no mappable layer (Conv, ConvTranspose, Gemm, or MatMul with a constant weight)"
    if unmappable:
        first, more = unmappable[0], len(unmappable) - 1
        message += f": {first.op_type} '{first.name}' is not ({first.reason})" + (
            f" nor are {more} more" if more else ""
        )
    return message + "; nothing to map onto analog tiles"


class Partition(Pass):
    name = "partition"

    def run(self, model: ir.Model, context: PassContext) -> tuple[ir.Model, PartitionReport]:
        tiles = context.target.analog
        shapes = _value_shapes(model, context)
        report = PartitionReport(context.target.name, tiles.rows, tiles.cols, tiles.count, layers=[])
        for node in model.graph:
            if node.op_type in DIGITAL_ONLY_OPS and node.domain in ("", "ai.onnx"):
                report.unmappable.append(
                    UnmappableLayer(node.name, node.op_type, "operator has no analog lowering; runs digital")
                )
            if node.op_type not in MAPPABLE_OPS or node.domain not in ("", "ai.onnx"):
                continue
            try:
                rows, cols, groups, operand, macs, transposed = _MATRIX_OF[node.op_type](node, shapes)
                _check_weight_dtype(node, operand)
                if rows * cols == 0:
                    raise _NotMappable(f"weight matrix is {rows} x {cols}: it holds no weight")
            except _UnknownShape as unknown:
                reason = _unknown_shape_reason(unknown.value_name, model, context.config.input_shapes)
                report.unmappable.append(UnmappableLayer(node.name, node.op_type, reason))
                continue
            except _NotMappable as reason:
                report.unmappable.append(UnmappableLayer(node.name, node.op_type, str(reason)))
                continue
            try:
                block_rows = _block_rows(node, tiles.rows)
            except _NotMappable as reason:
                report.unmappable.append(UnmappableLayer(node.name, node.op_type, str(reason)))
                continue
            row_blocks, col_blocks = math.ceil(rows / block_rows), math.ceil(cols / tiles.cols)
            report.layers.append(
                MappableLayer(
                    name=node.name,
                    op_type=node.op_type,
                    weight=node.inputs[operand].name,
                    weight_operand=operand,
                    weight_transposed=transposed,
                    activation_rank=_activation_rank(node, operand, shapes),
                    rows=int(rows),
                    cols=int(cols),
                    groups=int(groups),
                    weight_count=int(rows * cols),
                    macs=macs,
                    block_rows=block_rows,
                    row_blocks=row_blocks,
                    col_blocks=col_blocks,
                    tiles=row_blocks * col_blocks,
                    input_elements=_elements(shapes, _activation(node, operand).name, macs // rows // cols * rows),
                    output_elements=_elements(shapes, node.outputs[0].name, macs // rows),
                )
            )
        for node, owner in _subgraph_nodes(model.graph):
            if node.op_type in MAPPABLE_OPS + DIGITAL_ONLY_OPS:
                report.unmappable.append(UnmappableLayer(node.name, node.op_type, f"{owner}: left digital"))
        if not report.layers:
            raise HetmapError(_no_layer_message(report.unmappable))
        report.mappable_weights = sum(layer.weight_count for layer in report.layers)
        report.mappable_macs = sum(layer.macs for layer in report.layers)
        report.tiles_needed = sum(layer.tiles for layer in report.layers)
        report.fits_on_chip = report.tiles_needed <= tiles.count
        return model, report

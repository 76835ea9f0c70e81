"""Import and canonicalise: one opset, weights as initializers, BatchNorm folded.

Models arrive from many exporters: old opsets, weights stored as Constant
nodes or ConstantOfShape/Reshape chains, BatchNormalization left unfolded,
initializers listed as graph inputs. Later passes expect a single form:
current opset, every constant subgraph folded into an initializer, BN folded
into the Conv/ConvTranspose/Gemm before it, unique node names, topological
order. The pass manager proves the rewrite kept the outputs (ORT parity).
"""

from __future__ import annotations

import contextlib
import logging
from collections import Counter
from dataclasses import dataclass

import onnx_ir as ir
import onnx_ir.passes.common as common_passes
import onnxscript.optimizer
import onnxscript.rewriter
from onnxscript.rewriter.rules import common as rules
from onnxscript.version_converter import ConvertVersionPass

from hetmap.errors import HetmapError, NonFiniteError, first_non_finite
from hetmap.mapping.annotations import clear_annotations
from hetmap.passes.canonicalize.onnx_ml import lower_linear_models
from hetmap.pipeline import Pass, PassContext

CANONICAL_OPSET = 21
MIN_OPSET = 9
MIN_IR_VERSION = 3
CANONICAL_IR_VERSION = 10  # the first IR version that admits opset 21

_WEIGHTED_OPS = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul", "BatchNormalization"})
_FLOAT_TYPES = frozenset({ir.DataType.FLOAT, ir.DataType.DOUBLE, ir.DataType.FLOAT16, ir.DataType.BFLOAT16})

_BATCHNORM_RULES = [
    rules.fuse_batchnorm_into_conv_rule,
    rules.fuse_batchnorm_into_conv_transpose_rule,
    rules.fuse_batchnorm_into_gemm_rule,
]


@dataclass
class CanonicalizeReport:
    producer: str
    ir_version_in: int
    opset_in: int
    opset_out: int
    nodes_in: int
    nodes_out: int
    op_counts_in: dict[str, int]
    op_counts_out: dict[str, int]
    initializers_out: int
    weight_count: int
    batchnorms_folded: int
    batchnorms_left: int
    earlier_mapping_cleared: int = 0  # layers a model.mapped.onnx compiled again had mapped: compiled afresh


def _refuse_non_finite_weights(model: ir.Model) -> None:
    """A NaN in any initializer, or an inf in one a layer computes with, stops the import naming it.

    An inf elsewhere can be meant (an attention mask's -inf), so only weights
    and biases of Conv, ConvTranspose, Gemm, MatMul and BatchNormalization count.
    """
    computing = {
        value.name
        for node in ir.traversal.RecursiveGraphIterator(model.graph)
        if node.op_type in _WEIGHTED_OPS
        for value in node.inputs
        if value is not None
    }
    for name, value in model.graph.initializers.items():
        tensor = value.const_value
        if tensor is None or tensor.dtype not in _FLOAT_TYPES:
            continue
        array = tensor.numpy()
        index = first_non_finite(array, nan_only=name not in computing)
        if index is not None:
            where = f" at index {list(index)}" if index else ""
            raise NonFiniteError(
                f"initializer '{name}' holds {array[index]}{where}: the model's weights must be finite"
            )


@contextlib.contextmanager
def _quiet(logger_name: str):
    logger = logging.getLogger(logger_name)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _op_counts(model: ir.Model) -> dict[str, int]:
    counts = Counter(node.op_type for node in ir.traversal.RecursiveGraphIterator(model.graph))
    return dict(sorted(counts.items()))


def _default_opset(model: ir.Model) -> int:
    # a model of ai.onnx.ml ops alone imports no standard opset: there is nothing to convert
    return model.opset_imports.get("", model.opset_imports.get("ai.onnx", CANONICAL_OPSET))


def _fold_batchnorms(model: ir.Model) -> ir.Model:
    """Fuse BN into the layer before it, keeping that layer's node name.

    The rewriter builds a new node whose output takes the BN output's name;
    users key mappings by the original layer name, so it is restored.
    """
    layer_by_bn_output = {}
    for node in model.graph:
        if node.op_type == "BatchNormalization" and node.inputs[0].producer() is not None:
            layer_by_bn_output[node.outputs[0].name] = node.inputs[0].producer().name
    model = onnxscript.rewriter.rewrite(model, pattern_rewrite_rules=_BATCHNORM_RULES)
    for node in model.graph:
        fused_from = layer_by_bn_output.get(node.outputs[0].name)
        if fused_from is not None and node.op_type != "BatchNormalization":
            node.name = fused_from
    return model


class Canonicalize(Pass):
    name = "canonicalize"
    rewrites_graph = True

    def run(self, model: ir.Model, context: PassContext) -> tuple[ir.Model, CanonicalizeReport]:
        opset_in = _default_opset(model)
        if model.ir_version < MIN_IR_VERSION or opset_in < MIN_OPSET:
            raise HetmapError(
                f"model uses IR version {model.ir_version}, opset {opset_in}; hetmap needs IR >= "
                f"{MIN_IR_VERSION} and opset >= {MIN_OPSET} (re-export it with a newer exporter)"
            )
        ir_version_in = model.ir_version
        cleared = clear_annotations(model)
        counts_in = _op_counts(model)
        nodes_in = sum(counts_in.values())

        common_passes.RemoveInitializersFromInputsPass()(model)
        common_passes.LiftConstantsToInitializersPass(lift_all_constants=True, size_limit=0)(model)
        _refuse_non_finite_weights(model)
        if opset_in < CANONICAL_OPSET:
            with _quiet("onnxscript"):  # its note about falling back to onnx's converter is not the user's concern
                ConvertVersionPass(CANONICAL_OPSET, fallback=True)(model)
            if _default_opset(model) != CANONICAL_OPSET:
                raise HetmapError(f"cannot convert the model from opset {opset_in} to {CANONICAL_OPSET}")
            model.ir_version = max(model.ir_version, CANONICAL_IR_VERSION)
        lower_linear_models(model, CANONICAL_OPSET, CANONICAL_IR_VERSION)
        # Fold every node whose inputs are all constant, large weights and
        # ConstantOfShape included (the library's defaults keep those).
        onnxscript.optimizer.fold_constants(model, should_fold=lambda node: True, output_size_limit=2**40)
        common_passes.LiftConstantsToInitializersPass(lift_all_constants=True, size_limit=0)(model)
        batchnorms_before = counts_in.get("BatchNormalization", 0)
        model = _fold_batchnorms(model)
        for cleanup in (
            common_passes.RemoveUnusedNodesPass(),
            common_passes.NameFixPass(),
            common_passes.TopologicalSortPass(),
        ):
            cleanup(model)

        counts_out = _op_counts(model)
        batchnorms_left = counts_out.get("BatchNormalization", 0)
        weights = sum(v.const_value.size for v in model.graph.initializers.values() if v.const_value is not None)
        report = CanonicalizeReport(
            producer=" ".join(part for part in (model.producer_name, model.producer_version) if part),
            ir_version_in=ir_version_in,
            opset_in=opset_in,
            opset_out=_default_opset(model),
            nodes_in=nodes_in,
            nodes_out=sum(counts_out.values()),
            op_counts_in=counts_in,
            op_counts_out=counts_out,
            initializers_out=len(model.graph.initializers),
            weight_count=int(weights),
            batchnorms_folded=batchnorms_before - batchnorms_left,
            batchnorms_left=batchnorms_left,
            earlier_mapping_cleared=cleared,
        )
        return model, report

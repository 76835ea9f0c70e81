"""Lower ai.onnx.ml linear models to standard ops, so that their weight matrix is a Gemm hetmap can map.

skl2onnx writes LogisticRegression, LinearSVC, LinearRegression and Ridge
as one LinearClassifier or LinearRegressor node that holds the weights in
attributes. Each becomes a Gemm plus the standard ops that compute what
onnxruntime's kernels compute: labels from the raw scores (the first
largest score, or the sign of a single score), then the post_transform;
a single score stays raw, or becomes the pair (1 - p, p) with two class
labels (p its sigmoid under LOGISTIC, else the score itself), as in
onnxruntime 1.32. A form whose outputs could not stay the same is refused,
naming the node; the pass manager's parity check backs every lowering.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from hetmap.errors import HetmapError

ML_DOMAIN = "ai.onnx.ml"
_SCORE_TRANSFORMS = {"NONE": None, "LOGISTIC": "Sigmoid", "SOFTMAX": "Softmax"}  # for two or more scores


class _Builder:
    """Appends standard nodes named after the node they replace, with initializers for their constants."""

    def __init__(self, graph: ir.Graph, node: ir.Node) -> None:
        self.graph, self.node, self.nodes = graph, node, []
        self.base = node.name or node.op_type

    def const(self, suffix: str, array: np.ndarray) -> ir.Value:
        name = f"{self.base}.{suffix}"
        while name in self.graph.initializers:
            name += "_"
        if array.dtype.kind == "U":  # class names
            tensor = ir.StringTensor(np.char.encode(array, "utf-8"), name=name)
        else:
            tensor = ir.tensor(array, name=name)
        value = ir.Value(name=name, shape=ir.Shape(array.shape), type=ir.TensorType(tensor.dtype), const_value=tensor)
        self.graph.register_initializer(value)
        return value

    def op(self, op_type: str, inputs: list[ir.Value], suffix: str | None = None, **attributes) -> ir.Value:
        name = self.base if suffix is None else f"{self.base}/{suffix}"
        new = ir.node(op_type, inputs, attributes, name=name)
        self.nodes.append(new)
        return new.outputs[0]

    def gemm(self, weight_rows: np.ndarray, bias: np.ndarray | None) -> ir.Value:
        """X W^T + b with W stored (outputs, features), as the ML kernels store it; the Gemm keeps the node's name.

        The kernels read a 1-d input as one sample: the Reshape to
        [-1, features] does the same where the rank is not known to be 2.
        """
        x = self.node.inputs[0]
        if x.dtype != ir.DataType.FLOAT:  # onnxruntime casts other input types to float
            x = self.op("Cast", [x], "cast", to=ir.DataType.FLOAT)
        if x.shape is None or len(x.shape) != 2:
            x = self.op(
                "Reshape", [x, self.const("samples", np.array([-1, weight_rows.shape[1]], np.int64))], "samples"
            )
        inputs = [x, self.const("coefficients", weight_rows)]
        if bias is not None:
            inputs.append(self.const("intercepts", bias))
        return self.op("Gemm", inputs, transB=1)

    def replace(self, outputs: list[ir.Value | None]) -> None:
        """Swap the node for the new ones; each replaced output keeps its name (graph outputs included)."""
        old = [value for value, new in zip(self.node.outputs, outputs) if new is not None]
        ir.convenience.replace_nodes_and_values(
            self.graph, self.node, [self.node], self.nodes, old, [new for new in outputs if new is not None]
        )


def _used(value: ir.Value) -> bool:
    return bool(value.uses()) or value.is_graph_output()


def _weights(node: ir.Node, targets: int) -> np.ndarray:
    coefficients = np.asarray(node.attributes.get_floats("coefficients", ()), dtype=np.float32)
    if targets < 1 or coefficients.size == 0 or coefficients.size % targets:
        raise HetmapError(
            f"{node.op_type} node '{node.name}' has {coefficients.size} coefficients for {targets} outputs; "
            "cannot read its weight matrix"
        )
    return coefficients.reshape(targets, -1)


def _refuse_transform(node: ir.Node, transform: str, supported: str) -> None:
    raise HetmapError(
        f"{node.op_type} node '{node.name}' has post_transform {transform}, which hetmap cannot lower to "
        f"standard ops (it lowers {supported})"
    )


def _lower_classifier(graph: ir.Graph, node: ir.Node) -> None:
    intercepts = np.asarray(node.attributes.get_floats("intercepts", ()), dtype=np.float32)
    classes = intercepts.size
    weights = _weights(node, classes)
    transform = node.attributes.get_string("post_transform", "NONE")
    strings = list(node.attributes.get_strings("classlabels_strings", ()))
    labels = np.array(strings) if strings else np.array(node.attributes.get_ints("classlabels_ints", ()), np.int64)
    if classes > 1 and labels.size < classes:
        raise HetmapError(f"LinearClassifier node '{node.name}' has {classes} scores but {labels.size} class labels")
    if (classes > 1 and transform not in _SCORE_TRANSFORMS) or (classes == 1 and transform == "PROBIT"):
        _refuse_transform(node, transform, "NONE, LOGISTIC and SOFTMAX")
    build = _Builder(graph, node)
    scores = build.gemm(weights, intercepts)
    label_out, scores_out = node.outputs[0], node.outputs[1] if len(node.outputs) > 1 else None
    label = None
    if _used(label_out) and classes > 1:
        winner = build.op("ArgMax", [scores], "argmax", axis=1, keepdims=0)
        label = build.op("Gather", [build.const("classlabels", labels), winner], "label")
    elif _used(label_out):
        default = np.array(["0", "1"]) if strings else np.array([0, 1], np.int64)
        negative, positive = labels if labels.size == 2 else default
        flat = build.op("Reshape", [scores, build.const("flat", np.array([-1], np.int64))], "flatten")
        positive_score = build.op("Greater", [flat, build.const("zero", np.array(0, np.float32))], "positive")
        label = build.op(
            "Where",
            [
                positive_score,
                build.const("positive_label", np.array(positive)),
                build.const("negative_label", np.array(negative)),
            ],
            "label",
        )
    new_scores = None
    if scores_out is not None and _used(scores_out):
        if classes > 1:
            op_type = _SCORE_TRANSFORMS[transform]
            axis = {"axis": 1} if op_type == "Softmax" else {}
            new_scores = build.op(op_type, [scores], "post_transform", **axis) if op_type else scores
        elif labels.size == 2:  # onnxruntime widens one binary score to (1 - p, p), p = s or LOGISTIC's sigmoid(s)
            positive = build.op("Sigmoid", [scores], "post_transform") if transform == "LOGISTIC" else scores
            complement = build.op("Sub", [build.const("one", np.array(1, np.float32)), positive], "complement")
            new_scores = build.op("Concat", [complement, positive], "both_classes", axis=1)
        else:
            new_scores = scores
    build.replace([label, new_scores] if scores_out is not None else [label])


def _lower_regressor(graph: ir.Graph, node: ir.Node) -> None:
    targets = node.attributes.get_int("targets", 1)
    transform = node.attributes.get_string("post_transform", "NONE")
    if transform != "NONE":
        _refuse_transform(node, transform, "NONE")
    intercepts = np.asarray(node.attributes.get_floats("intercepts", ()), dtype=np.float32)
    build = _Builder(graph, node)
    prediction = build.gemm(_weights(node, targets), intercepts if intercepts.size == targets else None)
    build.replace([prediction])


_LOWERINGS = {"LinearClassifier": _lower_classifier, "LinearRegressor": _lower_regressor}


def lower_linear_models(model: ir.Model, opset: int, ir_version: int) -> None:
    """Rewrite the main graph's LinearClassifier and LinearRegressor nodes in place.

    A model that imports no standard opset (only ai.onnx.ml) gets `opset`
    and at least `ir_version` for the new nodes.
    """
    found = [node for node in model.graph if node.domain == ML_DOMAIN and node.op_type in _LOWERINGS]
    if found and "" not in model.opset_imports and "ai.onnx" not in model.opset_imports:
        model.opset_imports[""] = opset
        model.ir_version = max(model.ir_version, ir_version)
    for node in found:
        _LOWERINGS[node.op_type](model.graph, node)

"""A canonical ONNX graph as a trainable torch module, run node by node through an op registry.

Fine-tuning (mixed analog/digital layers, hardware-aware retraining) needs
gradients through the model as it was compiled. The interpreter keeps the
graph's own nodes and names: each node runs the registry's torch function
(hetmap.train.ops, shape_ops, spatial_ops) unless the caller overrides it by node name.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Mapping

import numpy as np
import onnx_ir as ir
import torch

from hetmap.errors import HetmapError
from hetmap.train import ops as torch_ops
from hetmap.train import shape_ops, spatial_ops  # noqa: F401 (importing them registers their ops)

NodeFunction = Callable[[ir.Node, list[torch.Tensor | None]], list[torch.Tensor]]

CANONICAL_OPSET = 21  # what Canonicalize produces; the registry implements this opset's semantics
NODES_NAMED = 5


class UnsupportedOpError(HetmapError):
    """The graph holds ops with no torch equivalent here (control flow, other domains, rare forms)."""


def run_node(node: ir.Node, inputs: list[torch.Tensor | None]) -> list[torch.Tensor]:
    """The registry's computation of one node (what overrides fall back to)."""
    function = torch_ops.REGISTRY.get(torch_ops.op_key(node))
    if function is None:
        raise UnsupportedOpError(f"no torch equivalent for op {_label(node)} (node '{node.name}')")
    result = function(node, inputs)
    return [result] if isinstance(result, torch.Tensor) else list(result)


def _label(node: ir.Node) -> str:
    domain, op_type = torch_ops.op_key(node)
    return f"{domain}.{op_type}" if domain else op_type


def _unsupported(node: ir.Node) -> str | None:
    """How the node is named in the error when the registry cannot run it, else None."""
    key = torch_ops.op_key(node)
    if key not in torch_ops.REGISTRY:
        return _label(node)
    limit = torch_ops.LIMITS.get(key)
    reason = limit(node) if limit is not None else None
    return f"{_label(node)} ({reason})" if reason else None


def check_supported(model: ir.Model, overridden: Collection[str] = ()) -> None:
    """Raise UnsupportedOpError naming every op the registry cannot run, subgraphs included."""
    opset = model.opset_imports.get("", model.opset_imports.get("ai.onnx", CANONICAL_OPSET))
    if opset < CANONICAL_OPSET:
        raise UnsupportedOpError(
            f"cannot fine-tune a model at opset {opset}: canonicalize it to opset {CANONICAL_OPSET} first"
        )
    nodes_by_label: dict[str, list[str]] = {}
    not_overridden = lambda node: node.name not in overridden  # noqa: E731, nor the subgraphs of one
    for node in ir.traversal.RecursiveGraphIterator(model.graph, recursive=not_overridden):
        label = _unsupported(node) if not_overridden(node) else None
        if label is not None:
            nodes_by_label.setdefault(label, []).append(node.name)
    if nodes_by_label:
        labels = sorted(nodes_by_label)
        nodes = [f"'{name}'" for label in labels for name in nodes_by_label[label]]
        more = f" and {len(nodes) - NODES_NAMED} more" if len(nodes) > NODES_NAMED else ""
        named = ", ".join(nodes[:NODES_NAMED]) + more
        raise UnsupportedOpError(f"cannot fine-tune: no torch equivalent for ops {', '.join(labels)} (nodes {named})")


def _attribute_names(names: Collection[str]) -> dict[str, str]:
    """A distinct torch attribute name for each initializer name (no dots, no clash with Module's own)."""
    taken = set(dir(torch.nn.Module()))
    result = {}
    for name in names:
        base = re.sub(r"\W", "_", name)
        base = base if base.isidentifier() else f"_{base}"
        candidate, suffix = base, 1
        while candidate in taken:
            candidate, suffix = f"{base}_{suffix}", suffix + 1
        taken.add(candidate)
        result[name] = candidate
    return result


def _released_after(nodes: tuple[ir.Node, ...]) -> dict[ir.Node, list[ir.Value]]:
    """The values each node is the last to read (graph outputs excepted): forward drops them there."""
    last_reader = {value: node for node in nodes for value in node.inputs if value is not None}
    released: dict[ir.Node, list[ir.Value]] = {}
    for value, node in last_reader.items():
        if not value.is_graph_output():
            released.setdefault(node, []).append(value)
    return released


class OnnxModule(torch.nn.Module):
    """A canonical ONNX graph as a trainable torch module."""

    def __init__(
        self, model: ir.Model, trainable: Collection[str] = (), overrides: Mapping[str, NodeFunction] | None = None
    ):
        super().__init__()
        self._overrides = dict(overrides or {})
        check_supported(model, self._overrides)
        graph = model.graph
        self._nodes, self._outputs = tuple(graph), tuple(graph.outputs)  # later rewrites of `model` do not leak in
        unknown_nodes = set(self._overrides) - {node.name for node in self._nodes}
        constants = {name: v.const_value for name, v in graph.initializers.items() if v.const_value is not None}
        unknown_weights = set(trainable) - set(constants)
        if unknown_nodes or unknown_weights:
            raise ValueError(f"not in the graph: nodes {sorted(unknown_nodes)}, initializers {sorted(unknown_weights)}")
        self._attribute_names = _attribute_names(constants)
        self._trainable = []
        self.tensors = torch.nn.Module()  # parameters and buffers under sanitized initializer names
        for name, constant in constants.items():
            tensor = torch_ops.from_ir(constant)
            if name in trainable and tensor.is_floating_point():
                self.tensors.register_parameter(self._attribute_names[name], torch.nn.Parameter(tensor))
                self._trainable.append(name)
            else:
                self.tensors.register_buffer(self._attribute_names[name], tensor)
        self._initializer_values = [graph.initializers[name] for name in constants]
        self._inputs = [value for value in graph.inputs if value.name not in graph.initializers]
        self._released_after = _released_after(self._nodes)

    def initializer(self, name: str) -> torch.Tensor:
        """The current tensor (parameter or buffer) of an initializer."""
        return getattr(self.tensors, self._attribute_names[name])

    def parameter_arrays(self) -> dict[str, np.ndarray]:
        """Initializer name -> a copy of the current value of every trainable parameter (numpy, original dtype)."""
        return {name: self.initializer(name).detach().cpu().numpy().copy() for name in self._trainable}

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        if len(inputs) != len(self._inputs):
            names = ", ".join(value.name for value in self._inputs)
            raise TypeError(f"the graph takes {len(self._inputs)} inputs ({names}), got {len(inputs)}")
        values: dict[ir.Value, torch.Tensor] = dict(zip(self._inputs, inputs))
        for value in self._initializer_values:
            values[value] = self.initializer(value.name)
        for node in self._nodes:
            arguments = [None if value is None else values[value] for value in node.inputs]
            outputs = self._overrides.get(node.name, run_node)(node, arguments)
            values.update(zip(node.outputs, outputs))
            for value in self._released_after.get(node, ()):
                del values[value]
        results = tuple(values[value] for value in self._outputs)
        return results[0] if len(results) == 1 else results

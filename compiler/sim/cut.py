"""Cutting a model at one layer: the nodes its output reaches, and the activations they read from before it.

Perturbing one layer leaves everything before it as in full precision, so
sensitivity computes those activations once and runs only the suffix per
option and draw. The suffix can hold several copies of the layer, one per
variant (an option, or one Monte-Carlo draw of analog), whose outputs are
stacked along the batch axis: the rest of the network then scores every
variant in one run, and every activation it reads from before the layer is
stacked the same way.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_ir as ir

from hetmap.mapping.annotations import LayerAnnotation, write_layer

FLOAT_TYPES = frozenset({ir.DataType.FLOAT, ir.DataType.FLOAT16, ir.DataType.DOUBLE, ir.DataType.BFLOAT16})


@dataclass
class Cut:
    """The suffix of one layer: its nodes in graph order (the layer first) and what they read from before."""

    layer: ir.Node
    nodes: list[ir.Node]
    inputs: list[ir.Value]  # activations and graph inputs the suffix reads (never initializers)
    reaches_output: bool  # False: the model's first output does not depend on the layer


def has_subgraphs(model: ir.Model) -> bool:
    """Control flow hides outer-scope reads inside bodies; such models are measured whole."""
    bodies = (ir.AttributeType.GRAPH, ir.AttributeType.GRAPHS)
    return any(attr.type in bodies for node in model.graph for attr in node.attributes.values())


def _external(value: ir.Value | None, produced: set) -> bool:
    return value is not None and value not in produced and not value.is_initializer() and value.const_value is None


def find_cut(model: ir.Model, layer_name: str) -> Cut:
    """The layer's forward cone, plus the producers of every non-float value it reads.

    Shapes and indices (int tensors) are recomputed inside the suffix rather
    than fed, so that a Reshape target built from Shape sees the stacked batch.
    """
    layer = next(node for node in model.graph if node.name == layer_name)
    nodes, inputs = forward_cone(model, [layer])
    produced = {output for node in nodes for output in node.outputs}
    return Cut(layer, nodes, inputs, model.graph.outputs[0] in produced)


def forward_cone(model: ir.Model, starts: list[ir.Node]) -> tuple[list[ir.Node], list[ir.Value]]:
    """(the nodes the `starts` reach, in graph order, with the producers of the non-float values those read;
    the activations and graph inputs they read from outside), the starts reading theirs as fed."""
    nodes = list(model.graph)
    position = {id(node): index for index, node in enumerate(nodes)}
    chosen = {id(node): node for node in starts}
    stack = list(starts)
    while stack:
        for output in stack.pop().outputs:
            for consumer in output.consumers():
                if id(consumer) not in chosen:
                    chosen[id(consumer)] = consumer
                    stack.append(consumer)
    fed = {id(node) for node in starts}
    pending = [node for node in chosen.values() if id(node) not in fed]
    while pending:
        for value in pending.pop().inputs:
            producer = value.producer() if value is not None else None
            if producer is None or id(producer) in chosen or value.const_value is not None:
                continue
            known_not_float = value.dtype is not None and value.dtype not in FLOAT_TYPES
            if known_not_float or not any(v is not None and not v.is_initializer() for v in producer.inputs):
                chosen[id(producer)] = producer
                pending.append(producer)
    ordered = sorted(chosen.values(), key=lambda node: position[id(node)])
    produced = {output for node in ordered for output in node.outputs}
    return ordered, list(dict.fromkeys(v for node in ordered for v in node.inputs if _external(v, produced)))


def layer_cut(model: ir.Model, layer_name: str) -> Cut | None:
    """The layer alone, fed the activations it reads; None when one of them is known not to be a float tensor
    (a type shape inference left unknown is found out from the samples fed)."""
    layer = next(node for node in model.graph if node.name == layer_name)
    inputs = [value for value in layer.inputs if _external(value, set())]
    if any(value.dtype is not None and value.dtype not in FLOAT_TYPES for value in inputs):
        return None
    return Cut(layer, [layer], inputs, True)


def suffix_model(
    model: ir.Model,
    cut: Cut,
    variants: list[tuple[str, LayerAnnotation]],
    samples: dict[str, np.ndarray],
    batched: set[str],
    output: ir.Value | None = None,
) -> ir.Model:
    """A model of the suffix whose layer is replaced by one annotated copy per variant (name, annotation).

    With several variants their outputs are concatenated along axis 0 and
    every `batched` input is repeated as often, so output rows come variant
    by variant. Weights are shared with `model`, never copied; inputs are
    declared with the dtype of their `samples` and a symbolic batch. The
    suffix computes `output` (default: the model's first output).
    """
    mapped: dict[ir.Value, ir.Value] = {}
    initializers: dict[str, ir.Value] = {}
    graph_inputs, new_nodes = [], []
    stack = len(variants) > 1

    def value_for(value: ir.Value | None, direct: bool = False) -> ir.Value | None:
        if value is None:
            return None
        if value in mapped:
            found = mapped[value]
            return found if not direct else direct_inputs.get(value.name, found)
        if value.is_initializer() or value.const_value is not None:
            copy = ir.Value(name=value.name, type=value.type, shape=value.shape, const_value=value.const_value)
            initializers[value.name] = copy
            mapped[value] = copy
            return copy
        raise KeyError(f"value '{value.name}' is neither fed nor computed in the suffix of '{cut.layer.name}'")

    direct_inputs: dict[str, ir.Value] = {}
    for value in cut.inputs:
        sample = samples[value.name]
        shape = ir.Shape(["batch", *sample.shape[1:]] if value.name in batched else sample.shape)
        fed = ir.Value(name=value.name, type=ir.TensorType(ir.DataType.from_numpy(sample.dtype)), shape=shape)
        graph_inputs.append(fed)
        direct_inputs[value.name] = fed
        if stack and value.name in batched:
            node = ir.node("Concat", [fed] * len(variants), {"axis": 0}, name=f"{value.name}/stacked")
            node.outputs[0].name = f"{value.name}/stacked"
            node.outputs[0].type = fed.type
            new_nodes.append(node)
            mapped[value] = node.outputs[0]
        else:
            mapped[value] = fed
    for node in cut.nodes:
        if node is cut.layer:
            outputs = []
            for name, annotation in variants:
                copy = _clone(node, [value_for(v, direct=True) for v in node.inputs], f"{node.name}#{name}")
                copy.outputs[0].name = f"{copy.name}/output"
                write_layer(copy, annotation)
                new_nodes.append(copy)
                outputs.append(copy.outputs[0])
            if stack:
                joined = ir.node("Concat", outputs, {"axis": 0}, name=f"{node.name}#stacked")
                joined.outputs[0].name = f"{node.name}#stacked/output"
                joined.outputs[0].type = node.outputs[0].type
                new_nodes.append(joined)
                outputs = joined.outputs
            mapped[node.outputs[0]] = outputs[0]
            continue
        copy = _clone(node, [value_for(v) for v in node.inputs], node.name)
        for old, new in zip(node.outputs, copy.outputs):
            new.name, new.type = old.name, old.type
            mapped[old] = new
        new_nodes.append(copy)
    if output is None:
        output = mapped[model.graph.outputs[0]]
        output.name = model.graph.outputs[0].name
    else:
        output = mapped[output]
    graph = ir.Graph(
        graph_inputs,
        [output],
        nodes=new_nodes,
        initializers=list(initializers.values()),
        opset_imports=dict(model.opset_imports),
        name=f"suffix of {cut.layer.name}",
    )
    return ir.Model(graph, ir_version=model.ir_version)


def segment_nodes(model: ir.Model, outputs: list[str], fed: set[str]) -> list[ir.Node]:
    """The nodes, in graph order, that compute the named `outputs` from the values named in `fed`, or from the
    graph inputs where those do not reach."""
    values = {v.name: v for node in model.graph for v in node.outputs}
    chosen, stack = {}, [values[name].producer() for name in outputs if name not in fed]
    while stack:
        node = stack.pop()
        if id(node) not in chosen:
            chosen[id(node)] = node
            stack += [v.producer() for v in node.inputs if _external(v, set()) and v.name not in fed and v.producer()]
    return [node for node in model.graph if id(node) in chosen]


def segment_model(model: ir.Model, nodes: list[ir.Node], outputs: list[str], fed: dict[str, np.dtype]) -> ir.Model:
    """A model of `nodes` (segment_nodes) computing the named outputs, its inputs the values `fed` (name: dtype, one
    row per sample) and graph inputs they read; weights shared with `model`, never copied."""
    produced = {output for node in nodes for output in node.outputs}
    mapped: dict[ir.Value, ir.Value] = {}
    for value in (v for node in nodes for v in node.inputs if _external(v, produced)):
        if value.name in fed:
            rank = None if value.shape is None else len(value.shape)
            shape = None if rank is None else ir.Shape(["batch", *[None] * (rank - 1)])
            mapped[value] = ir.Value(
                name=value.name, type=ir.TensorType(ir.DataType.from_numpy(fed[value.name])), shape=shape
            )
        else:
            mapped[value] = ir.Value(name=value.name, type=value.type, shape=value.shape)
    inputs = list(mapped.values())
    initializers = {}
    copies = []
    for node in nodes:
        for value in node.inputs:
            if value is not None and value not in mapped:  # a weight: shared, not copied
                initializers[value.name] = ir.Value(name=value.name, type=value.type, shape=value.shape)
                initializers[value.name].const_value = value.const_value
                mapped[value] = initializers[value.name]
        copy = _clone(node, [mapped[v] if v is not None else None for v in node.inputs], node.name)
        for old, new in zip(node.outputs, copy.outputs):
            new.name, new.type = old.name, old.type
            mapped[old] = new
        copies.append(copy)
    by_name = {old.name: new for old, new in mapped.items() if old in produced}
    graph = ir.Graph(
        inputs,
        [by_name[name] for name in outputs],
        nodes=copies,
        initializers=list(initializers.values()),
        opset_imports=dict(model.opset_imports),
        name="segment",
    )
    return ir.Model(graph, ir_version=model.ir_version)


def shared_copy(model: ir.Model) -> ir.Model | None:
    """A copy of the graph's structure that shares every weight tensor (no bytes copied); None with control flow."""
    if has_subgraphs(model) or model.functions:
        return None
    mapped: dict[ir.Value, ir.Value] = {}
    inputs = []
    for value in model.graph.inputs:
        mapped[value] = ir.Value(name=value.name, type=value.type, shape=value.shape)
        inputs.append(mapped[value])
    initializers = []
    for value in model.graph.initializers.values():
        copy = mapped.get(value) or ir.Value(name=value.name, type=value.type, shape=value.shape)
        copy.const_value = value.const_value
        mapped[value] = copy
        initializers.append(copy)
    nodes = []
    for node in model.graph:
        copy = _clone(node, [mapped[v] if v is not None else None for v in node.inputs], node.name)
        for old, new in zip(node.outputs, copy.outputs):
            new.name, new.type, new.shape = old.name, old.type, old.shape
            mapped[old] = new
        nodes.append(copy)
    graph = ir.Graph(
        inputs,
        [mapped[value] for value in model.graph.outputs],
        nodes=nodes,
        initializers=initializers,
        opset_imports=dict(model.opset_imports),
        name=model.graph.name,
        metadata_props=dict(model.graph.metadata_props),
    )
    return ir.Model(graph, ir_version=model.ir_version, metadata_props=dict(model.metadata_props))


def _clone(node: ir.Node, inputs: list[ir.Value | None], name: str) -> ir.Node:
    return ir.Node(
        node.domain,
        node.op_type,
        inputs,
        list(node.attributes.values()),
        overload=node.overload,
        num_outputs=len(node.outputs),
        version=node.version,
        name=name,
        metadata_props=dict(node.metadata_props),
    )


def split_variants(outputs: np.ndarray, count: int) -> list[np.ndarray]:
    """Rows of a stacked run, variant by variant."""
    rows = len(outputs) // count
    return [outputs[index * rows : (index + 1) * rows] for index in range(count)]

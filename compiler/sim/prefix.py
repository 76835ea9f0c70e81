"""The part of a simulated mapping no Monte-Carlo draw changes, computed once for all of them.

Only analog layers change from one draw (or drift time) to the next; every
node their outputs never reach computes the same values in every run. A
mapping simulated over several runs therefore computes the values the
analog layers' forward cone reads once, chunk by chunk as the first run asks
for them, and each run executes only that cone: with ResNet-50's analog
layers among its last 17 of 54, most of the network runs once instead of
once per draw. Both parts are the model's own nodes, so no value changes
(tests pin the outputs to the bit).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_ir as ir
import onnxruntime as ort

from hetmap.mapping.annotations import read_layer
from hetmap.sim.activations import computed_outputs, samples_in, sliced
from hetmap.sim.cut import forward_cone, has_subgraphs, segment_model, segment_nodes
from hetmap.sim.sessions import session_for
from hetmap.sim.simulation import build_simulation

KEPT_BYTES = 512 << 20  # the computed values kept for the runs after the first; past it, a run computes its own
COMPUTE_OPS = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul"})  # a prefix without them is not worth a cut


class Chunks:
    """A data set's feeds chunk by chunk: rows start..stop of every input (a 0-d input goes whole)."""

    def __init__(self, inputs: dict[str, np.ndarray]):
        self.inputs = inputs
        self.size = samples_in(inputs)

    def get(self, start: int, stop: int) -> dict[str, np.ndarray]:
        return sliced(self.inputs, start, stop)


class Computed:
    """The analog cone's feeds chunk by chunk: computed by the rest of the mapping on first demand, then kept."""

    def __init__(self, session: ort.InferenceSession, names: list[str], data: Chunks, direct: list[str]):
        self.session, self.names, self.data, self.direct = session, names, data, direct
        self.size = data.size
        self.kept: dict[tuple[int, int], dict[str, np.ndarray]] = {}
        self.kept_bytes = 0

    def get(self, start: int, stop: int) -> dict[str, np.ndarray]:
        stop = min(stop, self.size)
        if (start, stop) in self.kept:
            return self.kept[(start, stop)]
        data = self.data.get(start, stop)
        feeds = computed_outputs(self.session, self.names, data)
        feeds.update({name: data[name] for name in self.direct})
        size = sum(array.nbytes for array in feeds.values())
        if self.kept_bytes + size <= KEPT_BYTES:
            self.kept[(start, stop)] = feeds
            self.kept_bytes += size
        return feeds


@dataclass
class Split:
    model: ir.Model  # the analog layers' forward cone, annotated, its inputs the values `feeds` computes
    feeds: Computed


def has_analog(annotated: ir.Model) -> bool:
    """Whether any layer of the graph is annotated analog (only those change from draw to draw)."""
    return any(_analog(node) for node in annotated.graph)


def split_at_analog(annotated: ir.Model, target, data: Chunks, rows: int) -> Split | None:
    """The cone of `annotated`'s analog layers and what feeds it; None where nothing worth running once precedes it.

    `rows`: the samples per run (its first chunk is computed here, for the dtypes the cone is declared with).
    """
    plan = _plan(annotated)
    if plan is None:
        return None
    cone, before, computed, direct = plan
    prefix = build_simulation(segment_model(annotated, before, computed, {}), target, copy=False)
    session = session_for(prefix.model, set(), feed_matrices=True)
    feeds = Computed(session, computed, data, direct)
    first = feeds.get(0, rows)
    output = annotated.graph.outputs[0].name
    model = segment_model(annotated, cone, [output], {name: first[name].dtype for name in computed})
    return Split(model, feeds)


def shares_prefix(annotated: ir.Model) -> bool:
    """Whether `split_at_analog` would split the model (a look at the graph alone)."""
    return _plan(annotated) is not None


def _plan(annotated: ir.Model) -> tuple[list[ir.Node], list[ir.Node], list[str], list[str]] | None:
    """(the analog layers' forward cone, the nodes before it, the values they compute for it, the graph inputs
    it reads itself), or None: control flow, an output no analog layer reaches, no work worth a cut before."""
    if has_subgraphs(annotated):
        return None
    cone, read = forward_cone(annotated, [node for node in annotated.graph if _analog(node)])
    if annotated.graph.outputs[0] not in {value for node in cone for value in node.outputs}:
        return None
    graph_inputs = {value.name for value in annotated.graph.inputs}
    computed = [value.name for value in read if value.name not in graph_inputs]
    before = segment_nodes(annotated, computed, set())
    if not any(node.op_type in COMPUTE_OPS for node in before):
        return None
    return cone, before, computed, [value.name for value in read if value.name in graph_inputs]


def _analog(node: ir.Node) -> bool:
    annotation = read_layer(node)
    return annotation is not None and annotation.analog

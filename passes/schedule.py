"""Schedule: physical tiles for every analog weight block, and a timed dataflow of one inference.

Placement (hetmap.mapping.placement) gives each analog weight block its own
physical tile. Timing walks the dataflow graph of the
top-level ONNX nodes in topological order: a node starts when all its inputs
are ready; analog layers never share tiles, so they may overlap each other
and the digital units; layers on the same digital unit (same bit width) run
one at a time, in topological order. Latency and energy of a mappable layer
come from `hetmap.mapping.cost.layer_cost` (the model the solver uses).

reports/schedule.json (times in ns, energies in pJ, one inference, batch 1):

    target                       target name
    tile_count                   analog tiles on the target
    tiles_used                   tiles holding weight blocks (ids 0..tiles_used-1)
    makespan_ns                  end of the last layer: the latency of one inference
    total_energy_pj              sum of the layers' energies
    digital_baseline_option      "int8" (the target's widest digital unit)
    digital_baseline_energy_pj   the same layers all on that unit, for comparison
    digital_baseline_latency_ns  ... and their latency (one unit: layers in sequence)
    critical_path                layer names, first to last: the chain that sets the
                                 makespan; each layer starts when the one before it
                                 ends (it fed it, through zero-cost ops, or held
                                 the same digital unit)
    zero_cost_nodes              top-level ONNX nodes costed at 0 (see below)
    layers                       one entry per mappable layer, in graph order:
      name, op_type              the ONNX node
      option                     "analog" | "int8" | "int4" | "int2"
      unit                       "analog" or the digital unit it runs on (= option)
      tiles                      analog only, one entry per weight block, row-major:
                                 {tile, row_block, col_block, rows, cols}, rows and
                                 cols the part of the tile the block occupies
      ready_ns                   when its inputs are ready
      start_ns, end_ns           start > ready: it waited for its digital unit
      latency_ns, energy_pj      layer_cost of the layer under its option
      critical                   on the critical path

Only mappable layers cost time and energy. Every other node (activations,
reshapes, pooling, additions, MatMuls of two activations, DIGITAL_ONLY_OPS,
If/Loop nodes and the layers inside their bodies) is costed at 0: it
passes readiness on from its inputs to its outputs and nothing more.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import networkx as nx
import onnx_ir as ir

from hetmap.mapping.cost import layer_cost
from hetmap.mapping.mapping import ANALOG, Mapping
from hetmap.mapping.placement import TileBlock, place_blocks
from hetmap.pipeline import Pass, PassContext


@dataclass
class ScheduledLayer:
    name: str
    op_type: str
    option: str
    unit: str
    tiles: list[TileBlock]
    ready_ns: float
    start_ns: float
    end_ns: float
    latency_ns: float
    energy_pj: float
    critical: bool = False


@dataclass
class ScheduleReport:
    target: str
    tile_count: int
    tiles_used: int
    makespan_ns: float
    total_energy_pj: float
    digital_baseline_option: str
    digital_baseline_energy_pj: float
    digital_baseline_latency_ns: float
    critical_path: list[str]
    zero_cost_nodes: int
    layers: list[ScheduledLayer] = field(default_factory=list)

    def tile_ids(self) -> dict[str, list[int]]:
        """Physical tile ids per analog layer, in block order."""
        return {layer.name: [block.tile for block in layer.tiles] for layer in self.layers if layer.tiles}


def dataflow_graph(model: ir.Model) -> nx.DiGraph:
    """Top-level ONNX nodes, an edge wherever one node's output feeds another.

    A node holding If/Loop bodies also depends on the outer values its bodies read.
    """
    graph = nx.DiGraph()
    for index, node in enumerate(model.graph):
        graph.add_node(node.name, index=index, op_type=node.op_type)
    for node in model.graph:
        for value in _values_read(node):
            producer = value.producer()
            if producer is not None and producer.graph is model.graph and producer is not node:
                graph.add_edge(producer.name, node.name)
    return graph


def _values_read(node: ir.Node):
    yield from (value for value in node.inputs if value is not None)
    for attribute in node.attributes.values():
        if attribute.type == ir.AttributeType.GRAPH:
            bodies = [attribute.as_graph()]
        elif attribute.type == ir.AttributeType.GRAPHS:
            bodies = list(attribute.as_graphs())
        else:
            continue
        for body in bodies:
            for inner in ir.traversal.RecursiveGraphIterator(body):
                yield from (value for value in inner.inputs if value is not None)


def _timed(graph: nx.DiGraph, costs: dict[str, tuple[str, float]]) -> tuple[dict, dict, dict, dict]:
    """List-schedule the graph in topological order (graph order breaks ties).

    `costs` maps a layer to (unit, latency_ns). Returns ready, start and end
    times per node, and for each node the one whose end set its start.
    """
    ready, start, end, bound_by = {}, {}, {}, {}
    unit_free: dict[str, tuple[float, str]] = {}  # digital unit -> (free at, last layer on it)
    order = nx.lexicographical_topological_sort(graph, key=lambda n: graph.nodes[n]["index"])
    for name in order:
        preds = sorted(graph.predecessors(name), key=lambda p: (end[p], graph.nodes[p]["index"]))
        ready[name] = end[preds[-1]] if preds else 0.0
        start[name], bound_by[name] = ready[name], preds[-1] if preds else None
        unit, latency = costs.get(name, (None, 0.0))
        if unit is not None and unit != ANALOG:
            free, last = unit_free.get(unit, (0.0, None))
            if free > ready[name]:
                start[name], bound_by[name] = free, last
            unit_free[unit] = (start[name] + latency, name)
        end[name] = start[name] + latency
    return ready, start, end, bound_by


def _critical_chain(graph: nx.DiGraph, end: dict, bound_by: dict) -> list[str]:
    """Back from the last node to end, through the node that set each start."""
    name = max(graph.nodes, key=lambda n: (end[n], graph.nodes[n]["index"]), default=None)
    chain = []
    while name is not None:
        chain.append(name)
        name = bound_by[name]
    return chain[::-1]


class Schedule(Pass):
    name = "schedule"
    inputs = ("partition", "assign")

    def run(self, model: ir.Model, context: PassContext) -> tuple[ir.Model, ScheduleReport]:
        target = context.target
        layers = context.reports["partition"].layers
        mapping: Mapping = context.reports["assign"].mapping
        placement = place_blocks(layers, mapping, target)
        costs = {layer.name: layer_cost(layer, mapping.layers[layer.name], target) for layer in layers}
        units = {name: ANALOG if option == ANALOG else option for name, option in mapping.layers.items()}
        graph = dataflow_graph(model)
        ready, start, end, bound_by = _timed(graph, {n: (units[n], c.latency_ns) for n, c in costs.items()})
        critical = [name for name in _critical_chain(graph, end, bound_by) if name in costs]
        baseline_option = f"int{target.digital_bits[0]}"
        baseline = [layer_cost(layer, baseline_option, target) for layer in layers]
        scheduled = [
            ScheduledLayer(
                name=layer.name,
                op_type=layer.op_type,
                option=mapping.layers[layer.name],
                unit=units[layer.name],
                tiles=placement.get(layer.name, []),
                ready_ns=ready[layer.name],
                start_ns=start[layer.name],
                end_ns=end[layer.name],
                latency_ns=costs[layer.name].latency_ns,
                energy_pj=costs[layer.name].energy_pj,
                critical=layer.name in critical,
            )
            for layer in layers
        ]
        report = ScheduleReport(
            target=target.name,
            tile_count=target.analog.count,
            tiles_used=sum(len(blocks) for blocks in placement.values()),
            makespan_ns=max(end.values(), default=0.0),
            total_energy_pj=sum(cost.energy_pj for cost in costs.values()),
            digital_baseline_option=baseline_option,
            digital_baseline_energy_pj=sum(cost.energy_pj for cost in baseline),
            digital_baseline_latency_ns=sum(cost.latency_ns for cost in baseline),
            critical_path=critical,
            zero_cost_nodes=graph.number_of_nodes() - len(costs),
            layers=scheduled,
        )
        return model, report

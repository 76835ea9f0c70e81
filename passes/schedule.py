"""Schedule: physical tiles for every analog weight block, and a timed dataflow of one inference.

Placement (hetmap.mapping.placement) gives each analog weight block its own
physical tile. Timing walks the dataflow graph of the
top-level ONNX nodes in topological order: a node starts when all its inputs
are ready; analog layers never share tiles, so they may overlap each other
and the digital units; layers on the same digital unit (same bit width) run
one at a time, in topological order. Latency and energy of a mappable layer
come from `hetmap.mapping.cost.mapping_costs` (the model the solver uses).

reports/schedule.json (times in ns, energies in pJ, one inference, batch 1):

    target                       target name
    tile_count                   analog tiles on the target
    tiles_used                   tiles holding weight blocks (ids 0..tiles_used-1)
    makespan_ns                  end of the last layer: the latency of one inference
    pipeline_interval_ns         a stream of inferences with layers pipelined: the busiest
                                 unit's time per inference (an analog layer's own tiles,
                                 or the layers sharing one digital unit)
    throughput_per_s             1e9 / pipeline_interval_ns
    total_energy_pj              sum of the layers' energies
    energy_breakdown_pj          the same by term: compute, conversions, weight_movement,
                                 activation_movement, periphery (see hetmap.cost)
    digital_baseline_option      "int8" (the target's widest digital unit)
    digital_baseline_energy_pj   the same layers all on that unit, for comparison
    digital_baseline_energy_breakdown_pj   ... by term
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
      latency_ns, energy_pj      the layer's cost under its option (hetmap.cost.mapping_costs)
      energy_breakdown_pj        ... by term
      tile_utilisation           analog: cells holding weights / cells of its tiles (else null)
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

from hetmap.errors import require_finite
from hetmap.mapping.cost import mapping_costs, reloads
from hetmap.mapping.mapping import ANALOG, Mapping
from hetmap.mapping.placement import TileBlock, place_blocks
from hetmap.pipeline import Pass, PassContext
from hetmap.targets import Target

RELOADED_TILES = "reloaded tiles"  # the timing unit of analog layers taking turns on rewritten tiles


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
    energy_breakdown_pj: dict[str, float]  # compute, conversions, weight_movement, activation_movement, periphery
    tile_utilisation: float | None  # analog: crossbar cells holding weights / cells of its tiles
    critical: bool = False


@dataclass
class ScheduleReport:
    target: str
    tile_count: int
    tiles_used: int
    makespan_ns: float
    pipeline_interval_ns: float  # a stream of inputs: the busiest unit's time per inference (layers pipelined)
    throughput_per_s: float
    total_energy_pj: float
    energy_breakdown_pj: dict[str, float]
    digital_baseline_option: str
    digital_baseline_energy_pj: float
    digital_baseline_energy_breakdown_pj: dict[str, float]
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


def pipeline_interval_ns(costs: dict[str, tuple[str, float]]) -> float:
    """Time per inference of a stream with layers pipelined: the busiest unit's work.

    Each analog layer has tiles of its own; the layers on one digital unit take turns.
    """
    busy: dict[str, float] = {}
    for name, (unit, latency) in costs.items():
        key = name if unit == ANALOG else unit
        busy[key] = busy.get(key, 0.0) + latency
    return max(busy.values(), default=0.0)


def tile_utilisation(layer, target: Target) -> float:
    """Crossbar cells holding a weight over the cells of the tiles the layer holds."""
    return layer.weight_count / (layer.tiles * target.analog.rows * target.analog.cols)


def total_breakdown(costs) -> dict[str, float]:
    """The energy terms summed over layers."""
    totals: dict[str, float] = {}
    for cost in costs:
        for term, value in cost.breakdown().items():
            totals[term] = totals.get(term, 0.0) + value
    return totals


class Schedule(Pass):
    name = "schedule"
    inputs = ("partition", "assign")

    def run(self, model: ir.Model, context: PassContext) -> tuple[ir.Model, ScheduleReport]:
        target = context.target
        layers = context.reports["partition"].layers
        mapping: Mapping = context.reports["assign"].mapping
        placement = place_blocks(layers, mapping, target)
        costs = mapping_costs(layers, mapping.layers, target)
        units = {name: ANALOG if option == ANALOG else option for name, option in mapping.layers.items()}
        # Reloaded tiles serve one layer at a time, like a digital unit.
        turns = {
            n: RELOADED_TILES if u == ANALOG and reloads(layers, mapping.layers, target) else u
            for n, u in units.items()
        }
        graph = dataflow_graph(model)
        ready, start, end, bound_by = _timed(graph, {n: (turns[n], c.latency_ns) for n, c in costs.items()})
        critical = [name for name in _critical_chain(graph, end, bound_by) if name in costs]
        baseline_option = f"int{target.digital_bits[0]}"
        baseline = list(mapping_costs(layers, dict.fromkeys(costs, baseline_option), target).values())
        interval = pipeline_interval_ns({n: (turns[n], c.latency_ns) for n, c in costs.items()})
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
                energy_breakdown_pj=costs[layer.name].breakdown(),
                tile_utilisation=tile_utilisation(layer, target) if units[layer.name] == ANALOG else None,
                critical=layer.name in critical,
            )
            for layer in layers
        ]
        report = ScheduleReport(
            target=target.name,
            tile_count=target.analog.count,
            tiles_used=len({block.tile for blocks in placement.values() for block in blocks}),
            makespan_ns=max(end.values(), default=0.0),
            pipeline_interval_ns=interval,
            throughput_per_s=1e9 / interval if interval > 0 else 0.0,
            total_energy_pj=sum(cost.energy_pj for cost in costs.values()),
            energy_breakdown_pj=total_breakdown(costs.values()),
            digital_baseline_option=baseline_option,
            digital_baseline_energy_pj=sum(cost.energy_pj for cost in baseline),
            digital_baseline_energy_breakdown_pj=total_breakdown(baseline),
            digital_baseline_latency_ns=sum(cost.latency_ns for cost in baseline),
            critical_path=critical,
            zero_cost_nodes=graph.number_of_nodes() - len(costs),
            layers=scheduled,
        )
        for what, value in [
            *((f"layer '{n}'s energy", c.energy_pj) for n, c in costs.items()),
            *((f"layer '{n}'s latency", c.latency_ns) for n, c in costs.items()),
            ("the makespan", report.makespan_ns),
            ("the total energy", report.total_energy_pj),
            ("the all-digital baseline's energy", report.digital_baseline_energy_pj),
            ("the all-digital baseline's latency", report.digital_baseline_latency_ns),
        ]:
            require_finite(value, f"schedule: {what} on target '{target.name}' (its figures overflow float64)")
        return model, report

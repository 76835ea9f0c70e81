"""Emit: the annotated ONNX graph, computing the full-precision function unchanged.

Each mappable node carries `hetmap.*` entries in its metadata_props (option,
bits, tiles, weight share, and what the simulator needs: weight layout, row
block size, calibrated input range); the model carries the target, the
hetmap version and a JSON summary (keys documented in README.md). Stock onnxruntime ignores the annotations; `hetmap run`
reads them to build the simulation graph.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
from collections.abc import Iterator
from dataclasses import dataclass

import onnx_ir as ir

from hetmap import __version__
from hetmap.mapping.mapping import ANALOG, Mapping, option_bits
from hetmap.passes.schedule import place_blocks
from hetmap.pipeline import PassContext
from hetmap.targets import Target

NODE_METADATA_IR_VERSION = 10  # node metadata_props exist from IR version 10 on


@dataclass
class EmitReport:
    target: str
    layers: dict[str, str]
    analog_weight_share: float
    analog_mac_share: float
    tiles_used: int
    tile_count: int


def tile_ids(layers, mapping: Mapping, context: PassContext) -> dict[str, list[int]]:
    """Physical tile ids per analog layer: the schedule's placement, or the same one computed here."""
    schedule = context.reports.get("schedule")
    if schedule is not None:
        return schedule.tile_ids()
    placement = place_blocks(layers, mapping, context.target)
    return {name: [block.tile for block in blocks] for name, blocks in placement.items()}


def annotate_layer(node: ir.Node, layer, option: str, target: Target, input_range: float, tiles: list[int], total_weights: int) -> None:
    """Write one layer's `hetmap.*` metadata: its option and what the simulator needs."""
    props = node.metadata_props
    props["hetmap.target"] = target.name
    props["hetmap.option"] = option
    if option == ANALOG:
        props["hetmap.dac_bits"] = str(target.analog.dac_bits)
        props["hetmap.adc_bits"] = str(target.analog.adc_bits)
        props["hetmap.tiles"] = ",".join(map(str, tiles))
    else:
        props["hetmap.bits"] = str(option_bits(option))
    props["hetmap.weight"] = layer.weight
    props["hetmap.weight_operand"] = str(layer.weight_operand)
    props["hetmap.weight_transposed"] = str(int(layer.weight_transposed))
    props["hetmap.block_rows"] = str(layer.block_rows)
    props["hetmap.activation_rank"] = str(layer.activation_rank)
    props["hetmap.input_range"] = repr(input_range)
    props["hetmap.weight_share"] = f"{layer.weight_count / total_weights:.6f}"
    props["hetmap.matrix"] = f"{layer.rows}x{layer.cols}"
    props["hetmap.blocks"] = f"{layer.row_blocks}x{layer.col_blocks}"


def clear_annotations(node: ir.Node) -> None:
    for key in [key for key in node.metadata_props if key.startswith("hetmap.")]:
        del node.metadata_props[key]


@contextlib.contextmanager
def annotated_as(model: ir.Model, mapping: dict[str, str], context: PassContext) -> Iterator[ir.Model]:
    """The model annotated with `mapping` (layers it leaves out stay full precision) while a simulation
    scores it; the annotations are gone afterwards."""
    partition = context.reports["partition"]
    ranges = context.reports["calibrate"].input_range
    nodes = {node.name: node for node in model.graph}
    chosen = [layer for layer in partition.layers if layer.name in mapping]
    for layer in chosen:
        annotate_layer(nodes[layer.name], layer, mapping[layer.name], context.target, ranges[layer.name], [], partition.mappable_weights)
    try:
        yield model
    finally:
        for layer in chosen:
            clear_annotations(nodes[layer.name])


class Emit:
    name = "emit"
    rewrites_graph = False

    def run(self, model: ir.Model, context: PassContext) -> tuple[ir.Model, EmitReport]:
        target = context.target
        partition = context.reports["partition"]
        mapping: Mapping = context.reports["assign"].mapping
        input_ranges = context.reports["calibrate"].input_range
        placement = tile_ids(partition.layers, mapping, context)
        total_weights = partition.mappable_weights
        nodes = {node.name: node for node in model.graph}
        for layer in partition.layers:
            annotate_layer(
                nodes[layer.name], layer, mapping.layers[layer.name], target,
                input_ranges[layer.name], placement.get(layer.name, []), total_weights,
            )  # fmt: skip
        analog = [layer for layer in partition.layers if mapping.layers[layer.name] == ANALOG]
        report = EmitReport(
            target=target.name,
            layers=dict(mapping.layers),
            analog_weight_share=sum(l.weight_count for l in analog) / total_weights,
            analog_mac_share=sum(l.macs for l in analog) / max(partition.mappable_macs, 1),
            tiles_used=sum(len(tiles) for tiles in placement.values()),
            tile_count=target.analog.count,
        )
        model.ir_version = max(model.ir_version, NODE_METADATA_IR_VERSION)
        model.metadata_props["hetmap.version"] = __version__
        model.metadata_props["hetmap.target"] = target.name
        model.metadata_props["hetmap.target_spec"] = json.dumps(dataclasses.asdict(target))
        model.metadata_props["hetmap.summary"] = json.dumps(
            {k: v for k, v in vars(report).items() if k != "layers"}, sort_keys=True
        )
        return model, report

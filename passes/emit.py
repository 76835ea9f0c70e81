"""Emit: the annotated ONNX graph, computing the full-precision function unchanged.

Each mappable node carries `hetmap.*` entries in its metadata_props (option,
bits, tiles, weight share, and what the simulator needs: weight layout, row
block size, calibrated input range); the model carries the target, the
hetmap version and a JSON summary (hetmap.mapping.annotations owns the keys;
README.md lists them). Stock onnxruntime ignores the annotations; `hetmap run`
reads them to build the simulation graph.
"""

from __future__ import annotations

from dataclasses import dataclass

import onnx_ir as ir

from hetmap import __version__
from hetmap.mapping.annotations import layer_annotation, write_layer, write_model
from hetmap.mapping.mapping import ANALOG, Mapping
from hetmap.mapping.placement import place_blocks
from hetmap.pipeline import Pass, PassContext


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


class Emit(Pass):
    name = "emit"
    inputs = ("partition", "calibrate", "assign", "schedule")

    def run(self, model: ir.Model, context: PassContext) -> tuple[ir.Model, EmitReport]:
        target = context.target
        partition = context.reports["partition"]
        mapping: Mapping = context.reports["assign"].mapping
        input_ranges = context.reports["calibrate"].input_range
        placement = tile_ids(partition.layers, mapping, context)
        total_weights = partition.mappable_weights
        nodes = {node.name: node for node in model.graph}
        for layer in partition.layers:
            option, tiles = mapping.layers[layer.name], placement.get(layer.name, [])
            write_layer(
                nodes[layer.name],
                layer_annotation(layer, option, target, input_ranges[layer.name], tiles, total_weights),
            )
        analog = [layer for layer in partition.layers if mapping.layers[layer.name] == ANALOG]
        report = EmitReport(
            target=target.name,
            layers=dict(mapping.layers),
            analog_weight_share=sum(l.weight_count for l in analog) / total_weights,
            analog_mac_share=sum(l.macs for l in analog) / max(partition.mappable_macs, 1),
            tiles_used=sum(len(tiles) for tiles in placement.values()),
            tile_count=target.analog.count,
        )
        summary = {k: v for k, v in vars(report).items() if k != "layers"}
        write_model(model, target, __version__, summary, context.config.metric)
        return model, report

"""The `hetmap.*` annotations: every key, its text format and its type, in one place.

emit writes them into model.mapped.onnx (README.md lists the keys); the
simulator, `hetmap run` and the measurements during compile read them
back. A node's keys describe one mappable layer: its option and what the
simulator needs to rebuild it. The model's keys name the target (its whole
spec, so `hetmap run` needs nothing else) and summarise the compile.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass

import onnx_ir as ir

from hetmap.errors import HetmapError
from hetmap.mapping.mapping import ANALOG, option_bits
from hetmap.targets import Target
from hetmap.targets.schema import target_from_table

PREFIX = "hetmap."
NODE_METADATA_IR_VERSION = 10  # node metadata_props exist from IR version 10 on


@dataclass(frozen=True)
class LayerAnnotation:
    """One mappable node's annotations, typed."""

    target: str
    option: str
    weight: str  # the weight initializer's name
    weight_operand: int  # its input index
    weight_transposed: bool  # the initializer stores the matrix as cols x rows
    block_rows: int  # rows per row block (whole input channels for convolutions)
    activation_rank: int
    input_range: float  # calibrated full scale of the DAC or activation quantiser
    weight_share: float  # this layer's fraction of all mappable weights
    rows: int
    cols: int
    row_blocks: int
    col_blocks: int
    bits: int | None = None  # digital layers: weight bits
    dac_bits: int | None = None  # analog layers: converter resolution
    adc_bits: int | None = None
    tiles: tuple[int, ...] = ()  # analog layers: physical tile ids

    @property
    def analog(self) -> bool:
        return self.option == ANALOG


def layer_annotation(
    layer, option: str, target: Target, input_range: float, tiles, total_weights: int
) -> LayerAnnotation:
    """The annotations of partition layer `layer` under `option`."""
    analog = option == ANALOG
    return LayerAnnotation(
        target=target.name,
        option=option,
        weight=layer.weight,
        weight_operand=layer.weight_operand,
        weight_transposed=layer.weight_transposed,
        block_rows=layer.block_rows,
        activation_rank=layer.activation_rank,
        input_range=input_range,
        weight_share=layer.weight_count / total_weights,
        rows=layer.rows,
        cols=layer.cols,
        row_blocks=layer.row_blocks,
        col_blocks=layer.col_blocks,
        bits=None if analog else option_bits(option),
        dac_bits=target.analog.dac_bits if analog else None,
        adc_bits=target.analog.adc_bits if analog else None,
        tiles=tuple(tiles) if analog else (),
    )


def write_layer(node: ir.Node, annotation: LayerAnnotation) -> None:
    props = node.metadata_props
    props["hetmap.target"] = annotation.target
    props["hetmap.option"] = annotation.option
    if annotation.analog:
        props["hetmap.dac_bits"] = str(annotation.dac_bits)
        props["hetmap.adc_bits"] = str(annotation.adc_bits)
        props["hetmap.tiles"] = ",".join(map(str, annotation.tiles))
    else:
        props["hetmap.bits"] = str(annotation.bits)
    props["hetmap.weight"] = annotation.weight
    props["hetmap.weight_operand"] = str(annotation.weight_operand)
    props["hetmap.weight_transposed"] = str(int(annotation.weight_transposed))
    props["hetmap.block_rows"] = str(annotation.block_rows)
    props["hetmap.activation_rank"] = str(annotation.activation_rank)
    props["hetmap.input_range"] = repr(annotation.input_range)
    props["hetmap.weight_share"] = f"{annotation.weight_share:.6f}"
    props["hetmap.matrix"] = f"{annotation.rows}x{annotation.cols}"
    props["hetmap.blocks"] = f"{annotation.row_blocks}x{annotation.col_blocks}"


def read_layer(node: ir.Node) -> LayerAnnotation | None:
    """The node's annotations, or None when it carries none (not mapped)."""
    props = node.metadata_props
    if "hetmap.option" not in props:
        return None
    rows, cols = map(int, props["hetmap.matrix"].split("x"))
    row_blocks, col_blocks = map(int, props["hetmap.blocks"].split("x"))
    analog = props["hetmap.option"] == ANALOG
    tiles = props.get("hetmap.tiles", "")
    return LayerAnnotation(
        target=props["hetmap.target"],
        option=props["hetmap.option"],
        weight=props["hetmap.weight"],
        weight_operand=int(props["hetmap.weight_operand"]),
        weight_transposed=props["hetmap.weight_transposed"] == "1",
        block_rows=int(props["hetmap.block_rows"]),
        activation_rank=int(props["hetmap.activation_rank"]),
        input_range=float(props["hetmap.input_range"]),
        weight_share=float(props["hetmap.weight_share"]),
        rows=rows,
        cols=cols,
        row_blocks=row_blocks,
        col_blocks=col_blocks,
        bits=None if analog else int(props["hetmap.bits"]),
        dac_bits=int(props["hetmap.dac_bits"]) if analog else None,
        adc_bits=int(props["hetmap.adc_bits"]) if analog else None,
        tiles=tuple(int(tile) for tile in tiles.split(",")) if tiles else (),
    )


def read_mapping(model: ir.Model) -> dict[str, str]:
    """The option of every annotated node, by node name, in graph order."""
    return {node.name: annotation.option for node in model.graph if (annotation := read_layer(node))}


def clear_layer(node: ir.Node) -> None:
    for key in [key for key in node.metadata_props if key.startswith(PREFIX)]:
        del node.metadata_props[key]


def refuse_simulation_graph(model: ir.Model, source: str) -> None:
    """A simulation graph's layers are already tiles and converters: compiling it again would map those."""
    if "hetmap.simulation" in model.metadata_props:
        raise HetmapError(
            f"'{source}' is a simulation graph (its layers are already split into tiles and converters); "
            "compile the model it came from, or model.mapped.onnx beside it"
        )


def clear_annotations(model: ir.Model) -> int:
    """Take an earlier compile's keys off `model` (a model.mapped.onnx compiled again: its mapping is not this
    compile's); returns how many layers carried one."""
    mapped = 0
    for node in ir.traversal.RecursiveGraphIterator(model.graph):
        mapped += "hetmap.option" in node.metadata_props
        clear_layer(node)
    for key in [key for key in model.metadata_props if key.startswith(PREFIX)]:
        del model.metadata_props[key]
    return mapped


def write_model(model: ir.Model, target: Target, version: str, summary: dict, metric: str = "auto") -> None:
    """The model's keys: hetmap's version, the target (name and whole spec), the compile's summary, and the
    metric the compile was told to score with (none for auto), which `hetmap run` then scores with too."""
    model.ir_version = max(model.ir_version, NODE_METADATA_IR_VERSION)
    model.metadata_props["hetmap.version"] = version
    model.metadata_props["hetmap.target"] = target.name
    model.metadata_props["hetmap.target_spec"] = json.dumps(dataclasses.asdict(target))
    model.metadata_props["hetmap.summary"] = json.dumps(summary, sort_keys=True)
    if metric != "auto":
        model.metadata_props["hetmap.metric"] = metric


def compiled_metric(model: ir.Model) -> str:
    """The metric the compile was told to score with; auto where it chose for itself."""
    return model.metadata_props.get("hetmap.metric", "auto")


def read_target(model: ir.Model, source: str) -> Target:
    """The target the model was compiled for, from its spec in the model's metadata."""
    spec = model.metadata_props.get("hetmap.target_spec")
    if spec is None and "hetmap.simulation" in model.metadata_props:
        raise HetmapError(
            f"'{source}' is a simulation graph (one device draw baked in, for plain onnxruntime); hetmap run "
            "simulates the annotated model beside it, model.mapped.onnx"
        )
    if spec is None:
        raise HetmapError(f"'{source}' carries no hetmap annotations; compile it first (hetmap compile)")
    return target_from_table(json.loads(spec), source)


def mark_simulation(model: ir.Model, drift: str, seed: int, draw: int) -> None:
    """A simulation graph's keys: which draw it bakes in; the layer keys and the target spec go."""
    for node in ir.traversal.RecursiveGraphIterator(model.graph):
        clear_layer(node)
    model.metadata_props.pop("hetmap.target_spec", None)
    model.metadata_props["hetmap.simulation"] = json.dumps({"drift": drift, "seed": seed, "draw": draw}, sort_keys=True)

"""Emit: every mappable node carries hetmap.* annotations, the model carries the target and a summary,
and the annotated model still computes the full-precision function in stock onnxruntime.

Models are compiled for hermes with a "mixed" mapping (layers analog, int8, int4, int2 in turn).
"""

import dataclasses
import json

import onnx
import onnx_ir as ir
import pytest

from helpers import EXAMPLE_MODELS, MIXED, assert_same_outputs, compiled_example, example_model, ort_outputs
from hetmap import __version__
from hetmap.mapping.annotations import read_target
from hetmap.targets import load_target

HERMES = load_target("hermes")
COMMON_KEYS = {
    "hetmap.target",
    "hetmap.option",
    "hetmap.weight_share",
    "hetmap.matrix",
    "hetmap.blocks",
    "hetmap.input_range",
    "hetmap.weight",
    "hetmap.block_rows",
}
ANALOG_KEYS = {"hetmap.dac_bits", "hetmap.adc_bits", "hetmap.tiles"}
DIGITAL_KEYS = {"hetmap.bits"}


def mixed(name: str):
    """(annotated ir.Model, reports) of a model compiled for hermes with the mixed mapping."""
    return compiled_example(name, "hermes", "mixed")


def annotated_nodes(model: ir.Model) -> dict[str, dict[str, str]]:
    return {node.name: dict(node.metadata_props) for node in model.graph if "hetmap.option" in node.metadata_props}


def test_every_mappable_node_is_annotated_with_its_option():
    model, reports = mixed("cnn")
    options = {name: props["hetmap.option"] for name, props in annotated_nodes(model).items()}
    assert options == reports["assign"].mapping.layers
    assert list(options.values()) == list(MIXED)  # four layers: one of each


def test_analog_node_carries_converters_and_tiles():
    props = annotated_nodes(mixed("cnn")[0])["node_conv2d"]
    assert COMMON_KEYS | ANALOG_KEYS <= set(props) and not DIGITAL_KEYS & set(props)
    assert (props["hetmap.target"], props["hetmap.option"]) == ("hermes", "analog")
    assert (props["hetmap.dac_bits"], props["hetmap.adc_bits"], props["hetmap.tiles"]) == ("8", "8", "0")
    assert (props["hetmap.matrix"], props["hetmap.blocks"]) == ("9x16", "1x1")


@pytest.mark.parametrize("layer, bits", [("node_conv2d_1", "8"), ("node_conv2d_2", "4"), ("node_linear", "2")])
def test_digital_node_carries_its_bit_width_and_no_tiles(layer, bits):
    props = annotated_nodes(mixed("cnn")[0])[layer]
    assert COMMON_KEYS | DIGITAL_KEYS <= set(props) and not ANALOG_KEYS & set(props)
    assert (props["hetmap.option"], props["hetmap.bits"]) == (f"int{bits}", bits)


def test_input_range_is_the_calibrated_peak_magnitude():
    model, reports = mixed("mlp")
    _, feeds = example_model("mlp")
    ranges = {name: float(props["hetmap.input_range"]) for name, props in annotated_nodes(model).items()}
    assert ranges == reports["calibrate"].input_range
    first = next(iter(ranges))  # the first layer reads the model input itself
    assert ranges[first] == pytest.approx(float(abs(feeds["x"]).max()))


def test_matrix_and_blocks_follow_the_targets_tile_size():
    model, _ = compiled_example("wide_gemm", "tiny", "all-analog")
    props = annotated_nodes(model)["fc"]
    assert (props["hetmap.matrix"], props["hetmap.blocks"], props["hetmap.tiles"]) == ("70x40", "3x2", "0,1,2,3,4,5")


def tile_ids(model: ir.Model) -> list[int]:
    return [
        int(tile)
        for props in annotated_nodes(model).values()
        if "hetmap.tiles" in props
        for tile in props["hetmap.tiles"].split(",")
    ]


def test_tile_ids_are_distinct_across_layers_and_within_the_target():
    tiny = load_target("tiny")
    sixty_four_small_tiles = dataclasses.replace(tiny, analog=dataclasses.replace(tiny.analog, count=64))
    tiles = tile_ids(compiled_example("resnet", sixty_four_small_tiles, "all-analog")[0])
    assert sorted(tiles) == list(range(54))  # 54 tiles' worth of 32x32 blocks, each on its own tile
    tiles = tile_ids(mixed("resnet")[0])
    assert len(tiles) == len(set(tiles)) > 1 and all(0 <= t < HERMES.analog.count for t in tiles)


@pytest.mark.parametrize("name", ["cnn", "resnet", "transformer", "if_and_loop"])
def test_weight_shares_sum_to_one_over_mappable_layers(name):
    shares = [float(props["hetmap.weight_share"]) for props in annotated_nodes(mixed(name)[0]).values()]
    assert sum(shares) == pytest.approx(1.0, abs=1e-5)
    assert all(0 < share <= 1 for share in shares)


def test_model_metadata_carries_version_target_and_summary():
    model, reports = mixed("cnn")
    meta = dict(model.metadata_props)
    assert (meta["hetmap.version"], meta["hetmap.target"]) == (__version__, "hermes")
    summary = json.loads(meta["hetmap.summary"])
    assert set(summary) == {"target", "analog_weight_share", "analog_mac_share", "tiles_used", "tile_count"}
    analog = [p for p in annotated_nodes(model).values() if p["hetmap.option"] == "analog"]
    assert summary["analog_weight_share"] == pytest.approx(
        sum(float(p["hetmap.weight_share"]) for p in analog), abs=1e-5
    )
    assert (summary["tiles_used"], summary["tile_count"]) == (1, 64)


def test_target_spec_reads_back_as_the_same_target():
    model, _ = mixed("mlp")
    assert read_target(model, "model.mapped.onnx") == HERMES


def test_layers_inside_if_and_loop_bodies_are_not_annotated():
    model, _ = mixed("if_and_loop")
    assert set(annotated_nodes(model)) == {"in_fc", "out_fc"}
    bodies = [node for node in ir.traversal.RecursiveGraphIterator(model.graph) if node.graph is not model.graph]
    assert bodies and not any(key.startswith("hetmap.") for node in bodies for key in node.metadata_props)


@pytest.mark.parametrize("name", EXAMPLE_MODELS)
def test_annotated_model_is_checker_clean_and_computes_the_original_outputs(name):
    proto, feeds = example_model(name)
    annotated = onnx.load_from_string(ir.to_proto(mixed(name)[0]).SerializeToString())
    onnx.checker.check_model(annotated, full_check=True)
    assert_same_outputs(ort_outputs(proto, feeds), ort_outputs(annotated, feeds))

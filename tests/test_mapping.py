"""The mapping: one option per mappable layer, given as a preset or a JSON file; compile writes it back.

The model is messy.gemm_trans_b (layers `trans_b` then `plain`) on the `tiny`
target unless a test says otherwise.
"""

import json
from pathlib import Path

import onnx
import pytest

import messy_models as messy
from helpers import assert_one_line_error
from hetmap.mapping.mapping import FORMAT, Mapping, load_mapping
from hetmap.models import reference_path

LAYERS = ("trans_b", "plain")


@pytest.fixture
def model_file(tmp_path):
    onnx.save(messy.gemm_trans_b(), tmp_path / "model.onnx")
    return "model.onnx"


def write_mapping(layers: dict, path: str = "mapping.in.json", format: str = FORMAT) -> str:
    Path(path).write_text(json.dumps({"format": format, "layers": layers}))
    return path


def compile_with(hetmap, mapping: str, out: str = "out", model: str = "model.onnx", target: str = "tiny"):
    return hetmap("compile", model, "-t", target, "-o", out, "--mapping", mapping)


def annotated_options(path: str) -> dict[str, str]:
    """hetmap.option of every annotated node of a compiled model."""
    graph = onnx.load(path).graph
    options = {}
    for node in graph.node:
        props = {entry.key: entry.value for entry in node.metadata_props}
        if "hetmap.option" in props:
            options[node.name] = props["hetmap.option"]
    return options


# Presets and files.


@pytest.mark.parametrize(
    "preset, option", [("all-analog", "analog"), ("all-digital-int8", "int8"), ("all-digital-int4", "int4")]
)
def test_preset_gives_every_mappable_layer_one_option(hetmap, model_file, preset, option):
    assert compile_with(hetmap, preset).exit_code == 0
    assert annotated_options("out/model.mapped.onnx") == {name: option for name in LAYERS}


def test_without_a_mapping_the_solver_chooses_one_for_every_layer(hetmap, model_file):
    assert hetmap("compile", model_file, "-t", "tiny", "-o", "out").exit_code == 0
    assert json.loads(Path("out/reports/assign.json").read_text())["source"] == "solver"
    assert set(annotated_options("out/model.mapped.onnx")) == {"trans_b", "plain"}


def test_mapping_file_sets_each_layer_by_onnx_node_name(hetmap, model_file):
    assert compile_with(hetmap, write_mapping({"trans_b": "int2", "plain": "analog"})).exit_code == 0
    assert annotated_options("out/model.mapped.onnx") == {"trans_b": "int2", "plain": "analog"}


def test_compile_writes_the_mapping_as_json_in_the_documented_format(hetmap, model_file):
    assert compile_with(hetmap, write_mapping({"plain": "int4", "trans_b": "int8"})).exit_code == 0
    written = json.loads(Path("out/mapping.json").read_text())
    assert written == {"format": "hetmap.mapping/1", "layers": {"trans_b": "int8", "plain": "int4"}}
    assert list(written["layers"]) == list(LAYERS)  # graph order, whatever order the input had


def test_written_mapping_loads_back_as_the_same_mapping(hetmap, model_file):
    assert compile_with(hetmap, write_mapping({"trans_b": "analog", "plain": "int2"})).exit_code == 0
    assert load_mapping(Path("out/mapping.json")) == Mapping({"trans_b": "analog", "plain": "int2"})


def test_mapping_round_trips_through_json(tmp_path):
    mapping = Mapping({"conv": "analog", "fc": "int4"})
    (tmp_path / "m.json").write_text(json.dumps(mapping.to_json()))
    assert load_mapping(tmp_path / "m.json") == mapping


def test_written_mapping_fed_back_gives_the_identical_annotated_model(hetmap, model_file):
    assert compile_with(hetmap, write_mapping({"trans_b": "int4", "plain": "analog"})).exit_code == 0
    assert compile_with(hetmap, "out/mapping.json", out="again").exit_code == 0
    assert Path("again/model.mapped.onnx").read_bytes() == Path("out/model.mapped.onnx").read_bytes()
    assert Path("again/mapping.json").read_text() == Path("out/mapping.json").read_text()


def test_unnamed_nodes_get_names_that_the_written_mapping_uses(hetmap):
    proto = messy.gemm_trans_b()
    for node in proto.graph.node:
        node.name = ""
    onnx.save(proto, "model.onnx")
    assert compile_with(hetmap, "all-digital-int8").exit_code == 0
    layers = json.loads(Path("out/mapping.json").read_text())["layers"]
    assert len(layers) == 2 and all(layers)
    assert annotated_options("out/model.mapped.onnx") == layers
    assert compile_with(hetmap, "out/mapping.json", out="again").exit_code == 0


# Bad mappings: one line naming the file and the fault, a non-zero exit, nothing written.


def test_mapping_that_names_an_unknown_node(hetmap, model_file):
    path = write_mapping({"trans_b": "analog", "plain": "analog", "ghost": "int8"})
    result = compile_with(hetmap, path)
    assert_one_line_error(result, f"mapping '{path}' names 'ghost', which is not a mappable layer of this model")
    assert not Path("out").exists()


def test_mapping_with_an_option_the_target_lacks(hetmap, model_file):
    result = compile_with(hetmap, write_mapping({"trans_b": "int16", "plain": "analog"}))
    assert_one_line_error(result, "layer 'trans_b' has option 'int16'", "target 'tiny' offers analog, int8, int4, int2")


def test_preset_with_a_width_the_target_lacks(hetmap, model_file):
    Path("int8only.toml").write_text(
        'name = "int8only"\ndescription = "d"\nclock_mhz = 100.0\n'
        "[analog]\nrows = 32\ncols = 32\ncount = 8\ndac_bits = 8\nadc_bits = 8\nenergy_per_mac_pj = 0.1\n"
        "energy_per_dac_pj = 1.0\nenergy_per_adc_pj = 2.0\nmvm_latency_ns = 100.0\n"
        "[[digital]]\nbits = 8\nenergy_per_mac_pj = 0.2\nmacs_per_cycle = 16\n"
    )
    result = compile_with(hetmap, "all-digital-int4", target="int8only.toml")
    assert_one_line_error(result, "mapping 'all-digital-int4'", "option 'int4'", "offers analog, int8")


def test_mapping_that_misses_a_layer(hetmap, model_file):
    result = compile_with(hetmap, write_mapping({"trans_b": "analog"}))
    assert_one_line_error(result, "gives no option for layer 'plain'")


def test_mapping_file_that_is_not_json(hetmap, model_file):
    Path("mapping.json").write_text("trans_b: analog\n")
    assert_one_line_error(compile_with(hetmap, "mapping.json"), "mapping file 'mapping.json' is not valid JSON")


@pytest.mark.parametrize(
    "content",
    [
        {"format": "hetmap.mapping/2", "layers": {"trans_b": "analog", "plain": "analog"}},
        {"layers": {"trans_b": "analog", "plain": "analog"}},
        {"format": FORMAT, "layers": ["analog", "analog"]},
        ["analog", "analog"],
    ],
    ids=["wrong format", "no format", "layers not an object", "a list"],
)
def test_mapping_file_with_a_wrong_format(hetmap, model_file, content):
    Path("mapping.json").write_text(json.dumps(content))
    result = compile_with(hetmap, "mapping.json")
    assert_one_line_error(result, "mapping file 'mapping.json' must be", '"format": "hetmap.mapping/1"')


def test_mapping_that_is_neither_a_preset_nor_a_file(hetmap, model_file):
    result = compile_with(hetmap, "all-digital-int3")
    assert_one_line_error(result, "mapping 'all-digital-int3' is neither a preset", "all-analog, all-digital-int8")


def test_analog_layers_that_do_not_fit_the_targets_tiles(hetmap):
    result = compile_with(hetmap, "all-analog", model=reference_path("cnn.onnx"))
    assert_one_line_error(result, "22 tiles' worth of weights on analog but the target has 8", "map fewer layers")
    assert not Path("out").exists()


def test_the_same_model_fits_once_its_largest_layers_are_digital(hetmap):
    layers = {"node_conv2d": "analog", "node_conv2d_1": "int8", "node_conv2d_2": "int8", "node_linear": "analog"}
    result = compile_with(hetmap, write_mapping(layers), model=reference_path("cnn.onnx"))
    assert result.exit_code == 0, result.stderr
    assert json.loads(Path("out/reports/emit.json").read_text())["tiles_used"] == 1 + 4

"""schedule: physical tiles for every analog weight block, a timed dataflow, the critical path, the timeline PNG.

The schedule pass reads only the partition report and the assign report's
mapping, so the mapping is given here directly (no sensitivity, no solver).
"""

import copy
import dataclasses
import functools
import json
import re
from types import SimpleNamespace

import matplotlib.image
import networkx as nx
import numpy as np
import onnx_ir as ir
import pytest
from onnx import helper

import messy_models as messy
from helpers import MIXED, as_target, example_model, layers_by_name
from hetmap.errors import HetmapError, NonFiniteError
from hetmap.graph.modelio import write_bytes_atomic
from hetmap.graph.shapes import resolve_input_shapes
from hetmap.mapping.cost import mapping_costs
from hetmap.mapping.mapping import Mapping
from hetmap.passes.calibrate import Calibrate
from hetmap.passes.canonicalize import Canonicalize
from hetmap.passes.emit import Emit
from hetmap.passes.partition import Partition
from hetmap.passes.schedule import Schedule, dataflow_graph
from hetmap.pipeline import CompileConfig, PassContext, report_to_dict, run_pipeline
from hetmap.report.timeline import render_timeline
from hetmap.targets import load_target
from messy_models import init, tensor

TINY = load_target("tiny")
TINY_64 = dataclasses.replace(TINY, analog=dataclasses.replace(TINY.analog, count=64))


def canonical_partition(proto, target, input_shapes=None, extra_passes=()):
    """(canonical ir.Model, context holding the partition report) of `proto` on `target`."""
    model = ir.serde.deserialize_model(copy.deepcopy(proto))
    shapes = resolve_input_shapes(model, None, input_shapes or {})
    context = PassContext(target=as_target(target), config=CompileConfig(input_shapes=shapes))
    model, reports = run_pipeline(model, [Canonicalize(), Partition(), *extra_passes], context)
    return model, context.with_reports(reports)


@functools.cache
def partitioned(name: str, target="hermes"):
    """An example model canonicalised and partitioned (shared: never modify it)."""
    proto, feeds = example_model(name)
    return canonical_partition(proto, target, {k: v.shape for k, v in feeds.items()})


def mapping_for(layers, mapping) -> Mapping:
    """`mapping`: {layer: option}, one option for every layer, or "mixed" (analog, int8, int4, int2 in turn)."""
    if isinstance(mapping, dict):
        return Mapping(dict(mapping))
    cycle = MIXED if mapping == "mixed" else (mapping,)
    return Mapping({layer.name: cycle[i % len(cycle)] for i, layer in enumerate(layers)})


def schedule(model, context, mapping):
    """Run the schedule pass after an assign report holding `mapping`: (report, partition report)."""
    partition = context.reports["partition"]
    reports = {**context.reports, "assign": SimpleNamespace(mapping=mapping_for(partition.layers, mapping))}
    _, report = Schedule().run(model, dataclasses.replace(context, reports=reports))
    return report, partition


def scheduled(name: str, target="hermes", mapping="mixed"):
    return schedule(*partitioned(name, target), mapping)


def graph_of(name: str, target="hermes") -> nx.DiGraph:
    return dataflow_graph(partitioned(name, target)[0])


CASES = [
    ("cnn", "hermes", "mixed"),
    ("resnet", "hermes", "mixed"),
    ("resnet", TINY_64, "analog"),
    ("resnet", "hermes", "int8"),
    ("transformer", "hermes", "mixed"),
    ("if_and_loop", "tiny", "mixed"),
]
CASE_IDS = ["cnn-mixed", "resnet-mixed", "resnet-analog", "resnet-int8", "transformer-mixed", "if_and_loop"]


# Placement


@pytest.mark.parametrize("name, target, mapping", CASES, ids=CASE_IDS)
def test_no_tile_is_used_twice_and_every_id_is_on_the_chip(name, target, mapping):
    report, _ = scheduled(name, target, mapping)
    tiles = [block.tile for layer in report.layers for block in layer.tiles]
    assert len(tiles) == len(set(tiles)) == report.tiles_used
    assert all(0 <= tile < report.tile_count == as_target(target).analog.count for tile in tiles)


@pytest.mark.parametrize("name, target, mapping", CASES, ids=CASE_IDS)
def test_each_analog_layer_gets_one_tile_per_weight_block(name, target, mapping):
    report, partition = scheduled(name, target, mapping)
    layers = layers_by_name(partition)
    for scheduled_layer in report.layers:
        layer = layers[scheduled_layer.name]
        blocks = [(block.row_block, block.col_block) for block in scheduled_layer.tiles]
        if scheduled_layer.option == "analog":
            assert blocks == [(r, c) for r in range(layer.row_blocks) for c in range(layer.col_blocks)]
        else:
            assert blocks == []


def test_blocks_record_the_rows_and_columns_they_occupy():
    report, _ = schedule(*canonical_partition(messy.wide_gemm(), "tiny"), "analog")  # 70x40 on 32x32 tiles
    assert [(b.tile, b.rows, b.cols) for b in report.layers[0].tiles] == [
        (0, 32, 32),
        (1, 32, 8),
        (2, 32, 32),
        (3, 32, 8),
        (4, 6, 32),
        (5, 6, 8),
    ]


def test_convolution_row_blocks_hold_whole_channels():
    weights = [init("conv.W", np.ones((4, 8, 3, 3), np.float32))]  # 72 rows: 3 channels (27 rows) per 32-row tile
    nodes = [helper.make_node("Conv", ["x", "conv.W"], ["y"], name="conv", kernel_shape=[3, 3])]
    proto = messy.model(nodes, [tensor("x", [1, 8, 5, 5])], [tensor("y", [1, 4, 3, 3])], weights)
    report, _ = schedule(*canonical_partition(proto, "tiny"), "analog")
    assert [block.rows for block in report.layers[0].tiles] == [27, 27, 18]


def test_too_many_tiles_names_the_need_and_a_mapping_that_fits():
    model, context = partitioned("cnn", "tiny")  # all-analog needs 22 of 8 tiles
    with pytest.raises(HetmapError) as raised:
        schedule(model, context, "analog")
    message = str(raised.value)
    assert len(message.splitlines()) == 1
    assert "22 tiles' worth of weights on analog but the target has 8" in message
    assert "leave out --mapping" in message
    suggested = re.search(r"that sets (.*) to (int\d)", message)
    moved = re.findall(r"(\S+) \(\d+ tiles\)", suggested.group(1))
    report, _ = schedule(
        model,
        context,
        {
            layer.name: suggested.group(2) if layer.name in moved else "analog"
            for layer in context.reports["partition"].layers
        },
    )
    assert report.tiles_used <= 8


def test_figures_that_overflow_stop_the_schedule_naming_the_layer():
    """A finite but huge target figure (1e308 ns a pass) gives an infinite latency: one line, not a plot's crash."""
    huge = dataclasses.replace(TINY_64, analog=dataclasses.replace(TINY_64.analog, mvm_latency_ns=1e308))
    model, context = canonical_partition(example_model("cnn")[0], huge, {"x": example_model("cnn")[1]["x"].shape})
    with pytest.raises(NonFiniteError, match=r"schedule: layer '.*'s latency on target 'tiny' .* holds inf"):
        schedule(model, context, "analog")


# Dataflow and timing


@pytest.mark.parametrize("name, target, mapping", CASES, ids=CASE_IDS)
def test_a_layer_starts_after_every_layer_it_depends_on_has_ended(name, target, mapping):
    report, _ = scheduled(name, target, mapping)
    graph, times = graph_of(name, target), {layer.name: layer for layer in report.layers}
    for layer in report.layers:
        assert layer.ready_ns <= layer.start_ns and layer.end_ns == layer.start_ns + layer.latency_ns
        for ancestor in nx.ancestors(graph, layer.name) & set(times):
            assert layer.ready_ns >= times[ancestor].end_ns


@pytest.mark.parametrize("name, target, mapping", CASES, ids=CASE_IDS)
def test_layers_on_one_digital_unit_never_overlap(name, target, mapping):
    report, _ = scheduled(name, target, mapping)
    for unit in {layer.unit for layer in report.layers} - {"analog"}:
        on_unit = sorted((l for l in report.layers if l.unit == unit), key=lambda l: l.start_ns)
        assert all(a.end_ns <= b.start_ns for a, b in zip(on_unit, on_unit[1:]))


def test_a_layer_waits_for_its_digital_unit():
    report, _ = scheduled("resnet", "hermes", "int8")  # the shortcut conv is ready with conv1 but shares the unit
    waited = [layer for layer in report.layers if layer.start_ns > layer.ready_ns]
    assert [layer.name for layer in waited] == ["/blocks/blocks.1/shortcut/shortcut.0/Conv"]


def test_independent_analog_layers_run_at_once_and_digital_ones_in_turn():
    model, context = canonical_partition(messy.attention_scores(), "hermes")  # q_proj, k_proj both read x
    analog, _ = schedule(model, context, "analog")
    assert [(l.start_ns, l.end_ns) for l in analog.layers] == [(0.0, analog.makespan_ns)] * 2
    digital, _ = schedule(model, context, "int8")
    first, second = digital.layers
    assert (first.start_ns, second.start_ns, second.ready_ns) == (0.0, first.end_ns, 0.0)


def test_values_read_inside_if_bodies_are_dependencies():
    then_branch = helper.make_graph([helper.make_node("Relu", ["h"], ["t"])], "then", [], [tensor("t", [1, 8])])
    else_branch = helper.make_graph([helper.make_node("Neg", ["h"], ["e"])], "else", [], [tensor("e", [1, 8])])
    nodes = [
        helper.make_node("Gemm", ["x", "in.W"], ["h"], name="in_fc"),
        helper.make_node("If", ["flag"], ["b"], name="branch", then_branch=then_branch, else_branch=else_branch),
        helper.make_node("Gemm", ["b", "out.W"], ["y"], name="out_fc"),
    ]
    weights = [init("in.W", np.ones((4, 8), np.float32)), init("out.W", np.ones((8, 3), np.float32))]
    inputs = [tensor("x", [1, 4]), tensor("flag", [], messy.BOOL)]
    model, context = canonical_partition(messy.model(nodes, inputs, [tensor("y", [1, 3])], weights), "hermes")
    assert ("in_fc", "branch") in dataflow_graph(model).edges
    report, _ = schedule(model, context, "analog")
    in_fc, out_fc = report.layers
    assert out_fc.start_ns == in_fc.end_ns and report.critical_path == ["in_fc", "out_fc"]


# Critical path and costs


@pytest.mark.parametrize("name, target, mapping", CASES, ids=CASE_IDS)
def test_critical_path_is_a_gapless_chain_of_dependent_layers_ending_at_the_makespan(name, target, mapping):
    report, _ = scheduled(name, target, mapping)
    graph, times = graph_of(name, target), {layer.name: layer for layer in report.layers}
    path = [times[name] for name in report.critical_path]
    assert path[0].start_ns == 0.0 and path[-1].end_ns == report.makespan_ns == max(t.end_ns for t in times.values())
    for before, after in zip(path, path[1:]):
        assert after.start_ns == before.end_ns
        assert nx.has_path(graph, before.name, after.name) or before.unit == after.unit != "analog"
    assert sum(layer.latency_ns for layer in path) == pytest.approx(report.makespan_ns)
    assert {l.name for l in report.layers if l.critical} == set(report.critical_path)


@pytest.mark.parametrize("name, target, mapping", CASES, ids=CASE_IDS)
def test_latency_and_energy_are_the_cost_models(name, target, mapping):
    report, partition = scheduled(name, target, mapping)
    target = as_target(target)
    costs = mapping_costs(partition.layers, {l.name: l.option for l in report.layers}, target)
    for scheduled_layer in report.layers:
        cost = costs[scheduled_layer.name]
        assert (scheduled_layer.latency_ns, scheduled_layer.energy_pj) == (cost.latency_ns, cost.energy_pj)
        assert scheduled_layer.energy_breakdown_pj == cost.breakdown()
    assert report.total_energy_pj == pytest.approx(sum(l.energy_pj for l in report.layers))
    assert sum(report.energy_breakdown_pj.values()) == pytest.approx(report.total_energy_pj)
    int8 = mapping_costs(partition.layers, {l.name: "int8" for l in partition.layers}, target).values()
    assert report.digital_baseline_option == "int8"
    assert report.digital_baseline_energy_pj == pytest.approx(sum(c.energy_pj for c in int8))
    assert report.digital_baseline_latency_ns == pytest.approx(sum(c.latency_ns for c in int8))


def test_report_lists_layers_in_graph_order_with_the_documented_keys():
    report, partition = scheduled("cnn")
    data = json.loads(json.dumps(report_to_dict(report)))
    assert set(data) == {
        "target",
        "tile_count",
        "tiles_used",
        "makespan_ns",
        "pipeline_interval_ns",
        "throughput_per_s",
        "total_energy_pj",
        "energy_breakdown_pj",
        "digital_baseline_option",
        "digital_baseline_energy_pj",
        "digital_baseline_energy_breakdown_pj",
        "digital_baseline_latency_ns",
        "critical_path",
        "zero_cost_nodes",
        "layers",
    }
    assert [layer["name"] for layer in data["layers"]] == [layer.name for layer in partition.layers]
    assert set(data["layers"][0]) == {
        "name",
        "op_type",
        "option",
        "unit",
        "tiles",
        "ready_ns",
        "start_ns",
        "end_ns",
        "latency_ns",
        "energy_pj",
        "energy_breakdown_pj",
        "tile_utilisation",
        "critical",
    }
    assert data["layers"][0]["tiles"] == [{"tile": 0, "row_block": 0, "col_block": 0, "rows": 9, "cols": 16}]
    assert [layer["unit"] for layer in data["layers"]] == list(MIXED)


# Emit reads the placement


def emitted_tiles(mapping: str, edit_schedule=None) -> dict[str, str]:
    """hetmap.tiles of each analog node after schedule (its report edited by `edit_schedule`) then emit."""
    proto, feeds = example_model("resnet")
    model, context = canonical_partition(proto, TINY_64, {"x": feeds["x"].shape}, [Calibrate()])
    reports = {
        **context.reports,
        "assign": SimpleNamespace(mapping=mapping_for(context.reports["partition"].layers, mapping)),
    }
    passes = [Emit()] if edit_schedule is None else [Schedule(), Emit()]
    for graph_pass in passes:
        model, reports[graph_pass.name] = graph_pass.run(model, context.with_reports(reports))
        if graph_pass.name == "schedule":
            edit_schedule(reports["schedule"])
    return {
        node.name: node.metadata_props["hetmap.tiles"] for node in model.graph if "hetmap.tiles" in node.metadata_props
    }


def test_emit_annotates_the_schedules_tiles():
    def reverse(report):
        for layer in report.layers:
            for block in layer.tiles:
                block.tile = 63 - block.tile

    plain = emitted_tiles("analog")
    assert emitted_tiles("analog", edit_schedule=lambda report: None) == plain  # the same placement either way
    reversed_tiles = emitted_tiles("analog", edit_schedule=reverse)
    assert reversed_tiles == {
        name: ",".join(str(63 - int(t)) for t in tiles.split(",")) for name, tiles in plain.items()
    }


# Timeline picture


def test_timeline_png_is_written_atomically_from_the_json(tmp_path):
    report = json.loads(json.dumps(report_to_dict(scheduled("resnet", "hermes", "mixed")[0])))
    before = copy.deepcopy(report)
    path = tmp_path / "reports" / "schedule.png"
    write_bytes_atomic(path, render_timeline(report))
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100
    assert report == before  # drawing does not touch the data
    assert [p.name for p in path.parent.iterdir()] == ["schedule.png"]  # no temporary file left behind

"""The simulation graph: the annotated model with converters, quantisers and device noise as standard ONNX ops.

"Perfect" hardware (16-bit converters, a wide ADC range, no device noise,
tiny's 32x32 tiles so that layers split into row blocks) must reproduce the
full-precision outputs; real hardware (hermes) must degrade them as its
widths and drift say.
"""

import dataclasses

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort
import pytest

from helpers import (
    EXAMPLE_MODELS,
    as_target,
    compile_in_memory,
    compiled_example,
    example_model,
    ort_outputs,
    reference_path,
)
from hetmap.graph.data import Dataset
from hetmap.sim import adc, sessions
from hetmap.sim import scorer as scorer_module
from hetmap.sim import simulation as simulation_module
from hetmap.sim.draws import draw_generators
from hetmap.sim.scorer import Scorer
from hetmap.sim.simulation import build_simulation
from hetmap.targets import load_target

HERMES = load_target("hermes")
_TINY = load_target("tiny")
PERFECT = dataclasses.replace(
    _TINY,
    name="perfect",
    analog=dataclasses.replace(
        _TINY.analog,
        dac_bits=16,
        adc_bits=16,
        adc_bound=50.0,
        count=1000,
        noise=dataclasses.replace(_TINY.analog.noise, prog_noise_scale=0.0, read_noise_scale=0.0, drift_scale=0.0),
    ),
)
ROOMY_TINY = dataclasses.replace(_TINY, analog=dataclasses.replace(_TINY.analog, count=1000))  # real converters
ONE_YEAR_S = 365.25 * 86400


def simulation_proto(model: ir.Model, target) -> onnx.ModelProto:
    return ir.to_proto(build_simulation(model, target).model)


def relative_error(want: np.ndarray, got: np.ndarray) -> float:
    """Largest deviation relative to the output's largest magnitude."""
    return float(np.abs(got - want).max() / np.abs(want).max())


def simulated_outputs(name: str, target, mapping: str) -> tuple[np.ndarray, np.ndarray]:
    """(full-precision, simulated) first output of an example model on its own inputs, clean weights."""
    proto, feeds = example_model(name)
    simulated = simulation_proto(compiled_example(name, target, mapping)[0], as_target(target))
    return ort_outputs(proto, feeds)[0], ort_outputs(simulated, feeds)[0]


# The graph itself.


@pytest.mark.parametrize("name", ["cnn", "transformer", "if_and_loop", "matmul_constant_left", "conv_transpose_bn"])
def test_simulation_graph_has_only_standard_deterministic_ops_and_passes_the_checker(name, tmp_path):
    proto = simulation_proto(compiled_example(name, "hermes", "mixed")[0], HERMES)
    onnx.checker.check_model(proto, full_check=True)
    nodes = list(proto.graph.node)
    assert {node.domain for node in nodes} <= {"", "ai.onnx"}
    assert not {node.op_type for node in nodes} & {
        "RandomNormal",
        "RandomUniform",
        "RandomNormalLike",
        "RandomUniformLike",
        "Multinomial",
        "Bernoulli",
    }
    # converters as float Round/Clip, DACs as QuantizeLinear then Cast: no QDQ pair to fuse into integer kernels
    assert {"Round", "Clip", "QuantizeLinear"} <= {node.op_type for node in nodes}
    assert "DequantizeLinear" not in {node.op_type for node in nodes if node.name.endswith("dac_codes")}
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])
    optimized = {node.op_type for node in onnx.load(options.optimized_model_filepath).graph.node}
    assert not optimized & {"QLinearConv", "ConvInteger", "MatMulInteger", "QLinearMatMul", "MatMulIntegerToFloat"}


@pytest.mark.parametrize(
    "name, target",
    [("wide_gemm", "tiny"), ("mlp", ROOMY_TINY), ("matmul_constant_left", "hermes"), ("gemm_trans_b", "hermes")],
    ids=["wide_gemm-tiny", "mlp-tiny", "matmul_constant_left-hermes", "gemm_trans_b-hermes"],
)
def test_simulation_with_8_bit_converters_runs_in_stock_onnxruntime(name, target):
    """Row blocks sliced from, and transposes of, quantised inputs (onnxruntime's QDQ propagation once failed on them)."""
    want, got = simulated_outputs(name, target, "all-analog")
    assert relative_error(want, got) < 0.1


def outputs_at(payload: bytes, feeds: dict, level) -> np.ndarray:
    options = ort.SessionOptions()
    options.graph_optimization_level = level
    return ort.InferenceSession(payload, options, providers=["CPUExecutionProvider"]).run(None, feeds)[0]


@pytest.mark.parametrize("mapping", ["all-analog", "mixed"])
def test_baked_simulation_computes_the_same_with_and_without_onnxruntime_optimisations(mapping):
    proto, feeds = example_model("cnn")
    payload = simulation_proto(compiled_example("cnn", "hermes", mapping)[0], HERMES).SerializeToString()
    as_written = outputs_at(payload, feeds, ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    optimised = outputs_at(payload, feeds, ort.GraphOptimizationLevel.ORT_ENABLE_ALL)
    np.testing.assert_allclose(optimised, as_written, rtol=1e-4, atol=1e-4 * np.abs(as_written).max())


def test_simulation_keeps_the_models_input_and_output_names():
    proto, _ = example_model("matmul_constant_left")
    simulated = simulation_proto(compiled_example("matmul_constant_left", "hermes", "all-analog")[0], HERMES)
    assert [v.name for v in simulated.graph.input] == ["x"] and [v.name for v in simulated.graph.output] == ["y"]


def test_a_layer_larger_than_a_tile_becomes_one_mvm_and_adc_per_row_block():
    model, _ = compiled_example("wide_gemm", PERFECT, "all-analog")  # 70x40 on 32x32 tiles
    simulation = build_simulation(model, PERFECT)
    assert [block.matrix.shape for block in simulation.blocks] == [(32, 40), (32, 40), (6, 40)]
    assert [len(block.tiles()) for block in simulation.blocks] == [2, 2, 2]
    ops = [node.op_type for node in ir.to_proto(simulation.model).graph.node]
    assert ops.count("MatMul") == 3 and ops.count("Sum") == 1


# Perfect hardware reproduces the full-precision model.


@pytest.mark.parametrize("name", EXAMPLE_MODELS)
def test_perfect_hardware_reproduces_the_full_precision_outputs(name):
    want, got = simulated_outputs(name, PERFECT, "all-analog")
    assert relative_error(want, got) < 1e-2


def test_perfect_hardware_reproduces_the_outputs_after_noise_free_programming_and_drift():
    proto, feeds = example_model("resnet")
    simulation = build_simulation(compiled_example("resnet", PERFECT, "all-analog")[0], PERFECT)
    programmed = simulation.program(np.random.default_rng(0))
    simulation.bake(simulation.read(programmed, ONE_YEAR_S, np.random.default_rng(1)))
    assert relative_error(ort_outputs(proto, feeds)[0], ort_outputs(ir.to_proto(simulation.model), feeds)[0]) < 1e-2


# Digital widths.


def test_narrower_digital_widths_give_larger_errors():
    errors = [
        relative_error(*simulated_outputs("mlp", HERMES, mapping))
        for mapping in ("all-digital-int8", "all-digital-int4", "int2")
    ]
    assert 0 < errors[0] < errors[1] < errors[2]
    assert errors[0] < 0.03  # INT8 weights and activations: a slight change


def initializers_by_suffix(proto: onnx.ModelProto, suffix: str) -> list[onnx.TensorProto]:
    return [tensor for tensor in proto.graph.initializer if tensor.name.endswith(suffix)]


def test_int4_weights_are_int4_initializers_behind_dequantize_linear():
    proto = simulation_proto(compiled_example("cnn", "hermes", "all-digital-int4")[0], HERMES)
    stored = initializers_by_suffix(proto, "/weight_int4")
    assert len(stored) == 4 and all(t.data_type == onnx.TensorProto.INT4 for t in stored)
    consumers = {node.input[0]: node.op_type for node in proto.graph.node if node.input}
    assert all(consumers[t.name] == "DequantizeLinear" for t in stored)
    assert all(np.abs(onnx.numpy_helper.to_array(t).astype(np.int8)).max() <= 7 for t in stored)


def test_int2_weights_are_int8_initializers_within_plus_minus_one():
    proto = simulation_proto(compiled_example("cnn", "hermes", "int2")[0], HERMES)
    stored = initializers_by_suffix(proto, "/weight_int2")
    assert len(stored) == 4 and all(t.data_type == onnx.TensorProto.INT8 for t in stored)
    values = np.concatenate([onnx.numpy_helper.to_array(t).ravel() for t in stored])
    assert set(np.unique(values)) == {-1, 0, 1}


def test_a_model_simulated_before_simulates_again_under_numbered_names():
    """A model.sim.onnx compiled again holds every name its simulation would give: the new ones are numbered."""
    _, feeds = example_model("cnn")
    simulated = simulation_proto(compiled_example("cnn", "hermes", "all-digital-int8")[0], HERMES)
    again = simulation_proto(compile_in_memory(simulated, "hermes", "all-digital-int8", feeds)[0], HERMES)
    onnx.checker.check_model(again, full_check=True)
    names = [value.name for value in again.graph.initializer] + [o for node in again.graph.node for o in node.output]
    assert len(names) == len(set(names)) and any(name.endswith("/act_step_1") for name in names)
    want = ort_outputs(simulated, feeds)[0]
    assert relative_error(want, ort_outputs(again, feeds)[0]) < 0.05  # INT8 twice: a slight change again


# Sessions over the simulation graph.


def test_a_fed_matrix_folds_its_dequantize_linear_whatever_its_size(monkeypatch):
    """Folded once in numpy and fed: the outputs of onnxruntime's own DequantizeLinear, bit for bit."""
    simulation = build_simulation(compiled_example("cnn", "hermes", "all-digital-int4")[0], HERMES)
    _, feeds = example_model("cnn")
    monkeypatch.setattr(sessions, "FOLD_DEQUANTIZE_BYTES", 0)  # no constant weight folds
    fed = sessions.session_for(simulation.model, set(), feed_matrices=True)
    kept = sessions.session_for(simulation.model, set())
    matrices = {node.inputs[1].name for node in simulation.model.graph if node.op_type in ("Gemm", "MatMul")}
    assert matrices and set(fed.hetmap_feeds) == matrices
    assert all(array.dtype == np.float32 for array in fed.hetmap_feeds.values())
    output = fed.get_outputs()[0].name
    np.testing.assert_array_equal(fed.run([output], {**feeds, **fed.hetmap_feeds})[0], kept.run([output], feeds)[0])


def test_a_session_over_weights_large_once_dequantised_runs_without_the_memory_arena(monkeypatch):
    """Stored as INT4 the weights are small, but each run dequantises them: onnxruntime's arena would keep that."""
    model = build_simulation(compiled_example("cnn", "hermes", "all-digital-int4")[0], HERMES).model
    stored = sum(value.const_value.nbytes for value in model.graph.initializers.values())
    monkeypatch.setattr(sessions, "ARENA_BELOW_BYTES", 2 * stored)
    assert not sessions.session_for(model, set()).get_session_options().enable_cpu_mem_arena
    monkeypatch.setattr(sessions, "ARENA_BELOW_BYTES", 100 * stored)
    assert sessions.session_for(model, set()).get_session_options().enable_cpu_mem_arena


# Analog device noise.


def draw(name: str, seed: int, t_inference_s: float = 3600.0) -> tuple[dict, np.ndarray]:
    """One Monte-Carlo chip of an example model on hermes, read at t: (block weights, outputs)."""
    proto, feeds = example_model(name)
    simulation = build_simulation(compiled_example(name, "hermes", "all-analog")[0], HERMES)
    weights = simulation.read(
        simulation.program(np.random.default_rng(seed)), t_inference_s, np.random.default_rng([seed, 1])
    )
    simulation.bake(weights)
    payload = ir.to_proto(simulation.model).SerializeToString()
    return weights, outputs_at(payload, feeds, ort.GraphOptimizationLevel.ORT_DISABLE_ALL)


def test_the_same_seed_gives_the_same_weights_and_outputs():
    (weights, outputs), (again, outputs_again) = draw("cnn", 3), draw("cnn", 3)
    assert weights.keys() == again.keys()
    assert all(np.array_equal(weights[name], again[name]) for name in weights)
    assert np.array_equal(outputs, outputs_again)


def test_different_seeds_give_different_weights_and_outputs():
    (weights, outputs), (other, other_outputs) = draw("cnn", 3), draw("cnn", 4)
    assert all(not np.array_equal(weights[name], other[name]) for name in weights)
    assert not np.array_equal(outputs, other_outputs)


def test_noisy_weights_stay_close_to_the_programmed_ones():
    model, _ = compiled_example("cnn", "hermes", "all-analog")
    clean = build_simulation(model, HERMES).nominal()
    weights, _ = draw("cnn", 0)
    for name, value in weights.items():
        assert value.shape == clean[name].shape
        assert 0 < np.linalg.norm(value - clean[name]) / np.linalg.norm(clean[name]) < 0.3


def test_error_after_a_year_of_drift_exceeds_the_error_after_a_second():
    proto, feeds = example_model("mlp")
    want = ort_outputs(proto, feeds)[0]

    def mean_error(t_inference_s: float) -> float:
        errors = [
            np.linalg.norm(draw("mlp", seed, t_inference_s)[1] - want) / np.linalg.norm(want) for seed in range(4)
        ]
        return float(np.mean(errors))

    assert mean_error(ONE_YEAR_S) > 1.1 * mean_error(1.0)


# The ADC in onnxruntime's fast layout, and draws baked into their sessions.


@pytest.mark.parametrize("name", ["cnn", "resnet", "grouped_and_depthwise_conv"])
def test_the_shifted_adc_computes_what_round_clip_and_mul_compute(name):
    """One draw, ADC as grouped convolutions (hetmap.sim.adc) or as Round/Clip/Mul per row block: the same outputs."""
    annotated = compiled_example(name, ROOMY_TINY, "all-analog")[0]
    _, feeds = example_model(name)
    outputs, rounds = [], []
    for shifted in (False, True):
        simulation = build_simulation(annotated, ROOMY_TINY, shifted_adc=shifted)
        program, (read,) = draw_generators(7, 0, 1)
        simulation.bake(simulation.draw(program, 86400.0, read))
        proto = ir.to_proto(simulation.model)
        rounds.append(sum(node.op_type == "Round" for node in proto.graph.node))
        outputs.append(ort_outputs(proto, feeds)[0])
    assert rounds[1] < rounds[0]  # the convolutions' ADCs round without Round
    assert np.abs(outputs[0]).max() > 0
    np.testing.assert_allclose(outputs[1], outputs[0], rtol=0, atol=1e-6 * np.abs(outputs[0]).max())


@pytest.mark.parametrize("name", ["resnet8", "resnet20"])
def test_grouped_row_blocks_compute_bit_for_bit_what_one_convolution_per_block_computes(name, monkeypatch):
    """Reference models on hermes (28-channel blocks of 3x3 kernels), one draw baked: one grouped Conv per layer or one Conv per row block."""
    proto = onnx.load(reference_path(f"{name}.onnx"))
    feeds = {"x": np.load(reference_path(f"{name}.test.npz"))["x"][:32]}
    annotated = compile_in_memory(proto, HERMES, "all-analog", feeds)[0]
    outputs, groups = [], []
    for count in (adc.grouped_count, lambda layout, ranges: 0):
        monkeypatch.setattr(adc, "grouped_count", count)
        simulation = build_simulation(annotated, HERMES, shifted_adc=True)
        program, (read,) = draw_generators(3, 0, 1)
        simulation.bake(simulation.draw(program, 86400.0, read))
        model = ir.to_proto(simulation.model)
        groups.append(sum(node.op_type == "Conv" and node.name.endswith("/tile_mvm") for node in model.graph.node))
        outputs.append(ort_outputs(model, feeds)[0])
    assert groups[0] > 0 and groups[1] == 0
    assert np.abs(outputs[1]).max() > 0
    np.testing.assert_array_equal(outputs[0], outputs[1])


def test_the_dacs_quantizelinear_rounds_as_div_round_and_clip_do_bit_for_bit():
    """Quotients on and beside every half-integer of the DAC's range, and beyond it on both sides."""
    step = np.float32(0.0123457)
    halves = (np.arange(-140, 140, dtype=np.float32) + np.float32(0.5)) * step
    x = np.concatenate([halves, np.nextafter(halves, np.inf), np.nextafter(halves, -np.inf), halves * 1.7])
    x = x.astype(np.float32).reshape(1, -1)
    model = ir.Model(ir.Graph([], [], nodes=[], opset_imports={"": 21}), ir_version=10)
    builder = simulation_module._Builder(model, ROOMY_TINY)
    source = ir.Value(name="x", shape=ir.Shape(x.shape), type=ir.TensorType(ir.DataType.FLOAT))
    model.graph.inputs.append(source)
    for name, codes in (("quantize", builder.dac), ("divide", lambda v, s, n: builder.codes(v, s, n, "old"))):
        builder.prefix = name
        output = codes(source, float(step), 127)
        output.type, output.shape = ir.TensorType(ir.DataType.FLOAT), ir.Shape(x.shape)
        model.graph.outputs.append(output)
    model.graph.extend(builder.nodes)
    new, old = ort_outputs(ir.to_proto(model), {"x": x})
    assert {node.op_type for node in builder.nodes} >= {"QuantizeLinear", "Div"}
    assert np.abs(old).max() == 127 and len(np.unique(old)) == 255
    np.testing.assert_array_equal(new, old)


def test_draws_baked_into_their_own_sessions_score_as_draws_fed_to_one(monkeypatch):
    """Within float noise: onnxruntime's kernels for constant and for fed weights sum in different orders."""
    annotated = compiled_example("resnet", ROOMY_TINY, "all-analog")[0]
    _, feeds = example_model("resnet")
    scorer = Scorer(annotated, Dataset(feeds, None, "example inputs"), metric="cosine")
    fed = scorer.simulate(annotated, ROOMY_TINY, [3600.0, 86400.0], 2, with_nominal=True)
    monkeypatch.setattr(scorer_module, "BAKED_FROM_SAMPLES", 1)
    baked = scorer.simulate(annotated, ROOMY_TINY, [3600.0, 86400.0], 2, with_nominal=True)
    assert baked[0] == pytest.approx(fed[0], rel=1e-4)
    assert np.allclose(baked[1], fed[1], rtol=1e-4) and len({round(v, 6) for v in fed[1][0]}) == 2

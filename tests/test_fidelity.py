"""Fidelity: `hetmap run` against aihwkit 1.1.0 on the reference CNN (the smallest model), all-analog on hermes.

The reference is aihwkit's pure-torch inference tile configured like the
target (bench.aihwkit_reference: PCMLikeNoiseModel, global drift
compensation, 8-bit DAC/ADC with out_bound = adc_bound, 256x256 tiles,
per-column weight scaling, each layer's calibrated input range, no noise or
bound management, no output noise). bench/fidelity.py runs all four models.
"""

import dataclasses

import numpy as np
import onnx_ir as ir
import onnxruntime as ort
import pytest
import torch

from bench import aihwkit_reference as reference
from hetmap.driver import Decision, compile_model
from hetmap.graph.data import load_dataset
from hetmap.models import reference_path
from hetmap.sim.drift import parse_drift
from hetmap.sim.run import evaluate
from hetmap.sim.simulation import build_simulation
from hetmap.targets import load_target

MODEL = "cnn"  # 15 k weights; 3x3 convolutions, one layer split over two tiles
DRIFTS = ["1s", "1h", "1d", "1y"]
# The mean of 6 draws moves by ~0.13 point (per-draw spread ~0.3 point on 540
# samples): the difference of two such means stays well inside 1 point
# (largest seen over 12 base seeds with 10 draws: 0.6 point; the draws are seeded, so the test is deterministic).
DRAWS = 6
TOLERANCE_PP = 1.0


def compiled(target, folder) -> ir.Model:
    data = reference_path(f"{MODEL}.test.npz")
    compile_model(reference_path(f"{MODEL}.onnx"), target, folder, data_path=data, decision=Decision("all-analog"))
    return ir.load(folder / "model.mapped.onnx")


def noiseless(bits: int):
    """hermes with every noise scale at 0 and `bits`-bit converters."""
    target = load_target("hermes")
    noise = dataclasses.replace(target.analog.noise, prog_noise_scale=0.0, read_noise_scale=0.0, drift_scale=0.0)
    return dataclasses.replace(
        target, analog=dataclasses.replace(target.analog, noise=noise, dac_bits=bits, adc_bits=bits)
    )


def reference_data():
    data = np.load(reference_path(f"{MODEL}.test.npz"))
    return data["x"], data["y"]


def hetmap_outputs(model: ir.Model, target, x: np.ndarray, t_inference_s: float) -> np.ndarray:
    """One draw read at t_inference_s, baked into the simulation graph, run in stock onnxruntime.

    Default session options on purpose: the baked file must compute what it
    says under onnxruntime's own optimisations (with QDQ pairs around a Conv,
    its WeightBiasQuantization re-quantised the analog weights to int8).
    """
    simulation = build_simulation(model, target)
    rng = np.random.default_rng(0)
    simulation.bake(simulation.read(simulation.program(rng), t_inference_s, rng))
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(
        ir.to_proto(simulation.model).SerializeToString(), options, providers=["CPUExecutionProvider"]
    )
    return session.run(None, {simulation.model.graph.inputs[0].name: x})[0]


def aihwkit_outputs(model: ir.Model, target, x: np.ndarray, t_inference_s: float, blocks: str) -> np.ndarray:
    analog = reference.analog_reference(reference.torch_reference(MODEL, model), model, target, blocks)
    torch.manual_seed(0)
    with torch.no_grad():
        analog.program_analog_weights()
        analog.drift_analog_weights(t_inference_s)
        return analog(torch.from_numpy(x)).numpy()


def test_torch_reference_computes_the_compiled_model(tmp_path):
    model = compiled(load_target("hermes"), tmp_path)
    module = reference.torch_reference(MODEL, model)
    assert reference.check_parity(module, model, reference_data()[0]) < reference.PARITY_TOLERANCE
    analog = reference.analog_reference(module, model, load_target("hermes"))
    ranges = {
        path: [float(tile.input_range) for tile in layer.analog_tiles()]
        for path, layer in analog.named_analog_layers()
        if path
    }
    for layer in reference.mapped_layers(model, module):
        assert ranges[layer.module] and all(r == pytest.approx(layer.input_range) for r in ranges[layer.module])


def test_accuracy_agrees_with_aihwkit_within_one_point_at_each_drift_time(tmp_path):
    target = load_target("hermes")
    model = compiled(target, tmp_path)
    x, y = reference_data()
    dataset = load_dataset(reference_path(f"{MODEL}.test.npz"), {"x": np.dtype(np.float32)})
    ours = evaluate(model, MODEL, dataset, DRIFTS, DRAWS)
    analog = reference.analog_reference(reference.torch_reference(MODEL, model), model, target)
    theirs = reference.accuracy_over_drift(analog, x, y, [parse_drift(d) for d in DRIFTS], DRAWS)
    gaps = {r.drift: 100 * (r.mean - accuracy.mean()) for r, accuracy in zip(ours.drifts, theirs)}
    assert all(abs(gap) <= TOLERANCE_PP for gap in gaps.values()), f"hetmap - aihwkit accuracy, points: {gaps}"
    assert all(r.mean > 0.9 for r in ours.drifts)  # the comparison is of a working model


def test_noiseless_wide_converters_agree_per_sample_with_aihwkits_own_tiling(tmp_path):
    """No device noise, 16-bit DAC/ADC: only the clipping ranges remain, and aihwkit's equal row split."""
    target = noiseless(16)
    model = compiled(target, tmp_path)
    x, _ = reference_data()
    ours = hetmap_outputs(model, target, x, 86400.0)
    theirs = aihwkit_outputs(model, target, x, 86400.0, blocks="aihwkit")
    assert np.mean(ours.argmax(axis=1) == theirs.argmax(axis=1)) >= 0.998
    assert np.median(np.abs(ours - theirs)) <= 1e-4 * np.abs(theirs).max()


def test_noiseless_8_bit_converters_on_the_same_tiles_give_the_same_logits(tmp_path):
    """With hetmap's row blocks in aihwkit too, DAC, ADC, column scaling and the tile sum match bit for bit (float rounding aside)."""
    target = noiseless(8)
    model = compiled(target, tmp_path)
    x, _ = reference_data()
    ours = hetmap_outputs(model, target, x, 3600.0)
    theirs = aihwkit_outputs(model, target, x, 3600.0, blocks="hetmap")
    assert np.array_equal(ours.argmax(axis=1), theirs.argmax(axis=1))
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-5 * np.abs(theirs).max())

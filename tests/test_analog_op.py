"""hetmap's analog training op: one noise draw computes what the onnxruntime simulation of that draw computes."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from helpers import compiled_example, example_model
from hetmap.graph import parity
from hetmap.sim.draws import draw_generators
from hetmap.sim.simulation import build_simulation
from hetmap.targets import load_target
from hetmap.train.supernet import Supernet, trainable_initializers

# tiny's 32x32 tiles split these layers into several row blocks and column tiles; room for all of them
ROOMY_TINY = dataclasses.replace(load_target("tiny"), analog=dataclasses.replace(load_target("tiny").analog, count=256))


def _net(name: str):
    annotated, reports = compiled_example(name, ROOMY_TINY, "all-analog")
    layers = reports["partition"].layers
    trainable = trainable_initializers(annotated, layers, "all")
    net = Supernet(annotated, layers, reports["calibrate"].input_range, ROOMY_TINY, trainable, 86400.0)
    net.set_mapping(reports["assign"].mapping.layers)
    return annotated, net


@pytest.mark.parametrize("name", ["cnn", "wide_gemm", "grouped_and_depthwise_conv", "gemm_trans_b"])
def test_a_drawn_chip_computes_what_its_simulation_computes(name):
    """DAC, PCM draw per tile, row blocks, ADC and drift compensation: the same numbers as onnxruntime's graph."""
    annotated, net = _net(name)
    _, feeds = example_model(name)
    simulation = build_simulation(annotated, ROOMY_TINY)
    program, (read,) = draw_generators(7, 0, 1)
    simulation.bake(simulation.read(simulation.program(program), 86400.0, read))
    (expected,) = parity.run_model(simulation.model, feeds)
    program, (read,) = draw_generators(7, 0, 1)
    net.draw_noise(program, read)
    with torch.no_grad():
        got = net.eval()(*(torch.from_numpy(array) for array in feeds.values())).numpy()
    net.clear_noise()
    with torch.no_grad():
        clean = net(*(torch.from_numpy(array) for array in feeds.values())).numpy()
    scale = np.abs(expected).max()
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5 * scale)
    assert np.abs(clean - expected).max() > 1e-2 * scale  # the draw mattered


def test_noise_scale_ramps_from_converters_only_to_the_draw_and_gradients_flow():
    _, net = _net("cnn")
    x = torch.from_numpy(example_model("cnn")[1]["x"][:8])
    net.draw_noise(*(np.random.default_rng(i) for i in range(2)))
    outputs = {}
    for scale in (0.0, 0.5, 1.0):
        net.set_noise_scale(scale)
        outputs[scale] = net.train()(x)
    net.clear_noise()
    torch.testing.assert_close(outputs[0.0], net(x))
    assert 0 < (outputs[0.5] - outputs[0.0]).abs().max() < (outputs[1.0] - outputs[0.0]).abs().max()
    outputs[1.0].square().mean().backward()
    grads = [p.grad for p in net.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads) and any(g.abs().sum() > 0 for g in grads)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_the_op_on_cuda_computes_what_it_computes_on_cpu():
    _, net = _net("cnn")
    x = torch.from_numpy(example_model("cnn")[1]["x"][:8])
    net.draw_noise(*(np.random.default_rng(i) for i in range(2)))
    with torch.no_grad():
        on_cpu = net.eval()(x)
        net.cuda().draw_noise(*(np.random.default_rng(i) for i in range(2)))
        on_gpu = net(x.cuda()).cpu()
    scale = on_cpu.abs().max()
    assert (on_gpu - on_cpu).abs().median() < 1e-4 * scale and (on_gpu - on_cpu).abs().max() < 0.05 * scale

"""Simulation on a torch device: mappings measured through the supernetwork's ops, on a GPU where there is one.

onnxruntime's CPU sessions are the simulator of record; on the CPU they are
also the faster one. On a GPU the same computation runs as torch ops: the
interpreter for the graph, hetmap.train.analog for analog layers (DAC, row
blocks, ADC, the PCM draw) and the supernetwork's fake quantisers for
digital ones. Draw d comes from the generators the simulation uses for it
(draw_generators): the chip programmed once and read at every drift time,
so the two agree to float rounding (tests pin them together on the CPU).
TF32 stays off while it runs: converter codes must round as float32 does.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import numpy as np
import onnx_ir as ir
import torch

from hetmap.graph.data import Dataset
from hetmap.graph.shapes import graph_inputs
from hetmap.mapping.annotations import read_layer, read_mapping
from hetmap.mapping.mapping import ANALOG
from hetmap.sim.draws import draw_generators
from hetmap.targets import Target
from hetmap.train.adaptation import input_tensors, outputs_over, torch_device
from hetmap.train.interpreter import UnsupportedOpError
from hetmap.train.supernet import Supernet

DEVICE_DATA_BYTES = 2 << 30  # data up to this size moves to the device once; larger data, batch by batch


@dataclass(frozen=True)
class AnnotatedLayer:
    """What the supernetwork reads of a mapped layer, from the annotations emit wrote (`hetmap run` has no
    partition report)."""

    name: str
    op_type: str
    groups: int
    weight_operand: int
    weight_transposed: bool
    block_rows: int


def annotated_layers(model: ir.Model) -> tuple[list[AnnotatedLayer], dict[str, float]]:
    """(layers, their calibrated input ranges) of an annotated model, in graph order."""
    layers, ranges = [], {}
    for node in model.graph:
        annotation = read_layer(node)
        if annotation is None:
            continue
        groups = node.attributes.get_int("group", 1)
        layers.append(
            AnnotatedLayer(
                node.name,
                node.op_type,
                groups,
                annotation.weight_operand,
                annotation.weight_transposed,
                annotation.block_rows,
            )
        )
        ranges[node.name] = annotation.input_range
    return layers, ranges


@contextlib.contextmanager
def _float32_exact():
    """TF32 off while simulating (torch's CUDA convolutions use it by default): codes round as in float32."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


class DeviceSimulator:
    """The outputs of a model's mappings on one torch device, draw by draw, with the model's current weights.

    Raises hetmap.train.interpreter.UnsupportedOpError where torch cannot run the graph.
    """

    def __init__(self, model: ir.Model, layers: list, input_ranges: dict[str, float], target: Target, device: str):
        self.device = device
        self.input_names = [value.name for value in graph_inputs(model)]
        self._model, self._build = model, (layers, input_ranges, target)
        self._weights = self._current_weights()
        self.net = Supernet(model, *self._build, (), 0.0).to(device)
        self._data: tuple[Dataset, dict[str, torch.Tensor]] | None = None

    def _current_weights(self) -> list:
        return [value.const_value for value in self._model.graph.initializers.values()]

    def _refresh(self) -> None:
        """Build the net again where the model's initializers were replaced (refine and the guard swap weights)."""
        current = self._current_weights()
        if len(current) != len(self._weights) or any(a is not b for a, b in zip(current, self._weights)):
            self.net = Supernet(self._model, *self._build, (), 0.0).to(self.device)
            self._weights = current

    def supports(self, mapping: dict[str, str]) -> bool:
        """Whether every analog layer of `mapping` has the analog op (the rest would run in full precision here)."""
        unsupported = self.net.analog_unsupported
        return not any(option == ANALOG and name in unsupported for name, option in mapping.items())

    def runs(
        self, mapping: dict[str, str], data: Dataset, batch: int, times: list[float], draws: range, seed: int
    ) -> list[list[np.ndarray]]:
        """Outputs per drift time per draw of `draws`; layers `mapping` leaves out stay full precision.

        A mapping without analog layers is deterministic: it runs once.
        """
        analog = {name for name, option in mapping.items() if option == ANALOG}
        self._map(mapping)
        if not analog:
            outputs = self._outputs(data, batch)
            return [[outputs] * len(draws) for _ in times]
        per_time = [[] for _ in times]
        for draw in draws:
            program_rng, read_rngs = draw_generators(seed, draw, len(times))
            programmed = self.net.program_tiles(program_rng, analog)
            for outputs, t_s, read_rng in zip(per_time, times, read_rngs):
                self.net.read_noise(programmed, t_s, read_rng)
                outputs.append(self._outputs(data, batch))
        self.net.clear_noise()
        return per_time

    def converters_only(self, mapping: dict[str, str], data: Dataset, batch: int) -> np.ndarray:
        """Outputs with converters and quantisers on and no device noise."""
        self._map(mapping)
        return self._outputs(data, batch)

    def _map(self, mapping: dict[str, str]) -> None:
        """The net on the model's current weights, in `mapping`'s modes, without device noise."""
        self._refresh()
        self.net.set_mapping(mapping)
        self.net.clear_noise()

    def _outputs(self, data: Dataset, batch: int) -> np.ndarray:
        if self._data is None or self._data[0] is not data:
            tensors = input_tensors(data, self.input_names)
            if sum(t.nbytes for t in tensors.values()) <= DEVICE_DATA_BYTES:
                tensors = {name: t.to(self.device) for name, t in tensors.items()}
            self._data = data, tensors
        with _float32_exact():
            return outputs_over(self.net, self.input_names, self._data[1], data.size, batch, self.device).numpy()


def simulator_on(
    device: str, model: ir.Model, layers: list, input_ranges: dict[str, float], target: Target, asked: bool = False
) -> DeviceSimulator | None:
    """A simulator on the torch device `device` names (auto: CUDA when torch sees one) where that is a GPU, or on
    the CPU where `asked`; None where onnxruntime simulates (also where torch cannot run the graph)."""
    resolved = torch_device(device)
    if resolved == "cpu" and not asked:
        return None
    try:
        return DeviceSimulator(model, layers, input_ranges, target, resolved)
    except UnsupportedOpError:
        return None


def annotated_simulator(model: ir.Model, target: Target, device: str, asked: bool = False) -> DeviceSimulator | None:
    """simulator_on for an annotated model (`hetmap run`), None also where its mapping has an analog layer the
    torch op lacks."""
    simulator = simulator_on(device, model, *annotated_layers(model), target, asked)
    return simulator if simulator is not None and simulator.supports(read_mapping(model)) else None

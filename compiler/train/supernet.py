"""The supernetwork: a canonical model whose mappable layers switch between analog and digital per step.

Every mappable layer keeps one shared weight (the ONNX initializer, owned by
the OnnxModule) and computes with it in the mode of the current mapping:

- `fp`: the layer as the graph says;
- `int8`/`int4`/`int2`: the weight fake-quantised per output channel and the
  activation to INT8 at the calibrated range, as the simulator's digital
  units do, with straight-through gradients;
- `analog`: hetmap's analog op (hetmap.train.analog): DAC, the tiles' row
  blocks with ADC and bound, the digital sum, and the device noise of the
  last draw (`draw_noise`) at the budget's drift time, scaled by
  `set_noise_scale` (noise ramps); without a draw, converters only.

Every mode reads the same parameter, so gradients from every mode reach it.
"""

from __future__ import annotations

from collections.abc import Collection

import numpy as np
import onnx_ir as ir
import torch

from hetmap.graph.layouts import PEAK_FLOOR, WeightLayout
from hetmap.mapping.mapping import ANALOG, option_bits
from hetmap.sim.simulation import ACTIVATION_BITS
from hetmap.targets import Target
from hetmap.train.analog import AnalogOp, analog_unsupported
from hetmap.train.interpreter import OnnxModule, run_node

FULL_PRECISION = "fp"
NORMALIZATIONS = ("BatchNormalization", "LayerNormalization", "InstanceNormalization", "GroupNormalization")


def fake_quantize(x: torch.Tensor, step: torch.Tensor, levels: int) -> torch.Tensor:
    """round(x / step) * step saturated at +-levels steps; gradients pass straight through."""
    q = torch.clamp(torch.round(x / step), -levels, levels) * step
    return x + (q - x).detach()


def quantize_weight(weight: torch.Tensor, bits: int, axis: int | None) -> torch.Tensor:
    """Symmetric per-output-channel fake quantisation, the simulator's quantize_symmetric."""
    levels = 2 ** (bits - 1) - 1
    if axis is None:
        peak = weight.detach().abs().amax()
    else:
        others = [d for d in range(weight.dim()) if d != axis]
        shape = [1] * weight.dim()
        shape[axis] = -1
        peak = weight.detach().abs().amax(dim=others).reshape(shape)
    step = torch.where(peak > 0, peak.clamp_min(PEAK_FLOOR) / levels, torch.ones_like(peak))
    return fake_quantize(weight, step, levels)


class MixedLayer(torch.nn.Module):
    """One mappable layer's analog and digital modes over the shared weight."""

    def __init__(self, layer, node: ir.Node, target: Target, input_range: float):
        super().__init__()
        self.mode = FULL_PRECISION
        self.operand = layer.weight_operand
        self.activation = 0 if layer.op_type in ("Conv", "ConvTranspose") else 1 - layer.weight_operand
        weight = node.inputs[self.operand].const_value
        self.layout = WeightLayout(layer.op_type, tuple(weight.shape), layer.groups, layer.weight_transposed)
        self.input_range = input_range
        self.analog_reason = analog_unsupported(node, self.layout, self.operand)
        self.analog = None
        if self.analog_reason is None:
            self.analog = AnalogOp(node, self.layout, target, input_range, layer.block_rows)

    def forward(self, node: ir.Node, inputs: list[torch.Tensor | None]) -> list[torch.Tensor]:
        if self.mode == FULL_PRECISION or (self.mode == ANALOG and self.analog is None):
            return run_node(node, inputs)
        if self.mode == ANALOG:
            return [self.analog(inputs, self.activation, self.operand)]
        inputs = list(inputs)
        levels = 2 ** (ACTIVATION_BITS - 1) - 1
        step = torch.tensor(
            self.input_range / levels, dtype=inputs[self.activation].dtype, device=inputs[self.activation].device
        )
        inputs[self.activation] = fake_quantize(inputs[self.activation], step, levels)
        inputs[self.operand] = quantize_weight(inputs[self.operand], option_bits(self.mode), self.layout.output_axis)
        return run_node(node, inputs)


def trainable_initializers(model: ir.Model, layers: list, scope: str) -> list[str]:
    """The initializers fine-tuning may change under `scope`.

    all: every finite float initializer with more than one element (scalars
    are constants of the computation, such as a LayerNorm's epsilon) but
    BatchNorm statistics (a variance that gradients push negative is no
    variance);
    norm: normalisation scales and shifts plus the mappable layers' biases
    (where canonicalize folded the BatchNorms);
    head: the last mappable layer's weight and bias.
    """
    initializers = model.graph.initializers
    nodes = {node.name: node for node in model.graph}

    def is_float(name: str) -> bool:
        value = initializers[name].const_value
        return value is not None and value.dtype.is_floating_point()

    if scope == "all":
        statistics = {
            v.name
            for node in model.graph
            if node.op_type == "BatchNormalization"
            for v in node.inputs[3:5]
            if v is not None
        }
        names = [n for n, v in initializers.items() if is_float(n) and v.const_value.size > 1 and n not in statistics]
        return [n for n in names if np.isfinite(initializers[n].const_value.numpy()).all()]
    if scope == "head":
        last = nodes[layers[-1].name]
        return [v.name for v in last.inputs[1:] if v is not None and v.name in initializers and is_float(v.name)]
    names = [
        nodes[layer.name].inputs[2].name
        for layer in layers
        if len(nodes[layer.name].inputs) > 2 and nodes[layer.name].inputs[2] is not None
    ]
    for node in model.graph:
        if node.op_type in NORMALIZATIONS:
            names += [v.name for v in node.inputs[1:3] if v is not None]
    return [n for n in dict.fromkeys(names) if n in initializers and is_float(n)]


class Supernet(torch.nn.Module):
    """The model as a torch module whose mappable layers take their mode from `set_mapping`."""

    def __init__(
        self,
        model: ir.Model,
        layers: list,
        input_ranges: dict[str, float],
        target: Target,
        trainable: Collection[str],
        t_inference_s: float,
    ):
        super().__init__()
        nodes = {node.name: node for node in model.graph}
        self.t_inference_s = t_inference_s
        self.mixed = {}
        for layer in layers:
            self.mixed[layer.name] = MixedLayer(layer, nodes[layer.name], target, input_ranges[layer.name])
        self.layers = torch.nn.ModuleList(self.mixed.values())
        self.graph = OnnxModule(model, trainable, {name: layer for name, layer in self.mixed.items()})
        self._weights = {name: nodes[name].inputs[layer.operand].name for name, layer in self.mixed.items()}

    @property
    def analog_unsupported(self) -> dict[str, str]:
        return {name: layer.analog_reason for name, layer in self.mixed.items() if layer.analog_reason}

    def set_mapping(self, mapping: dict[str, str]) -> None:
        """Modes per layer name; layers the mapping leaves out run in full precision."""
        for name, layer in self.mixed.items():
            layer.mode = mapping.get(name, FULL_PRECISION)

    def set_noise_scale(self, scale: float) -> None:
        """The analog modes train with `scale` times the drawn device error (0: converters only)."""
        for layer in self.mixed.values():
            if layer.analog is not None:
                layer.analog.noise_scale = float(scale)

    @torch.no_grad()
    def draw_noise(self, program_rng: np.random.Generator, read_rng: np.random.Generator) -> None:
        """One chip: every analog-capable layer's tiles programmed from the current weights, then read."""
        self.read_noise(self.program_tiles(program_rng), self.t_inference_s, read_rng)

    @torch.no_grad()
    def program_tiles(self, program_rng: np.random.Generator, names: Collection[str] | None = None) -> dict:
        """The tiles of every analog-capable layer (of those in `names`, when given) programmed from the current
        weights, in graph order, as the simulator programs its analog layers: the same generator gives its draw."""
        analog = [
            (name, layer.analog)
            for name, layer in self.mixed.items()
            if layer.analog is not None and (names is None or name in names)
        ]
        return {
            name: op.program(self.graph.initializer(self._weights[name]).cpu().numpy(), program_rng)
            for name, op in analog
        }

    @torch.no_grad()
    def read_noise(self, programmed: dict, t_inference_s: float, read_rng: np.random.Generator) -> None:
        """The programmed tiles read `t_inference_s` after programming (in the order the simulator reads them):
        each layer's noise from now on; layers not programmed compute without device noise."""
        self.clear_noise()
        for name, arrays in programmed.items():
            op = self.mixed[name].analog
            op.noise = op.read(arrays, t_inference_s, read_rng, self.graph.initializer(self._weights[name]).device)

    def clear_noise(self) -> None:
        for layer in self.mixed.values():
            if layer.analog is not None:
                layer.analog.noise = None

    def forward(self, *inputs: torch.Tensor):
        return self.graph(*inputs)

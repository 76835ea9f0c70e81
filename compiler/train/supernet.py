"""The supernetwork: a canonical model whose mappable layers switch between analog and digital per step.

Every mappable layer keeps one shared weight (the ONNX initializer, owned by
the OnnxModule) and computes with it in the mode of the current mapping:

- `fp`: the layer as the graph says;
- `int8`/`int4`/`int2`: the weight fake-quantised per output channel and the
  activation to INT8 at the calibrated range, as the simulator's digital
  units do, with straight-through gradients;
- `analog`: aihwkit's TorchInferenceTile (TorchInferenceRPUConfig set up like
  the target: DAC/ADC bits and bound, tile size, hetmap's row blocks, the
  calibrated input range) computes the layer as a matrix-vector product; in
  training its weight modifier adds Gaussian noise of the weight error the
  target shows at the budget's drift time (hardware-aware training).

The analog tiles never own the weight: each forward substitutes the shared
matrix, per tile block scaled to its column peaks as aihwkit maps weights,
through torch.func.functional_call, so gradients from every mode reach the
same parameter.
"""

from __future__ import annotations

from collections.abc import Collection

import numpy as np
import onnx_ir as ir
import torch
import torch.nn.functional as F
from torch.func import functional_call

from hetmap.graph.layouts import PEAK_FLOOR, WeightLayout, row_ranges
from hetmap.mapping.mapping import ANALOG, option_bits
from hetmap.sim.noise import noisy_weights
from hetmap.sim.simulation import ACTIVATION_BITS
from hetmap.targets import Target
from hetmap.train.interpreter import OnnxModule, run_node
from hetmap.train.rpu_config import rpu_config

FULL_PRECISION = "fp"
NORMALIZATIONS = ("BatchNormalization", "LayerNormalization", "InstanceNormalization", "GroupNormalization")
_NOISE_PROBE_SEED = 20_260_101


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


def relative_weight_error(weights: np.ndarray, target: Target, t_inference_s: float) -> float:
    """Std of one PCM draw's weight error, in units of the column peak: the HWA training noise."""
    rng = np.random.default_rng(_NOISE_PROBE_SEED)
    noisy = noisy_weights(weights.astype(np.float32), target.analog.noise, t_inference_s, rng)
    peak = np.abs(weights).max(axis=0)
    peak[peak == 0] = 1
    return float(np.std((noisy - weights) / peak))


class MixedLayer(torch.nn.Module):
    """One mappable layer's analog and digital modes over the shared weight."""

    def __init__(self, layer, node: ir.Node, target: Target, input_range: float, weight_noise: float):
        super().__init__()
        self.mode = FULL_PRECISION
        self.layer = layer
        self.operand = layer.weight_operand
        self.activation = 0 if layer.op_type in ("Conv", "ConvTranspose") else 1 - layer.weight_operand
        weight = node.inputs[self.operand].const_value
        self.layout = WeightLayout(layer.op_type, tuple(weight.shape), layer.groups, layer.weight_transposed)
        self.input_range = input_range
        self.weight_noise = weight_noise
        self.analog_reason = _analog_unsupported(node, self.layout, self.operand)
        self.tiles = None
        if self.analog_reason is None:
            self.tiles = _analog_tiles(target, input_range, layer.block_rows, self.layout, weight_noise)
            self.row_blocks = row_ranges(
                self.layout.to_matrix(np.empty(self.layout.shape, np.float32)).shape[0], layer.block_rows
            )

    def set_noise_scale(self, scale: float) -> None:
        """Train the analog mode with `scale` times the target's HWA weight noise (progressive noise schedules)."""
        if self.tiles is None:
            return
        for tile in self.tiles.module.analog_tiles():
            tile.rpu_config.modifier.std_dev = self.weight_noise * scale
            tile.tile.set_config(tile.rpu_config)  # the simulator tile holds its own copy of the modifier

    def forward(self, node: ir.Node, inputs: list[torch.Tensor | None]) -> list[torch.Tensor]:
        if self.mode == FULL_PRECISION or (self.mode == ANALOG and self.tiles is None):
            return run_node(node, inputs)
        if self.mode == ANALOG:
            return [self._analog(node, inputs)]
        inputs = list(inputs)
        levels = 2 ** (ACTIVATION_BITS - 1) - 1
        step = torch.tensor(
            self.input_range / levels, dtype=inputs[self.activation].dtype, device=inputs[self.activation].device
        )
        inputs[self.activation] = fake_quantize(inputs[self.activation], step, levels)
        inputs[self.operand] = quantize_weight(inputs[self.operand], option_bits(self.mode), self.layout.output_axis)
        return run_node(node, inputs)

    def _matrix(self, weight: torch.Tensor) -> torch.Tensor:
        """The crossbar matrix [rows, cols] of the weight (WeightLayout.to_matrix in torch)."""
        if self.layout.op_type == "Conv":
            return weight.reshape(weight.shape[0], -1).T
        return weight.T if self.layout.transposed else weight

    def _mvm(self, x: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
        """x [samples, rows] through the tiles holding `matrix` [rows, cols] (one group's)."""
        column_blocks = row_ranges(matrix.shape[1], self.tiles.out_size_block)
        substitutes = {}
        for i, (r0, r1) in enumerate(self.row_blocks):
            for j, (c0, c1) in enumerate(column_blocks):
                block = matrix[r0:r1, c0:c1]
                scales = block.detach().abs().amax(dim=0).clamp_min(torch.finfo(block.dtype).tiny)
                tile = f"analog_module.array.{i}.{j}" if self.tiles.split else "analog_module"
                substitutes[f"{tile}.tile.weight"] = (block / scales).T
                substitutes[f"{tile}.mapping_scales"] = scales
        return functional_call(self.tiles.module, substitutes, (x,))

    def _analog(self, node: ir.Node, inputs: list[torch.Tensor | None]) -> torch.Tensor:
        x, weight = inputs[self.activation], inputs[self.operand]
        matrix = self._matrix(weight)
        bias = inputs[2] if len(inputs) > 2 else None
        if node.op_type == "Conv":
            return self._analog_conv(node, x, matrix, bias)
        if node.op_type == "Gemm":
            if node.attributes.get_int("transA", 0):
                x = x.T
            y = self._mvm(x, matrix) * node.attributes.get_float("alpha", 1.0)
            return y if bias is None else y + node.attributes.get_float("beta", 1.0) * bias
        lead = x.shape[:-1]
        return self._mvm(x.reshape(-1, x.shape[-1]), matrix).reshape(*lead, matrix.shape[1])

    def _analog_conv(
        self, node: ir.Node, x: torch.Tensor, matrix: torch.Tensor, bias: torch.Tensor | None
    ) -> torch.Tensor:
        spatial = len(self.layout.shape) - 2
        kernel = tuple(self.layout.shape[2:])
        strides = tuple(node.attributes.get_ints("strides", [1] * spatial))
        dilations = tuple(node.attributes.get_ints("dilations", [1] * spatial))
        pads = list(node.attributes.get_ints("pads", [0] * 2 * spatial))
        if spatial == 1:  # as a 2-D convolution of height 1
            x, kernel, strides, dilations = x.unsqueeze(2), (1, *kernel), (1, *strides), (1, *dilations)
            pads = [0, pads[0], 0, pads[1]]
        x = F.pad(x, (pads[1], pads[3], pads[0], pads[2]))  # F.pad: last axis first
        columns = F.unfold(x, kernel, dilation=dilations, stride=strides)  # [N, C*k, L]
        batch, out_h = x.shape[0], (x.shape[2] - dilations[0] * (kernel[0] - 1) - 1) // strides[0] + 1
        groups = self.layout.groups
        rows, cols = matrix.shape[0], matrix.shape[1] // groups
        outputs = []
        for group in range(groups):
            features = columns[:, group * rows : (group + 1) * rows].transpose(1, 2).reshape(-1, rows)
            outputs.append(self._mvm(features, matrix[:, group * cols : (group + 1) * cols]).reshape(batch, -1, cols))
        y = torch.cat(outputs, dim=2).transpose(1, 2).reshape(batch, matrix.shape[1], out_h, -1)
        if spatial == 1:
            y = y.squeeze(2)
        if bias is not None:
            y = y + bias.reshape(1, -1, *([1] * spatial))
        return y


class _Tiles:
    """An aihwkit AnalogLinear used only for its tiles' forward; hidden from the parent's parameters."""

    def __init__(self, module, out_size_block: int):
        self.module = module
        self.out_size_block = out_size_block
        self.split = hasattr(module.analog_module, "array")  # a TileModuleArray, else one tile


def _analog_tiles(
    target: Target, input_range: float, block_rows: int, layout: WeightLayout, weight_noise: float
) -> _Tiles:
    from aihwkit.nn import AnalogLinear
    from aihwkit.simulator.parameters.enums import WeightModifierType

    config = rpu_config(target, input_range, block_rows)
    config.modifier.type = WeightModifierType.ADD_NORMAL
    config.modifier.std_dev = weight_noise
    config.modifier.assumed_wmax = 1.0
    rows = layout.to_matrix(np.empty(layout.shape, np.float32)).shape[0]
    cols = layout.to_matrix(np.empty(layout.shape, np.float32)).shape[1] // layout.groups
    module = AnalogLinear(rows, cols, bias=False, rpu_config=config)
    for parameter in module.parameters():
        parameter.requires_grad_(False)
    return _Tiles(module, target.analog.cols)


def _analog_unsupported(node: ir.Node, layout: WeightLayout, operand: int) -> str | None:
    """Why the training tiles cannot compute this layer (it then trains in full precision), or None."""
    if node.op_type == "ConvTranspose":
        return "ConvTranspose"
    if node.op_type == "Conv":
        if len(layout.shape) not in (3, 4):
            return f"{len(layout.shape) - 2}-D convolution"
        if node.attributes.get_string("auto_pad", "NOTSET") != "NOTSET":
            return "auto_pad"
        return None
    if len(layout.shape) != 2:
        return "vector weight"
    if node.op_type == "MatMul" and operand != 1:
        return "weight on the left of MatMul"
    return None


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
        self.mixed = {}
        for layer in layers:
            node = nodes[layer.name]
            matrix = WeightLayout(
                layer.op_type,
                tuple(node.inputs[layer.weight_operand].const_value.shape),
                layer.groups,
                layer.weight_transposed,
            ).to_matrix(node.inputs[layer.weight_operand].const_value.numpy())
            noise = relative_weight_error(matrix, target, t_inference_s)
            self.mixed[layer.name] = MixedLayer(layer, node, target, input_ranges[layer.name], noise)
        self.layers = torch.nn.ModuleList(self.mixed.values())
        self.graph = OnnxModule(model, trainable, {name: layer for name, layer in self.mixed.items()})

    @property
    def analog_unsupported(self) -> dict[str, str]:
        return {name: layer.analog_reason for name, layer in self.mixed.items() if layer.analog_reason}

    def set_mapping(self, mapping: dict[str, str]) -> None:
        """Modes per layer name; layers the mapping leaves out run in full precision."""
        for name, layer in self.mixed.items():
            layer.mode = mapping.get(name, FULL_PRECISION)

    def forward(self, *inputs: torch.Tensor):
        return self.graph(*inputs)

    def _apply(self, fn, recurse=True):
        """Move the hidden aihwkit tiles with the module (to CUDA and back)."""
        for layer in self.mixed.values():
            if layer.tiles is not None:
                layer.tiles.module._apply(fn)
        return super()._apply(fn, recurse)

    def train(self, mode: bool = True):
        for layer in self.mixed.values():
            if layer.tiles is not None:
                layer.tiles.module.train(mode)
        return super().train(mode)

"""The analog training path hetmap's own op replaced: aihwkit's TorchInferenceTile per layer (bench reference).

`use_aihwkit_tiles(net, target, t_inference_s)` swaps every analog-capable
layer's analog op in a Supernet for aihwkit tiles (TorchInferenceRPUConfig
set up like the target by bench.rpu_config: converters, tile size,
hetmap's row blocks, the calibrated input range) with a Gaussian weight
modifier of the size of the target's PCM error at the drift time, as
fine-tuning trained before. The tiles never own the weight: each forward
substitutes the shared matrix, per tile block scaled to its column peaks as
aihwkit maps weights, through torch.func.functional_call. bench.analog_step
times it against hetmap's op; nothing in the compiler imports it.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch.func import functional_call

from bench.rpu_config import rpu_config
from hetmap.graph.layouts import row_ranges
from hetmap.sim.noise import noisy_weights
from hetmap.targets import Target

_NOISE_PROBE_SEED = 20_260_101


def relative_weight_error(weights: np.ndarray, target: Target, t_inference_s: float) -> float:
    """Std of one PCM draw's weight error, in units of the column peak: the HWA training noise."""
    rng = np.random.default_rng(_NOISE_PROBE_SEED)
    noisy = noisy_weights(weights.astype(np.float32), target.analog.noise, t_inference_s, rng)
    peak = np.abs(weights).max(axis=0)
    peak[peak == 0] = 1
    return float(np.std((noisy - weights) / peak))


class AihwkitAnalog:
    """One layer's analog mode on aihwkit tiles, called like hetmap.train.analog.AnalogOp."""

    def __init__(
        self,
        node,
        layout,
        target: Target,
        input_range: float,
        block_rows: int,
        weight: np.ndarray,
        t_inference_s: float,
    ):
        from aihwkit.nn import AnalogLinear
        from aihwkit.simulator.parameters.enums import WeightModifierType

        self.node, self.layout = node, layout
        matrix = layout.to_matrix(weight.astype(np.float32))
        config = rpu_config(target, input_range, block_rows)
        config.modifier.type = WeightModifierType.ADD_NORMAL
        config.modifier.std_dev = relative_weight_error(matrix, target, t_inference_s)
        config.modifier.assumed_wmax = 1.0
        rows, cols = matrix.shape[0], matrix.shape[1] // layout.groups
        self.module = AnalogLinear(rows, cols, bias=False, rpu_config=config)
        for parameter in self.module.parameters():
            parameter.requires_grad_(False)
        self.module.train(True)
        self.row_blocks = row_ranges(rows, block_rows)
        self.out_size_block = target.analog.cols
        self.split = hasattr(self.module.analog_module, "array")

    def _matrix(self, weight: torch.Tensor) -> torch.Tensor:
        if self.layout.op_type == "Conv":
            return weight.reshape(weight.shape[0], -1).T
        return weight.T if self.layout.transposed else weight

    def _mvm(self, x: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
        column_blocks = row_ranges(matrix.shape[1], self.out_size_block)
        substitutes = {}
        for i, (r0, r1) in enumerate(self.row_blocks):
            for j, (c0, c1) in enumerate(column_blocks):
                block = matrix[r0:r1, c0:c1]
                scales = block.detach().abs().amax(dim=0).clamp_min(torch.finfo(block.dtype).tiny)
                tile = f"analog_module.array.{i}.{j}" if self.split else "analog_module"
                substitutes[f"{tile}.tile.weight"] = (block / scales).T
                substitutes[f"{tile}.mapping_scales"] = scales
        return functional_call(self.module, substitutes, (x,))

    def __call__(self, inputs, activation: int, operand: int) -> torch.Tensor:
        x, weight = inputs[activation], inputs[operand]
        matrix = self._matrix(weight)
        bias = inputs[2] if len(inputs) > 2 else None
        if self.node.op_type != "Conv":
            y = self._mvm(x.reshape(-1, x.shape[-1]), matrix).reshape(*x.shape[:-1], matrix.shape[1])
            return y if bias is None else y + bias
        spatial = len(self.layout.shape) - 2
        kernel = tuple(self.layout.shape[2:])
        strides = tuple(self.node.attributes.get_ints("strides", [1] * spatial))
        dilations = tuple(self.node.attributes.get_ints("dilations", [1] * spatial))
        pads = list(self.node.attributes.get_ints("pads", [0] * 2 * spatial))
        x = F.pad(x, (pads[1], pads[3], pads[0], pads[2]))
        columns = F.unfold(x, kernel, dilation=dilations, stride=strides)  # aihwkit's way: im2col
        batch, out_h = x.shape[0], (x.shape[2] - dilations[0] * (kernel[0] - 1) - 1) // strides[0] + 1
        groups = self.layout.groups
        rows, cols = matrix.shape[0], matrix.shape[1] // groups
        outputs = []
        for group in range(groups):
            features = columns[:, group * rows : (group + 1) * rows].transpose(1, 2).reshape(-1, rows)
            outputs.append(self._mvm(features, matrix[:, group * cols : (group + 1) * cols]).reshape(batch, -1, cols))
        y = torch.cat(outputs, dim=2).transpose(1, 2).reshape(batch, matrix.shape[1], out_h, -1)
        return y if bias is None else y + bias.reshape(1, -1, *([1] * spatial))


def use_aihwkit_tiles(net, model, layers, input_ranges: dict[str, float], target: Target) -> None:
    """Replace the analog op of every 2-D-conv or matrix layer of `net` by aihwkit tiles."""
    nodes = {node.name: node for node in model.graph}
    for layer in layers:
        mixed = net.mixed[layer.name]
        if mixed.analog is None:
            continue
        node = nodes[layer.name]
        weight = node.inputs[layer.weight_operand].const_value.numpy()
        range_ = input_ranges[layer.name]
        mixed.analog = AihwkitAnalog(node, mixed.layout, target, range_, layer.block_rows, weight, net.t_inference_s)

"""hetmap's analog training op: the simulator's analog layer in torch, with straight-through gradients.

One mappable layer on PCM tiles, computed as hetmap.sim.simulation builds it
for onnxruntime: the input through the DAC (round to dac_bits at the
calibrated range, saturate), one partial product per row block of the
crossbar matrix (hetmap's tile blocks: whole input channels for
convolutions, which run as convolutions over the block's channels, never
through im2col), each block's outputs in ADC codes rounded and saturated at
adc_bound, scaled back per column (times the tile's drift compensation) and
summed digitally. Rounding passes gradients straight through, saturation too
(no mask is saved, so the backward costs the convolutions' and nothing more).

Device noise is a draw of hetmap.sim.noise (programming, drift and read
noise per weight, as a function of its programmed conductance, per tile at
the budget's drift time), kept as a fixed additive error and per-column
compensation factors: the live weight plus `scale` times that error trains
with every step's gradient. With the same generators as the simulator's
`program`/`read`, a draw equals the simulation's draw.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import onnx_ir as ir
import torch

from hetmap.graph.layouts import PEAK_FLOOR, WeightLayout, row_ranges
from hetmap.sim import noise as pcm
from hetmap.targets import Target
from hetmap.train.interpreter import run_node


class _Codes(torch.autograd.Function):
    """round(x / step) saturated at +-levels, in converter codes; the gradient is 1 / step everywhere."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, step: float, levels: float) -> torch.Tensor:
        ctx.step = step
        codes = torch.div(x, step).round_() if step != 1.0 else torch.round(x)
        return codes.clamp_(-levels, levels)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return (grad if ctx.step == 1.0 else grad / ctx.step), None, None


@dataclass
class BlockNoise:
    """One row block's device draw: the weight error (block weight form) and per-column compensation."""

    error: torch.Tensor  # compensated weight minus the clean weight it was drawn for
    compensation: torch.Tensor  # [cols] global drift compensation of the tile holding each column


@dataclass(frozen=True)
class _Block:
    rows: tuple[int, int]  # [start, stop) of the crossbar matrix
    channels: tuple[int, int]  # input channels per group, [start, stop) (convolutions)
    gather: torch.Tensor | None  # input channel indices of a grouped convolution's block


class AnalogOp:
    """The analog computation of one Conv, Gemm or MatMul node over its (live, trainable) weight."""

    def __init__(self, node: ir.Node, layout: WeightLayout, target: Target, input_range: float, block_rows: int):
        self.node, self.layout, self.target = node, layout, target
        analog = target.analog
        self.dac_levels = float(2 ** (analog.dac_bits - 1) - 1)
        self.dac_step = float(np.float32(input_range / self.dac_levels))
        self.adc_levels = float(2 ** (analog.adc_bits - 1) - 1)
        adc_step = 2 * analog.adc_bound / (2**analog.adc_bits - 2)  # the simulator's (aihwkit's) ADC step
        self.adc_unit = adc_step * input_range  # real units per ADC code per unit of column peak
        rows = layout.kernel * layout.input_channels_per_group() if layout.is_conv else self._rows()
        self.blocks = []
        for start, stop in row_ranges(rows, block_rows):
            first, count = start // layout.kernel, (stop - start) // layout.kernel
            gather = None
            if layout.is_conv and layout.groups > 1:
                gather = torch.from_numpy(layout.block_channels(first, count))
            self.blocks.append(_Block((start, stop), (first, first + count), gather))
        self.noise: list[BlockNoise] | None = None
        self.noise_scale = 1.0

    def _rows(self) -> int:
        return self.layout.to_matrix(np.empty(self.layout.shape, np.float32)).shape[0]

    # Device noise -------------------------------------------------------------------------------

    def matrix(self, weight: np.ndarray) -> np.ndarray:
        return self.layout.to_matrix(weight.astype(np.float32))

    def program(self, weight: np.ndarray, rng: np.random.Generator) -> list[list[pcm.ProgrammedArray]]:
        """Program every tile of the layer once (as Simulation.program: row blocks, then column tiles)."""
        matrix, noise = self.matrix(weight), self.target.analog.noise
        return [
            [pcm.program_weights(matrix[b.rows[0] : b.rows[1], t], noise, rng) for t in self._tiles()]
            for b in self.blocks
        ]

    def read(self, programmed, t_inference_s: float, rng: np.random.Generator, device) -> list[BlockNoise]:
        """The tiles read t_inference_s after programming (as Simulation.read), as errors on the clean weight."""
        noise = self.target.analog.noise
        uncompensated = dataclasses.replace(noise, drift_compensation=False)
        result = []
        for block, arrays in zip(self.blocks, programmed):
            reads, factors = [], []
            for array in arrays:
                read = pcm.read_weights(array, uncompensated, t_inference_s, rng)
                factor = _compensation(array, read) if noise.drift_compensation else 1.0
                reads.append(read * np.float32(factor))
                factors.append(np.full(read.shape[1], factor, np.float32))
            clean = np.concatenate([array.weights for array in arrays], axis=1)
            error = self._block_form(np.concatenate(reads, axis=1) - clean, block)
            compensation = torch.from_numpy(np.concatenate(factors)).to(device)
            result.append(BlockNoise(torch.from_numpy(error).to(device), compensation))
        return result

    def _tiles(self) -> list[slice]:
        cols, width = self.layout.to_matrix(np.empty(self.layout.shape, np.float32)).shape[1], self.target.analog.cols
        return [slice(start, min(start + width, cols)) for start in range(0, cols, width)]

    def _block_form(self, matrix_block: np.ndarray, block: _Block) -> np.ndarray:
        """A matrix block in the form forward slices the live weight into (conv weight or matrix rows)."""
        if self.layout.op_type == "Conv":
            return self.layout.block_weight(matrix_block, block.channels[1] - block.channels[0])
        return np.ascontiguousarray(matrix_block)

    # Forward --------------------------------------------------------------------------------------

    def __call__(self, inputs: list[torch.Tensor | None], activation: int, operand: int) -> torch.Tensor:
        x, weight = inputs[activation], inputs[operand]
        codes = _Codes.apply(x, self.dac_step, self.dac_levels)
        if self.layout.op_type == "Conv":
            y = self._conv(codes, weight)
            bias = inputs[2] if len(inputs) > 2 else None
            return y if bias is None else y + bias.reshape(1, -1, *([1] * (weight.dim() - 2)))
        if self.node.op_type == "Gemm":
            if self.node.attributes.get_int("transA", 0):
                codes = codes.T
            y = self._matmul(codes, weight) * self.node.attributes.get_float("alpha", 1.0)
            bias = inputs[2] if len(inputs) > 2 else None
            return y if bias is None else y + self.node.attributes.get_float("beta", 1.0) * bias
        return self._matmul(codes, weight)

    def _scaled(self, block_weight: torch.Tensor, index: int, column_axes: tuple[int, ...]):
        """The block's weight in ADC codes per DAC code (noise applied), and real units per ADC code per column."""
        peak = block_weight.detach().abs().amax(dim=column_axes).clamp_min(PEAK_FLOOR)
        per_code = peak * self.adc_unit
        if self.noise is not None and self.noise_scale > 0:
            noise, scale = self.noise[index], self.noise_scale
            compensation = 1 + scale * (noise.compensation - 1)
            block_weight = block_weight + scale * noise.error
            per_code = per_code * compensation
        shape = (-1, *([1] * (block_weight.dim() - 1))) if column_axes != (0,) else (1, -1)
        return block_weight * (self.dac_step / per_code).reshape(shape), per_code

    def _conv(self, codes: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        spatial = (1,) * (weight.dim() - 2)
        if len(self.blocks) == 1:
            parts = [codes]
        elif self.layout.groups == 1:
            parts = torch.split(codes, [b.channels[1] - b.channels[0] for b in self.blocks], dim=1)
        else:
            parts = [codes.index_select(1, b.gather.to(codes.device)) for b in self.blocks]
        y = None
        axes = tuple(range(1, weight.dim()))
        for index, (block, part) in enumerate(zip(self.blocks, parts)):
            block_weight, per_code = self._scaled(weight[:, block.channels[0] : block.channels[1]], index, axes)
            adc = _Codes.apply(run_node(self.node, [part, block_weight])[0], 1.0, self.adc_levels)
            partial = adc * per_code.reshape(1, -1, *spatial)
            y = partial if y is None else y + partial
        return y

    def _matmul(self, codes: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        matrix = weight.T if self.layout.transposed else weight
        parts = torch.split(codes, [b.rows[1] - b.rows[0] for b in self.blocks], dim=-1)
        y = None
        for index, (block, part) in enumerate(zip(self.blocks, parts)):
            block_weight, per_code = self._scaled(matrix[block.rows[0] : block.rows[1]], index, (0,))
            adc = _Codes.apply(torch.matmul(part, block_weight), 1.0, self.adc_levels)
            partial = adc * per_code
            y = partial if y is None else y + partial
        return y


def _compensation(array: pcm.ProgrammedArray, read: np.ndarray) -> float:
    """Global drift compensation of one tile: mean |g| at programming over mean |g| now (the simulator's)."""
    g_now = float(np.abs(read * array.us_per_weight).mean())
    return array.g_reference_mean_us / g_now if g_now > 0 else 1.0


def analog_unsupported(node: ir.Node, layout: WeightLayout, operand: int) -> str | None:
    """Why the analog op cannot compute this layer (it then trains in full precision), or None."""
    if node.op_type == "ConvTranspose":
        return "ConvTranspose"
    if node.op_type == "Conv":
        return None
    if len(layout.shape) != 2:
        return "vector weight"
    if operand != 1:
        return f"weight on the left of {node.op_type}"
    return None

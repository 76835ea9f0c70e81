"""Row blocks of analog layers: the values a simulation graph's drawn initializers take.

A block computes in converter codes (hetmap.sim.simulation): its weight
initializer is W x to_codes, and its output scale turns ADC codes back into
real units. The blocks of a grouped convolution (hetmap.sim.adc) share one
weight and one output scale, each filling its slot.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_ir as ir

from hetmap.graph.layouts import PEAK_FLOOR, WeightLayout
from hetmap.sim import noise as pcm


@dataclass
class AnalogBlock:
    """One row block of an analog layer: its tiles share inputs and sum after their ADCs.

    The graph computes in converter codes: the block's weight initializer is
    W x to_codes (per column), so integer DAC codes times it give ADC codes
    directly, and the ADC's integers times `output_scale` (real units per
    code, times each tile's drift compensation) give the partial product.
    """

    weight: ir.Value  # initializer: the block's weight in converter codes
    output_scale: ir.Value  # initializer: real units per ADC code, per column
    matrix: np.ndarray  # clean W[rows_b, cols] block
    to_codes: np.ndarray  # [cols]: DAC step / ADC step in real units
    adc_scale: np.ndarray  # [cols]: real units per ADC code without drift compensation
    layout: WeightLayout
    channels: int  # input channels per group (convolutions) or rows (matrices)
    tile_cols: int
    slot: int | None = None  # its place in a weight its layer's blocks share (one grouped convolution)

    def tiles(self) -> list[slice]:
        cols = self.matrix.shape[1]
        return [slice(start, min(start + self.tile_cols, cols)) for start in range(0, cols, self.tile_cols)]

    def store(self, values: dict[str, np.ndarray], matrix: np.ndarray, compensation: np.ndarray) -> None:
        """Put the initializer values for block weights `matrix` and per-column compensation factors in `values`.

        A block with a slot fills its rows of the shared weight (zero beyond its channels) and output scale.
        """
        weight = self.layout.block_weight(matrix * self.to_codes, self.channels)
        scale = self.adc_scale * compensation
        if self.slot is None:
            values[self.weight.name] = weight
            values[self.output_scale.name] = scale.reshape(self.output_scale.const_value.shape)
            return
        shared = [values.get(value.name) for value in (self.weight, self.output_scale)]
        for index, value in enumerate((self.weight, self.output_scale)):
            if shared[index] is None:
                shared[index] = values[value.name] = np.zeros(tuple(value.const_value.shape), np.float32)
        rows = slice(self.slot * weight.shape[0], (self.slot + 1) * weight.shape[0])
        shared[0][rows, : self.channels] = weight
        shared[1][rows] = scale.reshape(shared[1][rows].shape)


def converters(block: np.ndarray, input_range: float, dac_step: float, adc_step: float):
    """(real units per ADC code, DAC step over ADC step) per column of a row block."""
    column_peak = np.abs(block).max(axis=0)
    column_peak[column_peak == 0] = 1
    np.maximum(column_peak, np.float32(PEAK_FLOOR), out=column_peak)
    adc_scale = (adc_step * input_range * column_peak).astype(np.float32)
    return adc_scale, (dac_step / adc_scale).astype(np.float32)


def clean_block(layout: WeightLayout, block: np.ndarray, to_codes: np.ndarray, channels: int) -> ir.LazyTensor:
    """A block's noiseless weight in converter codes, computed only when asked for.

    Draws replace it, so a measurement never holds a second copy of the model's analog weights.
    """
    if layout.op_type == "Conv":
        shape = (block.shape[1], channels, *layout.shape[2:])
    elif layout.op_type == "ConvTranspose":
        shape = (layout.groups * channels, layout.shape[1], *layout.shape[2:])
    else:
        shape = block.shape
    return ir.LazyTensor(
        lambda: ir.tensor(layout.block_weight(block * to_codes, channels)), ir.DataType.FLOAT, ir.Shape(shape)
    )


def clean_grouped(blocks: list[AnalogBlock]) -> np.ndarray:
    """The noiseless weight the blocks with slots share."""
    values = {}
    for block in blocks:
        block.store(values, block.matrix, np.ones(block.matrix.shape[1], np.float32))
    return values[blocks[0].weight.name]


def tile_compensation(array: pcm.ProgrammedArray, read: np.ndarray) -> float:
    """Global drift compensation of one tile: mean |g| at programming over mean |g| now."""
    g_now = float(np.abs(read * array.us_per_weight).mean())
    return array.g_reference_mean_us / g_now if g_now > 0 else 1.0

"""Weight layouts: an ONNX weight tensor as the crossbar matrix W[rows_in, cols_out], and back.

Rows are ordered as the partition pass counts them: for convolutions
channel-major (channel, kernel tap), so a row block of whole channels is a
contiguous row range; columns are output channels (all groups side by side).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

# Weight-column peaks and input ranges below this count as this. Such a column
# computes ~0 at any precision, while g_max or a converter step divided by a
# denormal peak overflows float32 to inf, which noise and quantisers turn into
# NaN; 1e-15 keeps products of a range and a peak (ADC scales) normal too.
PEAK_FLOOR = 1e-15


@dataclass(frozen=True)
class WeightLayout:
    """How one layer's weight initializer maps onto its crossbar matrix."""

    op_type: str  # Conv, ConvTranspose, Gemm, MatMul
    shape: tuple[int, ...]  # of the initializer
    groups: int = 1
    transposed: bool = False  # 2-D weights stored as (cols, rows)

    @property
    def is_conv(self) -> bool:
        return self.op_type in ("Conv", "ConvTranspose")

    @property
    def kernel(self) -> int:
        return math.prod(self.shape[2:]) if self.is_conv else 1

    @property
    def output_axis(self) -> int | None:
        """Axis of the initializer indexing output columns (None: a vector, per-tensor)."""
        if self.op_type == "Conv":
            return 0
        if self.op_type == "ConvTranspose":
            return 1
        if len(self.shape) == 1:
            return None
        return 0 if self.transposed else 1

    def to_matrix(self, weight: np.ndarray) -> np.ndarray:
        if self.op_type == "Conv":
            return weight.reshape(self.shape[0], -1).T
        if self.op_type == "ConvTranspose":
            cin, cout_g = self.shape[0], self.shape[1]
            g, k = self.groups, self.kernel
            blocks = weight.reshape(g, cin // g, cout_g, k)
            return blocks.transpose(1, 3, 0, 2).reshape((cin // g) * k, g * cout_g)
        if weight.ndim == 1:
            return weight[:, None]
        return weight.T if self.transposed else weight

    def block_weight(self, matrix_block: np.ndarray, channels: int) -> np.ndarray:
        """The weight tensor of a row block holding `channels` input channels per group.

        For convolutions it is the weight of a convolution over the gathered
        channels (see `block_channels`); for matrices, the matrix block itself.
        """
        if self.op_type == "Conv":
            return np.ascontiguousarray(matrix_block.T.reshape(self.shape[0], channels, *self.shape[2:]))
        if self.op_type == "ConvTranspose":
            g, cout_g = self.groups, self.shape[1]
            blocks = matrix_block.reshape(channels, self.kernel, g, cout_g).transpose(2, 0, 3, 1)
            return np.ascontiguousarray(blocks.reshape(g * channels, cout_g, *self.shape[2:]))
        return np.ascontiguousarray(matrix_block)

    def input_channels_per_group(self) -> int:
        return self.shape[1] if self.op_type == "Conv" else self.shape[0] // self.groups

    def block_channels(self, first: int, count: int) -> np.ndarray:
        """Input channel indices (group-major) that a row block of channels [first, first+count) reads."""
        per_group = self.input_channels_per_group()
        return np.array(
            [group * per_group + first + c for group in range(self.groups) for c in range(count)],
            dtype=np.int64,
        )


def row_ranges(rows: int, block_rows: int) -> list[tuple[int, int]]:
    """[start, stop) of each row block."""
    return [(start, min(start + block_rows, rows)) for start in range(0, rows, block_rows)]


def quantize_symmetric(weight: np.ndarray, bits: int, axis: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel symmetric integers and scales: w ~ q * scale, |q| <= 2^(bits-1) - 1.

    One float temporary the size of the weight (a large layer's copies add up).
    """
    levels = 2 ** (bits - 1) - 1
    others = None if axis is None else tuple(i for i in range(weight.ndim) if i != axis)
    peak = np.maximum(weight.max(axis=others), -weight.min(axis=others))
    if axis is None:
        peak = np.asarray(peak).reshape(())
    scale = np.where(peak > 0, np.maximum(peak, PEAK_FLOOR) / levels, 1.0).astype(np.float32)
    shape = [1] * weight.ndim
    if axis is not None:
        shape[axis] = -1
    scaled = np.divide(weight, scale.reshape(shape))
    np.round(scaled, out=scaled)
    np.clip(scaled, -levels, levels, out=scaled)
    return scaled.astype(np.int8), scale

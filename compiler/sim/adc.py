"""The ADC of a convolution's row block as convolutions only, which onnxruntime keeps in its NCHWc layout.

The old form, Conv -> Round -> Clip -> Mul, leaves that layout at Round (no
NCHWc kernel) for every block; this one computes the same numbers, bit for bit:
the block convolution's bias ADC_SHIFT (1.5 x 2^23, where float32's spacing is
1) rounds the accumulated sum half to even as Round does; the Clip, fused into
the convolution, saturates at ADC_SHIFT +- levels (a sum beyond float32's exact
range still saturates: addition is monotone); a 1x1 depthwise convolution
takes the shift back off (exact: integers below 2^24) and another multiplies
by the output scale, as Mul does. onnxruntime adds a convolution's bias after
the whole sum (tests/test_simulate.py checks the two forms agree).

A layer's equal row blocks of at least NCHWC_CHANNELS channels run as one
grouped convolution (grouped_blocks): one Gather, one ADC over all blocks,
the same numbers as one convolution per block, bit for bit.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

ADC_SHIFT = 12582912.0  # 1.5 x 2^23
ADC_SHIFT_LEVELS = 1 << 22  # codes this wide or wider keep the Round form
NCHWC_CHANNELS = 16


def shifted_block(builder, node: ir.Node, inputs, weight, output_scale, adc_levels: int, index: int) -> ir.Value:
    """One row block of Conv `node`: its partial product in real units; `output_scale` has shape [cout, 1, 1...]."""
    cout = node.inputs[1].const_value.shape[0]
    spatial = len(node.inputs[1].const_value.shape) - 2
    attributes = {name: attr.value for name, attr in node.attributes.items()}
    shift, low, high, ones, unshift = _constants(builder, cout, spatial, adc_levels)
    partial = builder.op("Conv", [inputs, weight, shift], f"tile_mvm{index}", **attributes)
    shifted = builder.op("Clip", [partial, low, high], f"adc{index}_clip")
    depthwise = {"group": cout, "kernel_shape": [1] * spatial}
    codes = builder.op("Conv", [shifted, ones, unshift], f"adc{index}_codes", **depthwise)
    return builder.op("Conv", [codes, output_scale], f"adc{index}_out", **depthwise)


def _constants(builder, cout: int, spatial: int, adc_levels: int) -> tuple[ir.Value, ...]:
    """The shifted ADC's constants, one set per output width in the whole graph (fewer for onnxruntime to reorder)."""
    key = (cout, spatial, adc_levels)
    if key not in builder.shared:
        prefix, builder.prefix = builder.prefix, f"hetmap_adc_{cout}x{spatial}d_{adc_levels}"
        builder.shared[key] = (
            builder.constant("shift", np.full(cout, ADC_SHIFT, np.float32)),
            builder.constant("low", np.array(ADC_SHIFT - adc_levels, np.float32)),
            builder.constant("high", np.array(ADC_SHIFT + adc_levels, np.float32)),
            builder.constant("ones", np.ones((cout, 1, *[1] * spatial), np.float32)),
            builder.constant("unshift", np.full(cout, -ADC_SHIFT, np.float32)),
        )
        builder.prefix = prefix
    return builder.shared[key]


def grouped_count(layout, ranges: list[tuple[int, int]]) -> int:
    """How many leading row blocks of a Conv go into one grouped convolution (all of equal size; 0: none).

    Blocks of fewer than NCHWC_CHANNELS channels stay one Conv each: onnxruntime reads those unpadded
    (its NCHW-input kernel, which sums in another order), and padding them would multiply their work.
    """
    if (
        layout.op_type != "Conv"
        or layout.groups != 1
        or (ranges[0][1] - ranges[0][0]) // layout.kernel < NCHWC_CHANNELS
    ):
        return 0
    count = sum(stop - start == ranges[0][1] - ranges[0][0] for start, stop in ranges)
    return count if count > 1 else 0


def padded_channels(channels: int) -> int:
    """Input channels per group of the grouped convolution: onnxruntime keeps a grouped Conv in NCHWc only with
    a multiple of its channel block (16 with AVX-512, 8 with AVX2) per group."""
    return -(-channels // NCHWC_CHANNELS) * NCHWC_CHANNELS


def grouped_channels(channels: int, firsts: list[int], input_channels: int) -> np.ndarray | None:
    """Gather indices of the grouped convolution's input (None: the input itself).

    Each block's channels, then its first channel again up to padded_channels: its weights there are zero.
    """
    padded = padded_channels(channels)
    if padded == channels and firsts == list(range(0, input_channels, channels)):
        return None
    pad = padded - channels
    return np.array([c for first in firsts for c in [*range(first, first + channels), *[first] * pad]], np.int64)


def grouped_blocks(builder, node: ir.Node, inputs, weight, output_scale, count: int, adc_levels: int) -> ir.Value:
    """`count` row blocks of Conv `node` as one grouped Conv: the sum of their partial products in real units.

    The shifted ADC runs once over [N, count x cout, ...]; a MatMul with ones sums the blocks as Sum does,
    in order (onnxruntime's ReduceSum over that axis was 10x slower).
    """
    cout = node.inputs[1].const_value.shape[0]
    spatial = len(node.inputs[1].const_value.shape) - 2
    attributes = {name: attr.value for name, attr in node.attributes.items()}
    shift, low, high, ones, unshift = _constants(builder, count * cout, spatial, adc_levels)
    partial = builder.op("Conv", [inputs, weight, shift], "tile_mvm", **{**attributes, "group": count})
    shifted = builder.op("Clip", [partial, low, high], "adc_clip")
    depthwise = {"group": count * cout, "kernel_shape": [1] * spatial}
    codes = builder.op("Conv", [shifted, ones, unshift], "adc_codes", **depthwise)
    scaled = builder.op("Conv", [codes, output_scale], "adc_out", **depthwise)
    view = builder.op(
        "Reshape", [scaled, builder.constant("blocks_view", np.array([0, count, -1], np.int64))], "blocks"
    )
    total = builder.op("MatMul", [builder.constant("blocks_ones", np.ones((1, count), np.float32)), view], "blocks_sum")
    dims = node.outputs[0].shape
    if dims is not None and all(isinstance(d, int) for d in dims[2:]):
        shape = builder.constant("output_shape", np.array([0, cout, *dims[2:]], np.int64))
    else:
        head = builder.constant("output_head", np.array([0, cout], np.int64))
        shape = builder.op("Concat", [head, builder.op("Shape", [scaled], "spatial", start=2)], "output_shape", axis=0)
    return builder.op("Reshape", [total, shape], "blocks_output")

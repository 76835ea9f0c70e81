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
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

ADC_SHIFT = 12582912.0  # 1.5 x 2^23
ADC_SHIFT_LEVELS = 1 << 22  # codes this wide or wider keep the Round form


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

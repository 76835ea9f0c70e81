"""Simulation graph: the annotated model with its hardware effects as standard ONNX ops.

Analog layers: the input passes a DAC (clip to the calibrated range, round
to dac_bits), each row block of the weight matrix is one tile computing a
partial product with programmed-and-drifted weights, the ADC rounds and
saturates each tile's outputs (adc_bits over +-adc_bound in normalised
units) before the digital sum, and the bias is added digitally. Digital
INTk layers quantise weights per output channel (stored as INTk, restored
by DequantizeLinear) and activations to 8 bits. Activation and converter
quantisers are Div/Round/Clip/Mul (a DAC of up to 8 bits QuantizeLinear,
hetmap.sim.adc the ADC of baked convolutions); noise is drawn in numpy and enters as
initializer values, so stock onnxruntime runs it and a seed
reproduces it. Mirrors aihwkit's TorchInferenceRPUConfig forward with
static input ranges, no noise or bound management and no output noise.
"""

from __future__ import annotations

import functools

import ml_dtypes
import numpy as np
import onnx_ir as ir
import onnx_ir.passes.common as common_passes

from hetmap.graph.layouts import WeightLayout, quantize_symmetric, row_ranges
from hetmap.mapping.annotations import read_layer
from hetmap.sim import adc
from hetmap.sim.blocks import AnalogBlock, clean_block, clean_grouped, converters
from hetmap.sim.cut import shared_copy
from hetmap.sim.draws import Simulation
from hetmap.targets import Target

ACTIVATION_BITS = 8  # digital layers see INT8 activations


def _conv_bias(node: ir.Node, layout: WeightLayout) -> np.ndarray | None:
    """A convolution's bias shaped to add to its output, or None."""
    if not layout.is_conv or len(node.inputs) < 3 or node.inputs[2] is None:
        return None
    return node.inputs[2].const_value.numpy().reshape(-1, *([1] * (len(layout.shape) - 2)))


class _Builder:
    """Rewrites one graph in place, naming every new value after its layer, apart from every name it holds."""

    def __init__(self, model: ir.Model, target: Target):
        self.graph = model.graph
        self.target = target
        self.simulation = Simulation(model, target)
        self.nodes: list[ir.Node] = []
        self.prefix = ""
        self.shifted_adc = False
        self.shared: dict[tuple, tuple[ir.Value, ...]] = {}
        self.taken = {value.name for value in (*self.graph.inputs, *self.graph.initializers.values())}
        for node in ir.traversal.RecursiveGraphIterator(self.graph):
            self.taken.update(value.name for value in node.outputs)

    def _name(self, suffix: str) -> str:
        """`layer/suffix`, numbered where the graph already has that name (a model hetmap simulated before)."""
        name = candidate = f"{self.prefix}/{suffix}"
        number = 0
        while candidate in self.taken:
            number += 1
            candidate = f"{name}_{number}"
        self.taken.add(candidate)
        return candidate

    def constant(self, suffix: str, array: np.ndarray | ir.LazyTensor) -> ir.Value:
        name = self._name(suffix)
        tensor = array if isinstance(array, ir.LazyTensor) else ir.tensor(array, name=name)
        value = ir.Value(name=name, const_value=tensor)
        self.graph.register_initializer(value)
        return value

    def op(self, op_type: str, inputs, suffix: str, **attributes) -> ir.Value:
        name = self._name(suffix)
        node = ir.node(op_type, inputs, attributes or None, name=name)
        node.outputs[0].name = name
        self.nodes.append(node)
        return node.outputs[0]

    def input_quantizer(self, x: ir.Value, input_range: float, bits: int, suffix: str) -> ir.Value:
        """A digital layer's INT8 activations: full scale = the calibrated range, back in real units.

        Div/Round/Clip/Mul rather than QuantizeLinear/DequantizeLinear: with
        a QDQ pair around a Conv, onnxruntime's optimiser fuses it into an
        integer kernel that re-quantises the weights, so the graph would
        compute something else than it says.
        """
        levels = 2 ** (bits - 1) - 1
        step = input_range / levels
        codes = self.codes(x, step, levels, suffix)
        return self.op("Mul", [codes, self.constant(f"{suffix}_scale", np.array(step, np.float32))], f"{suffix}_mul")

    def digital(
        self, node: ir.Node, layout: WeightLayout, operand: int, activation: int, bits: int, input_range: float
    ):
        x = self.input_quantizer(node.inputs[activation], input_range, ACTIVATION_BITS, "act")
        q, scale = quantize_symmetric(node.inputs[operand].const_value.numpy(), bits, layout.output_axis)
        if bits == 4:
            q = q.astype(ml_dtypes.int4)
        stored = self.constant(f"weight_int{bits}", q)
        axis_attr = {} if layout.output_axis is None else {"axis": layout.output_axis}
        weight = self.op("DequantizeLinear", [stored, self.constant("weight_scale", scale)], "weight_dq", **axis_attr)
        self.graph.insert_before(node, self.nodes)
        self.nodes = []
        node.replace_input_with(activation, x)
        node.replace_input_with(operand, weight)

    def dac(self, x: ir.Value, step: float, levels: int) -> ir.Value:
        """The DAC's codes (as float): QuantizeLinear divides and rounds half to even as Div and Round do.

        Bit for bit the codes Div/Round/Clip compute (tests/test_simulate.py), in one pass where those
        take three, and the saturation at +-levels runs on int8; a wider DAC keeps Div/Round/Clip.
        """
        if levels > 127:
            return self.codes(x, step, levels, "dac")
        zero = self.constant("dac_zero", np.array(0, np.int8))
        q = self.op("QuantizeLinear", [x, self.constant("dac_step", np.array(step, np.float32)), zero], "dac_quantize")
        if levels < 127 or x.producer() is None or x.producer().op_type != "Relu":  # int8 also holds -128
            bounds = [
                self.constant(f"dac_{side}", np.array(v, np.int8)) for side, v in (("low", -levels), ("high", levels))
            ]
            q = self.op("Clip", [q, *bounds], "dac_clip")
        return self.op("Cast", [q], "dac_codes", to=ir.DataType.FLOAT)

    def codes(self, x: ir.Value, step: float, levels: int, suffix: str) -> ir.Value:
        """x as integer converter codes (in float): round(x / step), saturated at +-levels."""
        q = self.op(
            "Round",
            [self.op("Div", [x, self.constant(f"{suffix}_step", np.array(step, np.float32))], f"{suffix}_div")],
            f"{suffix}_round",
        )
        bounds = [
            self.constant(f"{suffix}_{side}", np.array(v, np.float32))
            for side, v in (("low", -levels), ("high", levels))
        ]
        return self.op("Clip", [q, *bounds], f"{suffix}_clip")

    def analog(
        self,
        node: ir.Node,
        layout: WeightLayout,
        operand: int,
        activation: int,
        input_range: float,
        block_rows: int,
        activation_rank: int,
    ):
        analog = self.target.analog
        matrix = layout.to_matrix(np.asarray(node.inputs[operand].const_value.numpy(), dtype=np.float32))
        dac_levels = 2 ** (analog.dac_bits - 1) - 1
        dac_step = input_range / dac_levels
        x = self.dac(node.inputs[activation], dac_step, dac_levels)
        adc_levels = 2 ** (analog.adc_bits - 1) - 1
        adc_step = 2 * analog.adc_bound / (2**analog.adc_bits - 2)  # aihwkit's out_res x 2 out_bound
        if layout.is_conv:
            features, restore = x, None
        else:
            features, restore = self._features_last(node, x, activation, activation_rank)
        channel_shape = (-1, *([1] * (len(layout.shape) - 2))) if layout.is_conv else (-1,)
        shifted = self.shifted_adc and layout.op_type == "Conv" and adc_levels < adc.ADC_SHIFT_LEVELS
        if shifted:
            channel_shape = (-1, 1, *([1] * (len(layout.shape) - 2)))  # a depthwise convolution's weight
        ranges = row_ranges(matrix.shape[0], block_rows)
        scales_of = functools.partial(converters, input_range=input_range, dac_step=dac_step, adc_step=adc_step)
        grouped = adc.grouped_count(layout, ranges) if shifted else 0
        partials = [self._grouped(node, layout, matrix, ranges[:grouped], x, scales_of, adc_levels)] if grouped else []
        for index, (start, stop) in enumerate(ranges):
            if index < grouped:
                continue
            block = matrix[start:stop]
            channels = (stop - start) // layout.kernel
            adc_scale, to_codes = scales_of(block)
            weight = self.constant(f"tile_rows{index}", clean_block(layout, block, to_codes, channels))
            output_scale = self.constant(f"adc{index}_scale", adc_scale.reshape(channel_shape))
            self.simulation.blocks.append(
                AnalogBlock(weight, output_scale, block, to_codes, adc_scale, layout, channels, analog.cols)
            )
            inputs = features
            if len(ranges) > 1 and layout.is_conv:
                indices = layout.block_channels(start // layout.kernel, channels)
                inputs = self.op(
                    "Gather", [features, self.constant(f"rows{index}_indices", indices)], f"rows{index}", axis=1
                )
            elif len(ranges) > 1:
                bounds = [
                    self.constant(f"rows{index}_{k}", np.array([v], np.int64))
                    for k, v in (("start", start), ("stop", stop), ("axis", -1))
                ]
                inputs = self.op("Slice", [features, *bounds], f"rows{index}")
            if shifted:
                partials.append(adc.shifted_block(self, node, inputs, weight, output_scale, adc_levels, index))
                continue
            if layout.is_conv:
                attributes = {name: attr.value for name, attr in node.attributes.items()}
                partial = self.op(node.op_type, [inputs, weight], f"tile_mvm{index}", **attributes)
            else:
                partial = self.op("MatMul", [inputs, weight], f"tile_mvm{index}")
            adc_codes = self.op(
                "Clip",
                [
                    self.op("Round", [partial], f"adc{index}_round"),
                    *[
                        self.constant(f"adc{index}_{side}", np.array(v, np.float32))
                        for side, v in (("low", -adc_levels), ("high", adc_levels))
                    ],
                ],
                f"adc{index}_clip",
            )
            partials.append(self.op("Mul", [adc_codes, output_scale], f"adc{index}_out"))
        bias = _conv_bias(node, layout)
        if bias is not None and len(partials) > 1:  # Sum adds it last, as Add after it would: one pass less
            partials.append(self.constant("bias", bias))
        y = partials[0] if len(partials) == 1 else self.op("Sum", partials, "tile_sum")
        if restore is not None and len(layout.shape) > 1:  # a vector weight's unit axis is squeezed instead
            y = restore(y)
        y = self._finish(node, y, layout, bias is None or len(partials) > 1)
        ir.convenience.replace_nodes_and_values(self.graph, node, [node], self.nodes, [node.outputs[0]], [y])
        self.nodes = []

    def _grouped(self, node: ir.Node, layout: WeightLayout, matrix, ranges, x: ir.Value, scales_of, adc_levels: int):
        """A Conv's leading equal row blocks as one grouped convolution (hetmap.sim.adc.grouped_blocks)."""
        channels = (ranges[0][1] - ranges[0][0]) // layout.kernel
        cout, spatial = layout.shape[0], len(layout.shape) - 2
        parts = [(matrix[start:stop], *scales_of(matrix[start:stop])) for start, stop in ranges]
        blocks: list[AnalogBlock] = []
        shape = ir.Shape((len(ranges) * cout, adc.padded_channels(channels), *layout.shape[2:]))
        clean = ir.LazyTensor(lambda: ir.tensor(clean_grouped(blocks)), ir.DataType.FLOAT, shape)
        weight = self.constant("tile_rows", clean)
        output_scale = self.constant("adc_scale", np.concatenate([p[1] for p in parts]).reshape(-1, 1, *[1] * spatial))
        cols = self.target.analog.cols
        blocks += [
            AnalogBlock(weight, output_scale, b, codes, scale, layout, channels, cols, slot)
            for slot, (b, scale, codes) in enumerate(parts)
        ]
        self.simulation.blocks.extend(blocks)
        indices = adc.grouped_channels(channels, [start // layout.kernel for start, _ in ranges], layout.shape[1])
        if indices is not None:
            x = self.op("Gather", [x, self.constant("rows_indices", indices)], "rows", axis=1)
        return adc.grouped_blocks(self, node, x, weight, output_scale, len(ranges), adc_levels)

    def _features_last(self, node: ir.Node, x: ir.Value, activation: int, rank: int):
        """The activation with the reduction axis last, and how to put the result back."""
        swap = list(range(rank))
        if rank >= 2:
            swap[-1], swap[-2] = swap[-2], swap[-1]
        if node.op_type == "Gemm":
            trans = node.attributes.get_int("transA" if activation == 0 else "transB", 0)
            needs_transpose = bool(trans) if activation == 0 else not trans
        else:
            needs_transpose = activation == 1 and rank >= 2
        features = self.op("Transpose", [x], "features", perm=swap) if needs_transpose else x
        output_transposed = activation == 1 and rank >= 2
        if not output_transposed:
            return features, None
        return features, lambda y: self.op("Transpose", [y], "output", perm=swap)

    def _finish(self, node: ir.Node, y: ir.Value, layout: WeightLayout, biased: bool) -> ir.Value:
        """Digital epilogue: bias (unless `biased`), Gemm's alpha and beta, a vector weight's unit axis."""
        if layout.is_conv:
            if not biased:
                y = self.op("Add", [y, self.constant("bias", _conv_bias(node, layout))], "bias_add")
            return y
        if node.op_type == "Gemm":
            alpha = node.attributes.get_float("alpha", 1.0)
            beta = node.attributes.get_float("beta", 1.0)
            if alpha != 1.0:
                y = self.op("Mul", [y, self.constant("alpha", np.array(alpha, np.float32))], "alpha_mul")
            if len(node.inputs) > 2 and node.inputs[2] is not None:
                c = node.inputs[2]
                if beta != 1.0:
                    c = self.op("Mul", [c, self.constant("beta", np.array(beta, np.float32))], "beta_mul")
                y = self.op("Add", [y, c], "bias_add")
            return y
        if len(layout.shape) == 1:
            y = self.op("Squeeze", [y, self.constant("unit_axis", np.array([-1], np.int64))], "squeeze")
        return y


def build_simulation(annotated: ir.Model, target: Target, copy: bool = True, shifted_adc: bool = False) -> Simulation:
    """A copy of the annotated model with every mapped layer rewritten; weights clean until a draw.

    The copy shares the weight tensors (none is modified); copy=False
    rewrites `annotated` itself (a graph built for this simulation alone).
    """
    model = (shared_copy(annotated) or ir.from_proto(ir.to_proto(annotated))) if copy else annotated
    builder = _Builder(model, target)
    builder.shifted_adc = shifted_adc
    for node in list(model.graph):
        annotation = read_layer(node)
        if annotation is None:
            continue
        operand = annotation.weight_operand
        activation = 0 if node.op_type in ("Conv", "ConvTranspose") else 1 - operand
        weight = node.inputs[operand].const_value
        layout = WeightLayout(
            node.op_type, tuple(weight.shape), node.attributes.get_int("group", 1), annotation.weight_transposed
        )
        builder.prefix = node.name
        if annotation.analog:
            builder.analog(
                node,
                layout,
                operand,
                activation,
                annotation.input_range,
                annotation.block_rows,
                annotation.activation_rank,
            )
        else:
            builder.digital(node, layout, operand, activation, annotation.bits, annotation.input_range)
    common_passes.RemoveUnusedNodesPass()(model)
    return builder.simulation

"""Simulation graph: the annotated model with its hardware effects as standard ONNX ops.

Analog layers: the input passes a DAC (clip to the calibrated range, round
to dac_bits), each row block of the weight matrix is one tile computing a
partial product with programmed-and-drifted weights, the ADC rounds and
saturates each tile's outputs (adc_bits over +-adc_bound in normalised
units) before the digital sum, and the bias is added digitally. Digital
INTk layers quantise weights per output channel and activations to 8 bits.
Quantisers are QuantizeLinear/Clip/DequantizeLinear; noise is drawn in numpy
and enters as initializer values, so stock onnxruntime runs it and a seed
reproduces it. Mirrors aihwkit's TorchInferenceRPUConfig forward with
static input ranges, no noise or bound management and no output noise.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import ml_dtypes
import numpy as np
import onnx_ir as ir
import onnx_ir.passes.common as common_passes

from hetmap import noise as pcm
from hetmap.layouts import WeightLayout, quantize_symmetric, row_ranges
from hetmap.mapping import ANALOG
from hetmap.targets import Target

ACTIVATION_BITS = 8  # digital layers see INT8 activations


@dataclass
class AnalogBlock:
    """One row block of an analog layer: its tiles share inputs and sum after their ADCs."""

    weight: ir.Value  # initializer of the block's weight in the simulation graph
    matrix: np.ndarray  # clean W[rows_b, cols] block
    layout: WeightLayout
    channels: int  # input channels per group (convolutions) or rows (matrices)
    tile_cols: int

    def tiles(self) -> list[slice]:
        cols = self.matrix.shape[1]
        return [slice(start, min(start + self.tile_cols, cols)) for start in range(0, cols, self.tile_cols)]


@dataclass
class Simulation:
    """A simulation graph plus the analog blocks whose weights each Monte-Carlo draw replaces."""

    model: ir.Model
    target: Target
    blocks: list[AnalogBlock] = field(default_factory=list)

    def program(self, rng: np.random.Generator) -> list[list[pcm.ProgrammedArray]]:
        """Program every tile once (programming noise and drift exponents)."""
        noise = self.target.analog.noise
        return [[pcm.program_weights(b.matrix[:, tile], noise, rng) for tile in b.tiles()] for b in self.blocks]

    def read(self, programmed, t_inference_s: float, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """Block weights (initializer layout) as the tiles compute t_inference_s after programming."""
        noise = self.target.analog.noise
        weights = {}
        for block, arrays in zip(self.blocks, programmed):
            noisy = np.concatenate([pcm.read_weights(a, noise, t_inference_s, rng) for a in arrays], axis=1)
            weights[block.weight.name] = block.layout.block_weight(noisy, block.channels)
        return weights

    def bake(self, weights: dict[str, np.ndarray]) -> None:
        """Store one draw's weights as the graph's initializers (for a standalone ONNX file)."""
        for block in self.blocks:
            block.weight.const_value = ir.tensor(weights[block.weight.name], name=block.weight.name)


class _Builder:
    """Rewrites one graph in place, naming every new value after its layer."""

    def __init__(self, model: ir.Model, target: Target):
        self.graph = model.graph
        self.target = target
        self.simulation = Simulation(model, target)
        self.nodes: list[ir.Node] = []
        self.prefix = ""

    def constant(self, suffix: str, array: np.ndarray) -> ir.Value:
        name = f"{self.prefix}/{suffix}"
        value = ir.Value(name=name, const_value=ir.tensor(array, name=name))
        self.graph.register_initializer(value)
        return value

    def op(self, op_type: str, inputs, suffix: str, **attributes) -> ir.Value:
        node = ir.node(op_type, inputs, attributes or None, name=f"{self.prefix}/{suffix}")
        node.outputs[0].name = f"{self.prefix}/{suffix}"
        self.nodes.append(node)
        return node.outputs[0]

    def quantize(self, x: ir.Value, scale, levels: int, suffix: str, axis: int | None = None, rank: int = 0) -> ir.Value:
        """Round x/scale to an integer in [-levels, levels] and scale back, in float ops.

        Div/Round/Clip/Mul rather than QuantizeLinear/DequantizeLinear: with
        a QDQ pair around a Conv, onnxruntime's optimiser fuses it into an
        integer kernel that re-quantises the (noisy) weights to int8, so the
        graph would compute something else than it says.
        """
        scale = np.asarray(scale, dtype=np.float32)
        if axis == 1 and scale.ndim:
            scale = scale.reshape(-1, *([1] * (rank - 2)))  # channels of an N,C,... tensor
        step = self.constant(f"{suffix}_step", scale)
        q = self.op("Round", [self.op("Div", [x, step], f"{suffix}_div")], f"{suffix}_round")
        bounds = [self.constant(f"{suffix}_{side}", np.array(v, np.float32)) for side, v in (("low", -levels), ("high", levels))]
        q = self.op("Clip", [q, *bounds], f"{suffix}_clip")
        return self.op("Mul", [q, step], f"{suffix}_mul")

    def input_quantizer(self, x: ir.Value, input_range: float, bits: int, suffix: str) -> ir.Value:
        """DAC (analog) or activation quantiser (digital): full scale = the calibrated range."""
        return self.quantize(x, input_range / (2 ** (bits - 1) - 1), 2 ** (bits - 1) - 1, suffix)

    def digital(self, node: ir.Node, layout: WeightLayout, operand: int, activation: int, bits: int, input_range: float):
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

    def analog(self, node: ir.Node, layout: WeightLayout, operand: int, activation: int, input_range: float, block_rows: int):
        analog = self.target.analog
        matrix = layout.to_matrix(node.inputs[operand].const_value.numpy().astype(np.float32))
        x = self.input_quantizer(node.inputs[activation], input_range, analog.dac_bits, "dac")
        adc_levels = 2 ** (analog.adc_bits - 1) - 1
        adc_step = 2 * analog.adc_bound / (2**analog.adc_bits - 2)  # aihwkit's out_res x 2 out_bound
        if layout.is_conv:
            features, restore = x, None
        else:
            features, restore = self._features_last(node, x, activation)
        axis = 1 if layout.is_conv else -1
        ranges = row_ranges(matrix.shape[0], block_rows)
        partials = []
        for index, (start, stop) in enumerate(ranges):
            block = matrix[start:stop]
            channels = (stop - start) // layout.kernel
            weight = self.constant(f"tile_rows{index}", layout.block_weight(block, channels))
            self.simulation.blocks.append(AnalogBlock(weight, block, layout, channels, analog.cols))
            inputs = features
            if len(ranges) > 1 and layout.is_conv:
                indices = layout.block_channels(start // layout.kernel, channels)
                inputs = self.op("Gather", [features, self.constant(f"rows{index}_indices", indices)], f"rows{index}", axis=1)
            elif len(ranges) > 1:
                bounds = [self.constant(f"rows{index}_{k}", np.array([v], np.int64)) for k, v in (("start", start), ("stop", stop), ("axis", -1))]
                inputs = self.op("Slice", [features, *bounds], f"rows{index}")
            if layout.is_conv:
                attributes = {name: attr.value for name, attr in node.attributes.items()}
                partial = self.op(node.op_type, [inputs, weight], f"tile_mvm{index}", **attributes)
            else:
                partial = self.op("MatMul", [inputs, weight], f"tile_mvm{index}")
            column_peak = np.abs(block).max(axis=0)
            column_peak[column_peak == 0] = 1
            scale = adc_step * input_range * column_peak
            partials.append(self.quantize(partial, scale, adc_levels, f"adc{index}", axis=axis, rank=len(layout.shape)))
        y = partials[0] if len(partials) == 1 else self.op("Sum", partials, "tile_sum")
        if restore is not None and len(layout.shape) > 1:  # a vector weight's unit axis is squeezed instead
            y = restore(y)
        y = self._finish(node, y, layout)
        ir.convenience.replace_nodes_and_values(self.graph, node, [node], self.nodes, [node.outputs[0]], [y])
        self.nodes = []

    def _features_last(self, node: ir.Node, x: ir.Value, activation: int):
        """The activation with the reduction axis last, and how to put the result back."""
        rank = int(node.metadata_props["hetmap.activation_rank"])
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

    def _finish(self, node: ir.Node, y: ir.Value, layout: WeightLayout) -> ir.Value:
        """Digital epilogue: bias, Gemm's alpha and beta, a vector weight's unit axis."""
        if layout.is_conv:
            if len(node.inputs) > 2 and node.inputs[2] is not None:
                bias = node.inputs[2].const_value.numpy()
                spatial = len(layout.shape) - 2
                y = self.op("Add", [y, self.constant("bias", bias.reshape(-1, *([1] * spatial)))], "bias")
            return y
        if node.op_type == "Gemm":
            alpha = node.attributes.get_float("alpha", 1.0)
            beta = node.attributes.get_float("beta", 1.0)
            if alpha != 1.0:
                y = self.op("Mul", [y, self.constant("alpha", np.array(alpha, np.float32))], "alpha")
            if len(node.inputs) > 2 and node.inputs[2] is not None:
                c = node.inputs[2]
                if beta != 1.0:
                    c = self.op("Mul", [c, self.constant("beta", np.array(beta, np.float32))], "beta")
                y = self.op("Add", [y, c], "bias")
            return y
        if len(layout.shape) == 1:
            y = self.op("Squeeze", [y, self.constant("unit_axis", np.array([-1], np.int64))], "squeeze")
        return y


def build_simulation(annotated: ir.Model, target: Target) -> Simulation:
    """A copy of the annotated model with every mapped layer rewritten; weights clean until a draw."""
    model = ir.from_proto(ir.to_proto(annotated))
    builder = _Builder(model, target)
    for node in list(model.graph):
        props = node.metadata_props
        if "hetmap.option" not in props:
            continue
        operand = int(props["hetmap.weight_operand"])
        activation = 0 if node.op_type in ("Conv", "ConvTranspose") else 1 - operand
        weight = node.inputs[operand].const_value
        layout = WeightLayout(
            node.op_type, tuple(weight.shape), node.attributes.get_int("group", 1), props["hetmap.weight_transposed"] == "1"
        )
        builder.prefix = node.name
        input_range = float(props["hetmap.input_range"])
        if props["hetmap.option"] == ANALOG:
            builder.analog(node, layout, operand, activation, input_range, int(props["hetmap.block_rows"]))
        else:
            builder.digital(node, layout, operand, activation, int(props["hetmap.bits"]), input_range)
    common_passes.RemoveUnusedNodesPass()(model)
    return builder.simulation

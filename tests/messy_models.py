"""Small ONNX models built in-line, messy the way real exports are.

Each builder returns an onnx.ModelProto that passes onnx.checker and runs in
onnxruntime as written. Weights come from a seeded generator, so a builder
always returns the same model.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

FLOAT, INT64, BOOL = TensorProto.FLOAT, TensorProto.INT64, TensorProto.BOOL


def _weights(*shape: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng([seed, *shape]).standard_normal(shape).astype(np.float32)


def init(name: str, array) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(array), name)


def const(output: str, array, name: str | None = None) -> onnx.NodeProto:
    """A Constant node: how many exporters store weights."""
    return helper.make_node("Constant", [], [output], name=name or f"{output}_const", value=init(output, array))


def tensor(name: str, shape, dtype=FLOAT) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, dtype, shape)


def model(nodes, inputs, outputs, initializers=(), opset=21, ir_version=None, name="messy") -> onnx.ModelProto:
    graph = helper.make_graph(nodes, name, inputs, outputs, list(initializers))
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="tests")
    proto.ir_version = ir_version or helper.find_min_ir_version_for([helper.make_opsetid("", opset)])
    onnx.checker.check_model(proto)
    return proto


def batchnorm(name: str, x: str, y: str, channels: int, seed: int = 1) -> tuple[onnx.NodeProto, list]:
    rng = np.random.default_rng(seed)
    params = [
        init(f"{name}.scale", rng.uniform(0.5, 2.0, channels).astype(np.float32)),
        init(f"{name}.bias", rng.standard_normal(channels).astype(np.float32)),
        init(f"{name}.mean", rng.standard_normal(channels).astype(np.float32)),
        init(f"{name}.var", rng.uniform(0.5, 2.0, channels).astype(np.float32)),
    ]
    node = helper.make_node("BatchNormalization", [x, *(p.name for p in params)], [y], name=name, epsilon=1e-3)
    return node, params


def conv_bn_relu_gemm_opset9() -> onnx.ModelProto:
    """Opset 9, IR 3, unfolded BN, initializers repeated as graph inputs (old PyTorch)."""
    bn, bn_params = batchnorm("bn1", "c1", "b1", 4)
    weights = [
        init("conv1.W", _weights(4, 3, 3, 3)),
        init("conv1.B", _weights(4)),
        *bn_params,
        init("fc.W", _weights(10, 4 * 6 * 6)),
        init("fc.B", _weights(10)),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "conv1.W", "conv1.B"], ["c1"], name="conv1", kernel_shape=[3, 3]),
        bn,
        helper.make_node("Relu", ["b1"], ["r1"], name="relu1"),
        helper.make_node("Flatten", ["r1"], ["f1"], name="flatten", axis=1),
        helper.make_node("Gemm", ["f1", "fc.W", "fc.B"], ["y"], name="fc", transB=1),
    ]
    inputs = [tensor("x", [1, 3, 8, 8])] + [tensor(w.name, list(w.dims)) for w in weights]
    return model(nodes, inputs, [tensor("y", [1, 10])], weights, opset=9, ir_version=3)


def constant_node_weights() -> onnx.ModelProto:
    """Every weight is a Constant node, none an initializer."""
    nodes = [
        const("conv.W", _weights(6, 3, 3, 3)),
        const("conv.B", _weights(6)),
        helper.make_node("Conv", ["x", "conv.W", "conv.B"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("GlobalAveragePool", ["r"], ["p"], name="pool"),
        helper.make_node("Flatten", ["p"], ["f"], name="flatten"),
        const("fc.W", _weights(6, 5)),
        helper.make_node("Gemm", ["f", "fc.W"], ["y"], name="fc"),
    ]
    return model(nodes, [tensor("x", [1, 3, 8, 8])], [tensor("y", [1, 5])], opset=13)


def constant_of_shape_weight() -> onnx.ModelProto:
    """Conv weight = ConstantOfShape(0.5) * scale + offset, then an unfolded BN."""
    bn, bn_params = batchnorm("bn", "c", "y", 4)
    nodes = [
        const("w_shape", np.array([4, 2, 3, 3], dtype=np.int64)),
        helper.make_node(
            "ConstantOfShape", ["w_shape"], ["w_half"], name="w_fill", value=helper.make_tensor("v", FLOAT, [1], [0.5])
        ),
        helper.make_node("Mul", ["w_half", "w_scale"], ["w_scaled"], name="w_mul"),
        helper.make_node("Add", ["w_scaled", "w_offset"], ["conv.W"], name="w_add"),
        helper.make_node("Conv", ["x", "conv.W"], ["c"], name="conv", kernel_shape=[3, 3]),
        bn,
    ]
    weights = [init("w_scale", _weights(4, 1, 1, 1)), init("w_offset", _weights(4, 2, 3, 3)), *bn_params]
    return model(nodes, [tensor("x", [1, 2, 6, 6])], [tensor("y", [1, 4, 4, 4])], weights, opset=11)


def reshape_transpose_weights() -> onnx.ModelProto:
    """Conv and Gemm weights computed by Reshape/Transpose of flat constants."""
    nodes = [
        const("flat", _weights(3 * 3 * 2 * 4)),
        const("hwio", np.array([3, 3, 2, 4], dtype=np.int64)),
        helper.make_node("Reshape", ["flat", "hwio"], ["w_hwio"], name="w_reshape"),
        helper.make_node("Transpose", ["w_hwio"], ["conv.W"], name="w_transpose", perm=[3, 2, 0, 1]),
        helper.make_node("Conv", ["x", "conv.W"], ["c"], name="conv", kernel_shape=[3, 3]),
        helper.make_node("Flatten", ["c"], ["f"], name="flatten"),
        const("fc_flat", _weights(7 * 64)),
        const("fc_shape", np.array([7, 64], dtype=np.int64)),
        helper.make_node("Reshape", ["fc_flat", "fc_shape"], ["fc.Wt"], name="fc_reshape"),
        helper.make_node("Transpose", ["fc.Wt"], ["fc.W"], name="fc_transpose"),
        helper.make_node("MatMul", ["f", "fc.W"], ["y"], name="fc"),
    ]
    return model(nodes, [tensor("x", [1, 2, 6, 6])], [tensor("y", [1, 7])], opset=13)


def symbolic_dims() -> onnx.ModelProto:
    """Input (batch, 3, height, width): a fully-convolutional net with global pooling."""
    weights = [init("conv.W", _weights(8, 3, 3, 3)), init("fc.W", _weights(5, 8))]
    nodes = [
        helper.make_node("Conv", ["x", "conv.W"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("GlobalAveragePool", ["c"], ["p"], name="pool"),
        helper.make_node("Flatten", ["p"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "fc.W"], ["y"], name="fc", transB=1),
    ]
    x = tensor("x", ["batch", 3, "height", "width"])
    return model(nodes, [x], [tensor("y", ["batch", 5])], weights, opset=17)


def symbolic_batch_only() -> onnx.ModelProto:
    """Input (batch, 12): only the batch dimension is symbolic."""
    nodes = [helper.make_node("Gemm", ["x", "fc.W", "fc.B"], ["y"], name="fc")]
    weights = [init("fc.W", _weights(12, 40)), init("fc.B", _weights(40))]
    return model(nodes, [tensor("x", ["batch", 12])], [tensor("y", ["batch", 40])], weights)


def multi_input_int64_scalar() -> onnx.ModelProto:
    """Two inputs: features and an int64 scalar that scales the result."""
    nodes = [
        helper.make_node("Gemm", ["x", "fc.W", "fc.B"], ["g"], name="fc"),
        helper.make_node("Cast", ["k"], ["k_float"], name="cast", to=FLOAT),
        helper.make_node("Add", ["k_float", "one"], ["k_plus"], name="k_plus_one"),
        helper.make_node("Mul", ["g", "k_plus"], ["y"], name="scale"),
    ]
    weights = [init("fc.W", _weights(8, 6)), init("fc.B", _weights(6)), init("one", np.float32(1.0))]
    inputs = [tensor("x", ["batch", 8]), tensor("k", [], INT64)]
    return model(nodes, inputs, [tensor("y", ["batch", 6])], weights, opset=15)


def if_and_loop() -> onnx.ModelProto:
    """An If whose branches hold a MatMul and a Loop whose body holds a Gemm, each with a constant weight."""
    then_branch = helper.make_graph(
        [
            const("then.W", _weights(8, 8, seed=1), name="then_w"),
            helper.make_node("MatMul", ["h", "then.W"], ["t"], name="then_matmul"),
        ],
        "then",
        [],
        [tensor("t", [1, 8])],
    )
    else_branch = helper.make_graph(
        [helper.make_node("Neg", ["h"], ["e"], name="else_neg")], "else", [], [tensor("e", [1, 8])]
    )
    body = helper.make_graph(
        [
            const("loop.W", _weights(8, 8, seed=2), name="loop_w"),
            helper.make_node("Gemm", ["state", "loop.W"], ["g"], name="loop_gemm"),
            helper.make_node("Tanh", ["g"], ["state_out"], name="loop_tanh"),
            helper.make_node("Identity", ["cond_in"], ["cond_out"], name="loop_cond"),
        ],
        "body",
        [tensor("i", [], INT64), tensor("cond_in", [], BOOL), tensor("state", [1, 8])],
        [tensor("cond_out", [], BOOL), tensor("state_out", [1, 8])],
    )
    nodes = [
        helper.make_node("Gemm", ["x", "in.W"], ["h"], name="in_fc"),
        helper.make_node("ReduceSum", ["h"], ["s"], name="sum", keepdims=0),
        helper.make_node("Greater", ["s", "zero"], ["positive"], name="is_positive"),
        helper.make_node(
            "If", ["positive"], ["branched"], name="branch", then_branch=then_branch, else_branch=else_branch
        ),
        helper.make_node("Loop", ["trips", "", "branched"], ["looped"], name="repeat", body=body),
        helper.make_node("Gemm", ["looped", "out.W"], ["y"], name="out_fc"),
    ]
    weights = [
        init("in.W", _weights(4, 8)),
        init("out.W", _weights(8, 3)),
        init("zero", np.float32(0.0)),
        init("trips", np.int64(2)),
    ]
    return model(nodes, [tensor("x", [1, 4])], [tensor("y", [1, 3])], weights, opset=13)


def grouped_and_depthwise_conv() -> onnx.ModelProto:
    """A grouped Conv (group 2) then a depthwise Conv (group = channels), strided."""
    weights = [
        init("grouped.W", _weights(8, 2, 3, 3)),
        init("depthwise.W", _weights(8, 1, 3, 3)),
        init("depthwise.B", _weights(8)),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "grouped.W"], ["g"], name="grouped", group=2, pads=[1, 1, 1, 1]),
        helper.make_node(
            "Conv",
            ["g", "depthwise.W", "depthwise.B"],
            ["y"],
            name="depthwise",
            group=8,
            strides=[2, 2],
            pads=[1, 1, 1, 1],
        ),
    ]
    return model(nodes, [tensor("x", [1, 4, 8, 8])], [tensor("y", [1, 8, 4, 4])], weights)


def conv_transpose_bn(group: int = 2) -> onnx.ModelProto:
    """A strided ConvTranspose (Cin 4, Cout 6) with `group` groups, then an unfolded BN."""
    bn, bn_params = batchnorm("bn", "up", "y", 6)
    weights = [init("up.W", _weights(4, 6 // group, 3, 3)), init("up.B", _weights(6)), *bn_params]
    nodes = [
        helper.make_node("ConvTranspose", ["x", "up.W", "up.B"], ["up"], name="up", group=group, strides=[2, 2]),
        bn,
    ]
    return model(nodes, [tensor("x", [1, 4, 5, 5])], [tensor("y", [1, 6, 11, 11])], weights)


def gemm_bn() -> onnx.ModelProto:
    """Gemm (transB=1) then a BatchNormalization over its features (opset 9 style)."""
    bn, bn_params = batchnorm("bn", "g", "y", 6)
    weights = [init("fc.W", _weights(6, 10)), init("fc.B", _weights(6)), *bn_params]
    nodes = [helper.make_node("Gemm", ["x", "fc.W", "fc.B"], ["g"], name="fc", transB=1), bn]
    return model(nodes, [tensor("x", [2, 10])], [tensor("y", [2, 6])], weights, opset=9)


def matmul_constant_left() -> onnx.ModelProto:
    """Y = W @ X with the constant on the left: W (6, 8), X (8, 4)."""
    nodes = [helper.make_node("MatMul", ["W", "x"], ["y"], name="left_matmul")]
    return model(nodes, [tensor("x", [8, 4])], [tensor("y", [6, 4])], [init("W", _weights(6, 8))])


def attention_scores() -> onnx.ModelProto:
    """Q = X Wq, K = X Wk, scores = Q K^T: the last MatMul has no constant operand."""
    weights = [init("q.W", _weights(16, 8)), init("k.W", _weights(16, 8))]
    nodes = [
        helper.make_node("MatMul", ["x", "q.W"], ["q"], name="q_proj"),
        helper.make_node("MatMul", ["x", "k.W"], ["k"], name="k_proj"),
        helper.make_node("Transpose", ["k"], ["kt"], name="k_transpose", perm=[0, 2, 1]),
        helper.make_node("MatMul", ["q", "kt"], ["y"], name="scores"),
    ]
    return model(nodes, [tensor("x", [1, 5, 16])], [tensor("y", [1, 5, 5])], weights)


def gemm_trans_b() -> onnx.ModelProto:
    """Gemm with transB=1 (weight stored (N, K)) then Gemm with transB=0 (weight stored (K, N))."""
    weights = [init("a.W", _weights(6, 8)), init("b.W", _weights(6, 5))]
    nodes = [
        helper.make_node("Gemm", ["x", "a.W"], ["h"], name="trans_b", transB=1),
        helper.make_node("Gemm", ["h", "b.W"], ["y"], name="plain", transB=0),
    ]
    return model(nodes, [tensor("x", [1, 8])], [tensor("y", [1, 5])], weights)


def gemm_alpha_beta() -> onnx.ModelProto:
    """Gemm scaling its product by alpha and its bias by beta, as some exporters write a scaled linear layer."""
    weights = [init("g.W", _weights(16, 10)), init("g.B", _weights(10, seed=1))]
    nodes = [helper.make_node("Gemm", ["x", "g.W", "g.B"], ["y"], name="g", alpha=0.5, beta=2.0)]
    return model(nodes, [tensor("x", ["batch", 16])], [tensor("y", ["batch", 10])], weights, opset=13)


def argmax_classifier() -> onnx.ModelProto:
    """Two Gemms whose scores leave as class indices (int64 [batch]), as an export ending in argmax gives."""
    weights = [init("a.W", _weights(16, 32)), init("b.W", _weights(32, 10))]
    nodes = [
        helper.make_node("Gemm", ["x", "a.W"], ["h"], name="hidden"),
        helper.make_node("Relu", ["h"], ["r"], name="relu"),
        helper.make_node("Gemm", ["r", "b.W"], ["scores"], name="head"),
        helper.make_node("ArgMax", ["scores"], ["y"], name="argmax", axis=1, keepdims=0),
    ]
    return model(nodes, [tensor("x", ["batch", 16])], [tensor("y", ["batch"], onnx.TensorProto.INT64)], weights)


def sliced_positions() -> onnx.ModelProto:
    """Position embeddings sliced to the input's symbolic length (pos[:, :T], as Hugging Face's TorchScript exports
    write it): onnx shape inference loses every shape after the Slice, whose end comes from Shape."""
    weights = [
        init("pos", _weights(1, 16, 8)),
        init("W", _weights(8, 4)),
        init("one", np.array(1, np.int64)),
        init("axes", np.array([0], np.int64)),
        init("start", np.array([0], np.int64)),
        init("seq_axis", np.array([1], np.int64)),
    ]
    nodes = [
        helper.make_node("Shape", ["x"], ["shape"], name="shape"),
        helper.make_node("Gather", ["shape", "one"], ["length"], name="length"),
        helper.make_node("Unsqueeze", ["length", "axes"], ["end"], name="end"),
        helper.make_node("Slice", ["pos", "start", "end", "seq_axis"], ["positions"], name="positions"),
        helper.make_node("Add", ["x", "positions"], ["h"], name="add_positions"),
        helper.make_node("MatMul", ["h", "W"], ["y"], name="proj"),
    ]
    return model(nodes, [tensor("x", ["batch", "seq", 8])], [tensor("y", ["batch", "seq", 4])], weights, opset=17)


def token_classifier(vocabulary: int = 10) -> onnx.ModelProto:
    """Token ids (int64 [batch, 3]) through an embedding table, then a Gemm over the three embeddings."""
    weights = [init("emb", _weights(vocabulary, 4)), init("fc.W", _weights(12, 5)), init("flat", np.array([0, 12]))]
    nodes = [
        helper.make_node("Gather", ["emb", "ids"], ["e"], name="embed"),
        helper.make_node("Reshape", ["e", "flat"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "fc.W"], ["y"], name="fc"),
    ]
    return model(nodes, [tensor("ids", ["batch", 3], onnx.TensorProto.INT64)], [tensor("y", ["batch", 5])], weights)


def offset_regressor() -> onnx.ModelProto:
    """One value per sample around 5, spread about 0.1: a regressor whose common offset dwarfs its signal."""
    weights = [
        init("a.W", _weights(16, 32)),
        init("b.W", 0.01 * _weights(32, 1)),
        init("b.B", np.array([5.0], np.float32)),
    ]
    nodes = [
        helper.make_node("Gemm", ["x", "a.W"], ["h"], name="hidden"),
        helper.make_node("Relu", ["h"], ["r"], name="relu"),
        helper.make_node("Gemm", ["r", "b.W", "b.B"], ["y"], name="head"),
    ]
    return model(nodes, [tensor("x", ["batch", 16])], [tensor("y", ["batch", 1])], weights)


def wide_gemm(k: int = 70, n: int = 40) -> onnx.ModelProto:
    """One Gemm whose (K, N) matrix is larger than a 32x32 tile in both directions."""
    nodes = [helper.make_node("Gemm", ["x", "fc.W"], ["y"], name="fc")]
    return model(nodes, [tensor("x", [1, k])], [tensor("y", [1, n])], [init("fc.W", _weights(k, n))])


def two_heads() -> onnx.ModelProto:
    """A shared trunk and two heads; the first output (scored) is one head's, the second head reaches only its own."""
    weights = [init("trunk.W", _weights(8, 12)), init("first.W", _weights(12, 6)), init("second.W", _weights(12, 4))]
    nodes = [
        helper.make_node("Gemm", ["x", "trunk.W"], ["t"], name="trunk"),
        helper.make_node("Relu", ["t"], ["h"], name="relu"),
        helper.make_node("Gemm", ["h", "first.W"], ["y"], name="first"),
        helper.make_node("Gemm", ["h", "second.W"], ["z"], name="second"),
    ]
    outputs = [tensor("y", ["batch", 6]), tensor("z", ["batch", 4])]
    return model(nodes, [tensor("x", ["batch", 8])], outputs, weights, opset=13)


def no_mappable_layer() -> onnx.ModelProto:
    """Only element-wise ops: nothing to put on a crossbar."""
    nodes = [
        helper.make_node("Relu", ["x"], ["r"], name="relu"),
        helper.make_node("Add", ["r", "x"], ["y"], name="add"),
    ]
    return model(nodes, [tensor("x", [1, 8])], [tensor("y", [1, 8])])


HAND_BUILT = {
    "conv_bn_relu_gemm_opset9": conv_bn_relu_gemm_opset9,
    "constant_node_weights": constant_node_weights,
    "constant_of_shape_weight": constant_of_shape_weight,
    "reshape_transpose_weights": reshape_transpose_weights,
    "symbolic_dims": symbolic_dims,
    "multi_input_int64_scalar": multi_input_int64_scalar,
    "if_and_loop": if_and_loop,
    "grouped_and_depthwise_conv": grouped_and_depthwise_conv,
    "conv_transpose_bn": conv_transpose_bn,
    "conv_transpose_bn_group1": lambda: conv_transpose_bn(group=1),
    "gemm_bn": gemm_bn,
    "matmul_constant_left": matmul_constant_left,
    "attention_scores": attention_scores,
    "gemm_trans_b": gemm_trans_b,
    "gemm_alpha_beta": gemm_alpha_beta,
    "two_heads": two_heads,
}

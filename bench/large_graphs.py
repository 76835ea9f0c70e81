"""VGG-19 and a BERT-base-size encoder as ONNX graphs built with onnx.helper, for bench.scale_compile.

VGG-19: 16 Conv (3x3, ReLU, five max-pools) and three Gemm, 143.7 M
weights, input N x 3 x 224 x 224. The encoder: 12 post-norm layers of
hidden size 768, 12 heads, FFN 3072 (GELU), on embeddings N x 128 x 768
fed directly (no token table), and a 2-class head on the first position:
85 M weights in 73 MatMul layers. Weights are seeded random float32, scaled
so activations stay finite.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

VGG19 = (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M")
HIDDEN, HEADS, FFN, LAYERS, SEQUENCE = 768, 12, 3072, 12, 128


class _Graph:
    def __init__(self, seed: int):
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []

    def weight(self, name: str, shape: tuple[int, ...], fan_in: int) -> str:
        array = self.rng.standard_normal(shape, dtype=np.float32) * np.float32(np.sqrt(1 / fan_in))
        self.initializers.append(numpy_helper.from_array(array, name))
        return name

    def constant(self, name: str, array: np.ndarray) -> str:
        self.initializers.append(numpy_helper.from_array(array, name))
        return name

    def node(self, op: str, inputs: list[str], name: str, **attributes) -> str:
        self.nodes.append(helper.make_node(op, inputs, [name], name=name, **attributes))
        return name

    def model(self, name: str, x, y, opset: int) -> onnx.ModelProto:
        graph = helper.make_graph(self.nodes, name, [x], [y], initializer=self.initializers)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="hetmap-bench")
        model.ir_version = 8
        return model


def build_vgg19(seed: int = 0) -> onnx.ModelProto:
    g = _Graph(seed)
    x, channels = "input", 3
    for index, width in enumerate(VGG19):
        if width == "M":
            x = g.node("MaxPool", [x], f"pool{index}", kernel_shape=[2, 2], strides=[2, 2])
            continue
        w = g.weight(f"conv{index}.weight", (width, channels, 3, 3), channels * 9 / 2)
        b = g.constant(f"conv{index}.bias", np.zeros(width, np.float32))
        x = g.node("Conv", [x, w, b], f"conv{index}", kernel_shape=[3, 3], pads=[1, 1, 1, 1])
        x = g.node("Relu", [x], f"relu{index}")
        channels = width
    x = g.node("Flatten", [x], "flatten", axis=1)
    for index, (n_in, n_out) in enumerate(((512 * 49, 4096), (4096, 4096), (4096, 1000))):
        w = g.weight(f"fc{index}.weight", (n_out, n_in), n_in / 2)
        b = g.constant(f"fc{index}.bias", np.zeros(n_out, np.float32))
        x = g.node("Gemm", [x, w, b], f"fc{index}" if index < 2 else "logits", transB=1)
        if index < 2:
            x = g.node("Relu", [x], f"fc{index}.relu")
    return g.model(
        "vgg19",
        helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 224, 224]),
        helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 1000]),
        opset=17,
    )


def build_bert_encoder(seed: int = 0) -> onnx.ModelProto:
    g = _Graph(seed)
    head = HIDDEN // HEADS
    split_shape = g.constant("split_shape", np.array([0, 0, HEADS, head], np.int64))
    merge_shape = g.constant("merge_shape", np.array([0, 0, HIDDEN], np.int64))
    scale = g.constant("attention_scale", np.array(1 / np.sqrt(head), np.float32))
    x = "embeddings"

    def linear(x: str, name: str, n_in: int, n_out: int) -> str:
        y = g.node("MatMul", [x, g.weight(f"{name}.weight", (n_in, n_out), n_in)], name)
        return g.node("Add", [y, g.constant(f"{name}.bias", np.zeros(n_out, np.float32))], f"{name}.bias_add")

    def norm(x: str, name: str) -> str:
        gamma = g.constant(f"{name}.gamma", np.ones(HIDDEN, np.float32))
        beta = g.constant(f"{name}.beta", np.zeros(HIDDEN, np.float32))
        return g.node("LayerNormalization", [x, gamma, beta], name, axis=-1, epsilon=1e-12)

    for layer in range(LAYERS):
        p = f"layer{layer}"
        heads = {}
        for part, perm in (("query", [0, 2, 1, 3]), ("key", [0, 2, 3, 1]), ("value", [0, 2, 1, 3])):
            y = g.node("Reshape", [linear(x, f"{p}.{part}", HIDDEN, HIDDEN), split_shape], f"{p}.{part}.split")
            heads[part] = g.node("Transpose", [y], f"{p}.{part}.heads", perm=perm)
        scores = g.node("MatMul", [heads["query"], heads["key"]], f"{p}.scores")
        scores = g.node("Mul", [scores, scale], f"{p}.scaled")
        weights = g.node("Softmax", [scores], f"{p}.softmax", axis=-1)
        context = g.node("MatMul", [weights, heads["value"]], f"{p}.context")
        context = g.node("Transpose", [context], f"{p}.context.merge", perm=[0, 2, 1, 3])
        context = g.node("Reshape", [context, merge_shape], f"{p}.context.flat")
        attended = linear(context, f"{p}.output", HIDDEN, HIDDEN)
        x = norm(g.node("Add", [x, attended], f"{p}.residual1"), f"{p}.norm1")
        hidden = g.node("Gelu", [linear(x, f"{p}.ffn_in", HIDDEN, FFN)], f"{p}.gelu")
        x = norm(g.node("Add", [x, linear(hidden, f"{p}.ffn_out", FFN, HIDDEN)], f"{p}.residual2"), f"{p}.norm2")
    first = g.node("Gather", [x, g.constant("first_position", np.array(0, np.int64))], "first", axis=1)
    g.node("MatMul", [first, g.weight("classifier.weight", (HIDDEN, 2), HIDDEN)], "logits")
    return g.model(
        "bert_base_encoder",
        helper.make_tensor_value_info("embeddings", TensorProto.FLOAT, ["N", SEQUENCE, HIDDEN]),
        helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 2]),
        opset=20,
    )

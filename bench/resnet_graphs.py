"""ImageNet ResNet-50 and ResNet-18 shaped ONNX graphs built with onnx.helper: the shape of what users export.

ResNet-50: bottleneck blocks 3-4-6-3 (stride on the 3x3 conv, as
torchvision's v1.5), 53 Conv layers; ResNet-18: basic blocks 2-2-2-2, 20 Conv
layers. Every Conv is without bias and followed by an unfolded
BatchNormalization; a symbolic batch dimension, opset 13 (so
canonicalisation also converts the opset). Weights are seeded random
float32, scaled so activations stay finite.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 13
STAGES = ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2))  # (bottleneck width, blocks, stride)
BASIC_STAGES = ((64, 2, 1), (128, 2, 2), (256, 2, 2), (512, 2, 2))  # ResNet-18: (width, blocks, stride)
EXPANSION = 4
CLASSES = 1000


class _Builder:
    def __init__(self, rng: np.random.Generator):
        self.rng = rng
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.conv_count = 0

    def weight(self, name: str, array: np.ndarray) -> str:
        self.initializers.append(numpy_helper.from_array(array.astype(np.float32, copy=False), name))
        return name

    def conv_bn(self, x: str, cin: int, cout: int, kernel: int, stride: int, relu: bool) -> str:
        self.conv_count += 1
        name = f"conv{self.conv_count}"
        fan_in = cin * kernel * kernel
        w = self.rng.standard_normal((cout, cin, kernel, kernel), dtype=np.float32) * np.float32(np.sqrt(2 / fan_in))
        pad = kernel // 2
        self.nodes.append(
            helper.make_node(
                "Conv",
                [x, self.weight(f"{name}.weight", w)],
                [f"{name}.out"],
                name=name,
                kernel_shape=[kernel, kernel],
                strides=[stride, stride],
                pads=[pad] * 4,
            )
        )
        bn = f"{name}.bn"
        params = [
            self.weight(f"{bn}.scale", self.rng.uniform(0.5, 1.0, cout)),
            self.weight(f"{bn}.bias", self.rng.uniform(-0.1, 0.1, cout)),
            self.weight(f"{bn}.mean", self.rng.uniform(-0.1, 0.1, cout)),
            self.weight(f"{bn}.var", self.rng.uniform(0.5, 1.5, cout)),
        ]
        self.nodes.append(
            helper.make_node("BatchNormalization", [f"{name}.out", *params], [f"{bn}.out"], name=bn, epsilon=1e-5)
        )
        if not relu:
            return f"{bn}.out"
        self.nodes.append(helper.make_node("Relu", [f"{bn}.out"], [f"{name}.relu"], name=f"{name}.relu"))
        return f"{name}.relu"

    def bottleneck(self, x: str, cin: int, width: int, stride: int) -> str:
        out = self.conv_bn(x, cin, width, 1, 1, relu=True)
        out = self.conv_bn(out, width, width, 3, stride, relu=True)
        out = self.conv_bn(out, width, width * EXPANSION, 1, 1, relu=False)
        shortcut = x
        if stride != 1 or cin != width * EXPANSION:
            shortcut = self.conv_bn(x, cin, width * EXPANSION, 1, stride, relu=False)
        name = f"block{self.conv_count}"
        self.nodes.append(helper.make_node("Add", [out, shortcut], [f"{name}.sum"], name=f"{name}.add"))
        self.nodes.append(helper.make_node("Relu", [f"{name}.sum"], [f"{name}.out"], name=f"{name}.relu"))
        return f"{name}.out"

    def basic(self, x: str, cin: int, width: int, stride: int) -> str:
        out = self.conv_bn(x, cin, width, 3, stride, relu=True)
        out = self.conv_bn(out, width, width, 3, 1, relu=False)
        shortcut = x if stride == 1 and cin == width else self.conv_bn(x, cin, width, 1, stride, relu=False)
        name = f"block{self.conv_count}"
        self.nodes.append(helper.make_node("Add", [out, shortcut], [f"{name}.sum"], name=f"{name}.add"))
        self.nodes.append(helper.make_node("Relu", [f"{name}.sum"], [f"{name}.out"], name=f"{name}.relu"))
        return f"{name}.out"


def build_resnet50(seed: int = 0) -> onnx.ModelProto:
    """ResNet-50 (25.5 M weights, 53 Conv + BatchNorm) with input 'input' of shape N x 3 x 224 x 224."""
    return _resnet(seed, STAGES, _Builder.bottleneck, EXPANSION, "resnet50")


def build_resnet18(seed: int = 0) -> onnx.ModelProto:
    """ResNet-18 (11.7 M weights, 20 Conv + BatchNorm) with input 'input' of shape N x 3 x 224 x 224."""
    return _resnet(seed, BASIC_STAGES, _Builder.basic, 1, "resnet18")


def _resnet(seed: int, stages, block, expansion: int, name: str) -> onnx.ModelProto:
    b = _Builder(np.random.default_rng(seed))
    x, channels = _stem(b), 64
    for width, blocks, stride in stages:
        for i in range(blocks):
            x = block(b, x, channels, width, stride if i == 0 else 1)
            channels = width * expansion
    return _finish(b, x, channels, name)


def _stem(b: _Builder) -> str:
    x = b.conv_bn("input", 3, 64, 7, 2, relu=True)
    b.nodes.append(
        helper.make_node("MaxPool", [x], ["pool0"], name="pool0", kernel_shape=[3, 3], strides=[2, 2], pads=[1] * 4)
    )
    return "pool0"


def _finish(b: _Builder, x: str, channels: int, name: str) -> onnx.ModelProto:
    """Global pooling and the 1000-class Gemm head, then the checked model."""
    b.nodes.append(helper.make_node("GlobalAveragePool", [x], ["gap"], name="gap"))
    b.nodes.append(helper.make_node("Flatten", ["gap"], ["flat"], name="flatten", axis=1))
    fc_w = b.rng.standard_normal((CLASSES, channels), dtype=np.float32) * np.float32(np.sqrt(1 / channels))
    fc = [b.weight("fc.weight", fc_w), b.weight("fc.bias", np.zeros(CLASSES, np.float32))]
    b.nodes.append(helper.make_node("Gemm", ["flat", *fc], ["logits"], name="fc", transB=1))
    graph = helper.make_graph(
        b.nodes,
        name,
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 224, 224])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", CLASSES])],
        initializer=b.initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="hetmap-bench")
    model.ir_version = 7
    onnx.checker.check_model(model)
    return model


def weight_stats(model: onnx.ModelProto) -> tuple[int, int, int]:
    """(weights, weight bytes, Conv count) of a model."""
    weights = sum(int(np.prod(t.dims)) for t in model.graph.initializer)
    weight_bytes = sum(len(t.raw_data) for t in model.graph.initializer)
    convs = sum(node.op_type == "Conv" for node in model.graph.node)
    return weights, weight_bytes, convs

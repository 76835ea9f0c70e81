"""torch_graph: canonical ONNX graphs run in torch as onnxruntime runs them, and train."""

import io
import warnings

import numpy as np
import onnx
import onnx_ir as ir
import pytest
import torch
from torch_node_cases import SINGLE_NODES, X4, single_node

import messy_models as messy
from helpers import REFERENCE_MODELS, canonicalize, example_model, random_inputs
from hetmap.graph import parity
from hetmap.train.interpreter import OnnxModule, UnsupportedOpError, run_node


def canonical(proto: onnx.ModelProto, feeds: dict) -> ir.Model:
    return ir.serde.deserialize_model(canonicalize(proto, {k: v.shape for k, v in feeds.items()})[0])


def torch_outputs(module: OnnxModule, model: ir.Model, feeds: dict) -> list[np.ndarray]:
    fed = [torch.from_numpy(feeds[value.name]) for value in model.graph.inputs]
    with torch.no_grad():
        outputs = module(*fed)
    return [t.numpy() for t in ((outputs,) if isinstance(outputs, torch.Tensor) else outputs)]


def assert_runs_as_onnxruntime(model: ir.Model, feeds: dict) -> None:
    expected = parity.run_model(model, feeds)
    actual = torch_outputs(OnnxModule(model), model, feeds)
    assert [a.dtype for a in actual] == [e.dtype for e in expected]
    assert parity.max_relative_error(expected, actual) <= 1e-4


@pytest.mark.parametrize("case", sorted(SINGLE_NODES))
def test_single_node_runs_as_onnxruntime(case):
    op_type, inputs, attributes, *outputs = SINGLE_NODES[case]
    model, feeds = single_node(op_type, inputs, *outputs, **attributes)
    assert_runs_as_onnxruntime(model, feeds)


# Whole models, after Canonicalize


CANONICALIZING = sorted(set(messy.HAND_BUILT) - {"if_and_loop", "symbolic_dims"})  # control flow; symbolic H, W


@pytest.mark.parametrize("name", [*REFERENCE_MODELS, *CANONICALIZING])
def test_canonical_model_runs_as_onnxruntime(name):
    proto, feeds = example_model(name)
    assert_runs_as_onnxruntime(canonical(proto, feeds), feeds)


class _Blocks(torch.nn.Module):
    """Depthwise and pointwise conv, LayerNorm, GELU, upsampling, ConvTranspose, pooling."""

    def __init__(self):
        super().__init__()
        self.depthwise = torch.nn.Conv2d(4, 4, 3, padding=1, groups=4)
        self.pointwise = torch.nn.Conv2d(4, 8, 1)
        self.norm = torch.nn.LayerNorm(8)
        self.up = torch.nn.ConvTranspose2d(8, 4, 3, stride=2, padding=1, output_padding=1)
        self.head = torch.nn.Linear(4, 3)

    def forward(self, x):
        x = self.pointwise(self.depthwise(x))
        x = torch.nn.functional.gelu(self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2))
        x = torch.nn.functional.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
        x = torch.nn.functional.max_pool2d(self.up(x), 2, ceil_mode=True)
        x = torch.nn.functional.avg_pool2d(x, 3, stride=2, padding=1)
        x = torch.nn.functional.interpolate(x, size=(7, 5), mode="nearest").mean((2, 3), keepdim=True)
        return self.head(x.reshape(x.shape[0], -1)).softmax(-1)  # a batch-dependent shape at run time


@pytest.mark.parametrize("dynamo", [False, True])
def test_torch_export_runs_as_onnxruntime(dynamo):
    torch.manual_seed(0)
    net, example = _Blocks().eval(), torch.randn(2, 4, 6, 6)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if dynamo:
            batch = ({0: torch.export.Dim("batch")},)
            proto = torch.onnx.export(net, (example,), dynamo=True, verbose=False, dynamic_shapes=batch).model_proto
        else:
            buffer = io.BytesIO()
            torch.onnx.export(
                net,
                (example,),
                buffer,
                dynamo=False,
                opset_version=17,
                input_names=["x"],
                dynamic_axes={"x": {0: "batch"}},
            )
            proto = onnx.load_from_string(buffer.getvalue())
    x = torch.randn(3, 4, 6, 6)  # another batch size than the export's
    feeds = {proto.graph.input[0].name: x.numpy()}
    model = canonical(proto, feeds)
    assert "Shape" in [node.op_type for node in model.graph]
    assert_runs_as_onnxruntime(model, feeds)
    np.testing.assert_allclose(torch_outputs(OnnxModule(model), model, feeds)[0], net(x).detach().numpy(), atol=1e-5)


def test_sklearn_mlp_export_runs_as_onnxruntime(sklearn_exports):
    proto = sklearn_exports["mlp"]
    feeds = random_inputs(proto, batch=5)
    assert_runs_as_onnxruntime(canonical(proto, feeds), feeds)


# Training


def conv_model() -> tuple[ir.Model, dict]:
    proto, feeds = example_model("grouped_and_depthwise_conv")
    return canonical(proto, feeds), feeds


def test_gradients_reach_trainable_parameters_and_not_buffers():
    model, feeds = conv_model()
    module = OnnxModule(model, trainable={"grouped.W"})
    module(torch.from_numpy(feeds["x"])).square().sum().backward()
    assert module.initializer("grouped.W").grad.abs().sum() > 0
    assert [name for name, _ in module.named_parameters()] == ["tensors.grouped_W"]
    assert all(buffer.grad is None and not buffer.requires_grad for buffer in module.buffers())
    assert module.initializer("depthwise.W").grad is None


def test_a_training_step_changes_the_parameter_arrays_only():
    model, feeds = conv_model()
    module = OnnxModule(model, trainable={"grouped.W", "depthwise.B"})
    before = module.parameter_arrays()
    assert sorted(before) == ["depthwise.B", "grouped.W"] and before["grouped.W"].dtype == np.float32
    optimizer = torch.optim.SGD(module.parameters(), lr=0.1)
    module(torch.from_numpy(feeds["x"])).square().mean().backward()
    optimizer.step()
    after = module.parameter_arrays()
    assert not np.allclose(after["grouped.W"], before["grouped.W"])
    untrained = model.graph.initializers["depthwise.W"].const_value.numpy()
    assert np.array_equal(module.initializer("depthwise.W").numpy(), untrained)


def test_trainable_names_must_be_initializers():
    model, _ = conv_model()
    with pytest.raises(ValueError, match="grouped.w"):
        OnnxModule(model, trainable={"grouped.w"})


def test_override_replaces_a_node_and_gets_its_weight():
    model, feeds = conv_model()
    seen = {}

    def halved(node, inputs):
        seen["weight"] = inputs[1]
        return [output * 0.5 for output in run_node(node, inputs)]

    x = torch.from_numpy(feeds["x"])
    plain = OnnxModule(model)(x)
    overridden = OnnxModule(model, overrides={"depthwise": halved})(x)
    torch.testing.assert_close(overridden, plain * 0.5)
    assert seen["weight"].shape == (8, 1, 3, 3)


def test_control_flow_is_refused_naming_if_and_loop():
    proto = messy.if_and_loop()
    with pytest.raises(UnsupportedOpError) as error:
        OnnxModule(canonical(proto, random_inputs(proto)))
    assert str(error.value) == "cannot fine-tune: no torch equivalent for ops If, Loop (nodes 'branch', 'repeat')"


def test_unsupported_forms_are_named_with_the_reason():
    model, _ = single_node("Resize", [X4, None, np.array([1, 1, 2, 2], np.float32)], mode="linear", antialias=1)
    with pytest.raises(UnsupportedOpError) as error:
        OnnxModule(model)
    assert str(error.value) == "cannot fine-tune: no torch equivalent for ops Resize (antialias) (nodes 'resize')"


def test_an_override_runs_an_op_the_registry_lacks():
    model, _ = single_node("Twice", [X4], domain="com.example")
    with pytest.raises(UnsupportedOpError, match=r"ops com\.example\.Twice \(nodes 'twice'\)"):
        OnnxModule(model)
    module = OnnxModule(model, overrides={"twice": lambda node, inputs: [inputs[0] * 2]})
    torch.testing.assert_close(module(torch.from_numpy(X4)), torch.from_numpy(X4) * 2)

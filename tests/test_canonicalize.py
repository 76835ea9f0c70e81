"""canonicalize: any exporter's model in, one canonical form out, same outputs in onnxruntime."""

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

import messy_models as messy
from helpers import all_nodes, assert_same_outputs, canonicalize, fed_inputs, ort_outputs, random_inputs
from hetmap.driver import compile_model
from hetmap.errors import HetmapError
from hetmap.targets import load_target

SHAPES = {"symbolic_dims": {"x": (2, 3, 8, 8)}}  # the messy models' symbolic non-batch dims


def initializer(proto: onnx.ModelProto, name: str) -> np.ndarray:
    return next(numpy_helper.to_array(t) for t in proto.graph.initializer if t.name == name)


def op_types(proto: onnx.ModelProto) -> list[str]:
    return [node.op_type for node in proto.graph.node]


def opset(proto: onnx.ModelProto) -> int:
    return next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))


def check_same_outputs(original: onnx.ModelProto, shapes: dict | None = None) -> onnx.ModelProto:
    canonical, _ = canonicalize(original, {k: (1, *v[1:]) for k, v in (shapes or {}).items()})
    onnx.checker.check_model(canonical, full_check=True)
    feeds = random_inputs(original, shapes)
    assert_same_outputs(ort_outputs(original, feeds), ort_outputs(canonical, feeds))
    return canonical


# Outputs: the canonical model computes what the original computes.


@pytest.mark.parametrize("name", sorted(messy.HAND_BUILT))
def test_hand_built_messy_model_keeps_its_outputs(name):
    check_same_outputs(messy.HAND_BUILT[name](), SHAPES.get(name))


def test_torch_legacy_export_keeps_its_outputs(torch_legacy_export):
    check_same_outputs(torch_legacy_export)


def test_torch_dynamo_export_keeps_its_outputs(torch_dynamo_export):
    check_same_outputs(torch_dynamo_export)


@pytest.mark.parametrize("name", ["mlp", "logistic", "linear"])
def test_sklearn_export_keeps_its_outputs(sklearn_exports, name):
    check_same_outputs(sklearn_exports[name])


@pytest.mark.xfail(
    raises=HetmapError,
    strict=True,
    reason="design question: onnx-ir has no map types, so skl2onnx's default ZipMap output "
    "(a sequence of maps) is refused with a one-line error naming options={'zipmap': False}; "
    "compiling it needs ZipMap unwrapped to its probability tensor (or kept outside the IR)",
)
def test_sklearn_default_zipmap_export_compiles(sklearn_exports, tmp_path):
    onnx.save(sklearn_exports["mlp_zipmap"], tmp_path / "mlp.onnx")
    compile_model(tmp_path / "mlp.onnx", load_target("tiny"), tmp_path / "out")


def test_symbolic_dims_stay_symbolic():
    canonical = check_same_outputs(messy.symbolic_dims(), SHAPES["symbolic_dims"])
    other_size = random_inputs(canonical, {"x": (3, 3, 12, 20)}, seed=1)
    assert_same_outputs(ort_outputs(messy.symbolic_dims(), other_size), ort_outputs(canonical, other_size))


def test_int64_scalar_input_stays_an_int64_scalar():
    canonical = check_same_outputs(messy.multi_input_int64_scalar())
    k = next(value for value in fed_inputs(canonical) if value.name == "k")
    assert k.type.tensor_type.elem_type == onnx.TensorProto.INT64
    assert len(k.type.tensor_type.shape.dim) == 0


@pytest.mark.parametrize("branch", [1.0, -1.0], ids=["then_branch", "else_branch"])
def test_if_and_loop_keep_their_outputs_on_both_branches(branch):
    original = messy.if_and_loop()
    canonical, _ = canonicalize(original)
    x = random_inputs(original, batch=1)["x"]
    condition = float((x @ initializer(original, "in.W")).sum())  # the If takes then_branch when > 0
    feeds = {"x": (x * np.sign(condition) * branch).astype(np.float32)}
    assert_same_outputs(ort_outputs(original, feeds), ort_outputs(canonical, feeds))


# Form: one opset, weights as initializers, BatchNorm folded, names kept.


@pytest.mark.parametrize("name", sorted(messy.HAND_BUILT))
def test_canonical_opset_is_21(name):
    canonical, report = canonicalize(messy.HAND_BUILT[name](), SHAPES.get(name))
    assert opset(canonical) == 21 and report.opset_out == 21
    assert canonical.ir_version >= 10


def test_old_ir3_opset9_model_is_reported_as_such():
    _, report = canonicalize(messy.conv_bn_relu_gemm_opset9())
    assert (report.ir_version_in, report.opset_in, report.opset_out) == (3, 9, 21)


def test_initializers_listed_as_inputs_are_no_longer_inputs():
    canonical, _ = canonicalize(messy.conv_bn_relu_gemm_opset9())
    assert [value.name for value in canonical.graph.input] == ["x"]


@pytest.mark.parametrize("name", sorted(messy.HAND_BUILT))
def test_no_constant_node_is_left_anywhere(name):
    canonical, _ = canonicalize(messy.HAND_BUILT[name](), SHAPES.get(name))
    assert {"Constant", "ConstantOfShape"}.isdisjoint(n.op_type for n in all_nodes(canonical.graph))


def test_constant_node_weights_become_initializers_with_the_same_values():
    original = messy.constant_node_weights()
    canonical, _ = canonicalize(original)
    constant_nodes = [node for node in original.graph.node if node.op_type == "Constant"]
    constants = {node.output[0]: numpy_helper.to_array(node.attribute[0].t) for node in constant_nodes}
    conv, fc = (next(n for n in canonical.graph.node if n.name == name) for name in ("conv", "fc"))
    np.testing.assert_array_equal(initializer(canonical, conv.input[1]), constants["conv.W"])
    np.testing.assert_array_equal(initializer(canonical, fc.input[1]), constants["fc.W"])


def test_constant_of_shape_weight_and_the_batchnorm_behind_it_fold_into_the_conv():
    original = messy.constant_of_shape_weight()
    canonical, report = canonicalize(original)
    assert op_types(canonical) == ["Conv"]
    assert report.batchnorms_folded == 1
    weight = 0.5 * initializer(original, "w_scale") + initializer(original, "w_offset")
    gamma, beta, mean, var = (initializer(original, f"bn.{p}") for p in ("scale", "bias", "mean", "var"))
    scale = gamma / np.sqrt(var + 1e-3)
    conv = canonical.graph.node[0]
    np.testing.assert_allclose(initializer(canonical, conv.input[1]), weight * scale[:, None, None, None], rtol=1e-5)
    np.testing.assert_allclose(initializer(canonical, conv.input[2]), beta - mean * scale, rtol=1e-5, atol=1e-6)


def test_reshape_transpose_weight_chains_fold_into_initializers():
    original = messy.reshape_transpose_weights()
    canonical, _ = canonicalize(original)
    assert op_types(canonical) == ["Conv", "Flatten", "MatMul"]
    flat = numpy_helper.to_array(original.graph.node[0].attribute[0].t)
    conv = canonical.graph.node[0]
    np.testing.assert_array_equal(initializer(canonical, conv.input[1]), flat.reshape(3, 3, 2, 4).transpose(3, 2, 0, 1))


@pytest.mark.parametrize(
    "name, layer, kind",
    [
        ("conv_bn_relu_gemm_opset9", "conv1", "Conv"),
        ("constant_of_shape_weight", "conv", "Conv"),
        ("gemm_bn", "fc", "Gemm"),
        ("conv_transpose_bn", "up", "ConvTranspose"),
        ("conv_transpose_bn_group1", "up", "ConvTranspose"),
    ],
)
def test_batchnorm_folds_into_the_layer_before_it_which_keeps_its_name(name, layer, kind):
    canonical, report = canonicalize(messy.HAND_BUILT[name]())
    assert "BatchNormalization" not in op_types(canonical)
    assert (report.batchnorms_folded, report.batchnorms_left) == (1, 0)
    assert any(node.name == layer and node.op_type == kind for node in canonical.graph.node)


def test_torch_legacy_export_has_its_batchnorm_folded(torch_legacy_export):
    assert "BatchNormalization" in op_types(torch_legacy_export)
    canonical, _ = canonicalize(torch_legacy_export)
    assert op_types(canonical) == ["Conv", "Relu", "MaxPool", "Flatten", "Gemm"]


@pytest.mark.parametrize("name", sorted(messy.HAND_BUILT))
def test_layer_names_are_preserved(name):
    original = messy.HAND_BUILT[name]()
    canonical, _ = canonicalize(original, SHAPES.get(name))
    layers = {"Conv", "ConvTranspose", "Gemm", "MatMul"}
    assert {n.name for n in all_nodes(original.graph) if n.op_type in layers} == {
        n.name for n in all_nodes(canonical.graph) if n.op_type in layers
    }


def test_node_names_are_unique():
    canonical, _ = canonicalize(messy.if_and_loop())
    names = [node.name for node in all_nodes(canonical.graph)]
    assert len(names) == len(set(names)) and all(names)


# Report and refusals.


def test_report_counts_ops_weights_and_producer():
    canonical, report = canonicalize(messy.conv_bn_relu_gemm_opset9())
    assert report.op_counts_in == {"BatchNormalization": 1, "Conv": 1, "Flatten": 1, "Gemm": 1, "Relu": 1}
    assert report.op_counts_out == {"Conv": 1, "Flatten": 1, "Gemm": 1, "Relu": 1}
    assert (report.nodes_in, report.nodes_out) == (5, 4)
    assert report.weight_count == sum(numpy_helper.to_array(t).size for t in canonical.graph.initializer)
    assert report.producer == "tests"


def test_model_below_opset_9_is_refused_naming_both_versions():
    old = messy.conv_bn_relu_gemm_opset9()
    old.opset_import[0].version = 8
    with pytest.raises(HetmapError, match=r"opset 8.*opset >= 9"):
        canonicalize(old)

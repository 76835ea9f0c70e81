"""partition: the crossbar matrix, weights, MACs and tiles of every mappable layer.

Expected MACs are computed here from each layer's formula, independently of
the pass: output elements x (inputs per output) for Conv/Gemm/MatMul, input
elements x (outputs per input) for ConvTranspose.
"""

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

import messy_models as messy
from helpers import canonicalize, layers_by_name, partition
from hetmap.driver import Decision, compile_model
from hetmap.errors import HetmapError
from hetmap.passes.partition import Partition
from hetmap.targets import load_target
from messy_models import init, tensor


def conv_macs(cout, out_hw, cin, groups, kernel_hw):
    return cout * out_hw[0] * out_hw[1] * (cin // groups) * kernel_hw[0] * kernel_hw[1]


def conv_transpose_macs(cin, in_hw, cout, groups, kernel_hw):
    return cin * in_hw[0] * in_hw[1] * (cout // groups) * kernel_hw[0] * kernel_hw[1]


def out_size(size, kernel, stride=1, pad=0):
    return (size + 2 * pad - kernel) // stride + 1


# Matrix shape and MACs per layer kind.


def test_conv_matrix_has_cin_times_kernel_rows_and_cout_cols():
    conv = layers_by_name(partition(messy.conv_bn_relu_gemm_opset9()))["conv1"]
    assert (conv.rows, conv.cols, conv.groups, conv.weight_count) == (3 * 3 * 3, 4, 1, 4 * 3 * 3 * 3)
    assert conv.macs == conv_macs(4, (out_size(8, 3), out_size(8, 3)), 3, 1, (3, 3))


def test_grouped_conv_has_cin_per_group_rows():
    grouped = layers_by_name(partition(messy.grouped_and_depthwise_conv()))["grouped"]
    assert (grouped.rows, grouped.cols, grouped.groups) == (4 // 2 * 9, 8, 2)
    assert grouped.macs == conv_macs(8, (8, 8), 4, 2, (3, 3))


def test_depthwise_conv_has_one_channel_of_kernel_rows():
    depthwise = layers_by_name(partition(messy.grouped_and_depthwise_conv()))["depthwise"]
    assert (depthwise.rows, depthwise.cols, depthwise.groups) == (9, 8, 8)
    hw = out_size(8, 3, stride=2, pad=1)
    assert depthwise.macs == conv_macs(8, (hw, hw), 8, 8, (3, 3))


@pytest.mark.parametrize("groups", [1, 2])
def test_conv_transpose_has_cin_per_group_rows_and_cout_cols(groups):
    up = layers_by_name(partition(messy.conv_transpose_bn(group=groups)))["up"]
    assert (up.rows, up.cols, up.groups) == (4 // groups * 9, 6, groups)
    assert up.weight_count == 4 * (6 // groups) * 9
    assert up.macs == conv_transpose_macs(4, (5, 5), 6, groups, (3, 3))


def test_gemm_reads_its_weight_as_k_by_n_whatever_trans_b():
    layers = layers_by_name(partition(messy.gemm_trans_b()))
    assert (layers["trans_b"].rows, layers["trans_b"].cols, layers["trans_b"].weight_transposed) == (8, 6, True)
    assert (layers["plain"].rows, layers["plain"].cols, layers["plain"].weight_transposed) == (6, 5, False)
    assert (layers["trans_b"].macs, layers["plain"].macs) == (1 * 8 * 6, 1 * 6 * 5)


def test_matmul_with_constant_left_operand_maps_the_transposed_weight():
    layer = layers_by_name(partition(messy.matmul_constant_left()))["left_matmul"]
    assert (layer.rows, layer.cols, layer.weight_operand, layer.weight_transposed) == (8, 6, 0, True)
    assert layer.macs == 6 * 8 * 4  # W (6, 8) @ X (8, 4)


def test_matmul_between_two_activations_is_unmappable_with_reason():
    report = partition(messy.attention_scores())
    assert sorted(layers_by_name(report)) == ["k_proj", "q_proj"]
    assert layers_by_name(report)["q_proj"].macs == 5 * 16 * 8
    [scores] = report.unmappable
    assert (scores.name, scores.op_type) == ("scores", "MatMul")
    assert "both operands are activations" in scores.reason


def test_matmul_with_a_vector_weight_has_one_column():
    model = messy.model(
        [helper.make_node("MatMul", ["x", "w"], ["y"], name="dot")],
        [tensor("x", [1, 12])],
        [tensor("y", [1])],
        [init("w", np.ones(12, np.float32))],
    )
    dot = layers_by_name(partition(model))["dot"]
    assert (dot.rows, dot.cols, dot.macs) == (12, 1, 12)


def test_matmul_with_a_batch_of_constant_matrices_is_unmappable():
    model = messy.model(
        [
            helper.make_node("MatMul", ["x", "w"], ["h"], name="batched"),
            helper.make_node("Gemm", ["x0", "fc.W"], ["y"], name="fc"),
        ],
        [tensor("x", [2, 1, 4]), tensor("x0", [1, 4])],
        [tensor("h", [2, 1, 3]), tensor("y", [1, 3])],
        [init("w", np.ones((2, 4, 3), np.float32)), init("fc.W", np.ones((4, 3), np.float32))],
    )
    [batched] = partition(model).unmappable
    assert batched.name == "batched" and "rank 3" in batched.reason


def test_integer_matmul_weight_is_unmappable():
    model = messy.model(
        [
            helper.make_node("MatMul", ["i", "w"], ["h"], name="int_matmul"),
            helper.make_node("Gemm", ["x", "fc.W"], ["y"], name="fc"),
        ],
        [tensor("i", [1, 4], onnx.TensorProto.INT32), tensor("x", [1, 4])],
        [tensor("h", [1, 3], onnx.TensorProto.INT32), tensor("y", [1, 3])],
        [init("w", np.ones((4, 3), np.int32)), init("fc.W", np.ones((4, 3), np.float32))],
    )
    [int_matmul] = partition(model).unmappable
    assert int_matmul.name == "int_matmul" and "floating-point" in int_matmul.reason


def test_einsum_is_listed_as_digital_only():
    model = messy.model(
        [
            helper.make_node("Einsum", ["x", "w"], ["h"], name="einsum", equation="ij,jk->ik"),
            helper.make_node("Gemm", ["h", "fc.W"], ["y"], name="fc"),
        ],
        [tensor("x", [1, 4])],
        [tensor("y", [1, 3])],
        [init("w", np.ones((4, 4), np.float32)), init("fc.W", np.ones((4, 3), np.float32))],
    )
    [einsum] = partition(model).unmappable
    assert (einsum.name, einsum.op_type) == ("einsum", "Einsum") and "no analog lowering" in einsum.reason


# If/Loop bodies: listed, left digital, and the model still compiles.


def test_layers_inside_if_and_loop_bodies_are_unmappable_naming_the_body():
    report = partition(messy.if_and_loop())
    assert sorted(layers_by_name(report)) == ["in_fc", "out_fc"]
    reasons = {layer.name: layer.reason for layer in report.unmappable}
    assert sorted(reasons) == ["loop_gemm", "then_matmul"]
    assert "'then_branch' body of If node 'branch'" in reasons["then_matmul"]
    assert "'body' body of Loop node 'repeat'" in reasons["loop_gemm"]


def test_model_with_if_and_loop_compiles(tmp_path):
    onnx.save(messy.if_and_loop(), tmp_path / "branchy.onnx")
    result = compile_model(tmp_path / "branchy.onnx", load_target("tiny"), tmp_path / "out")
    assert len(result.reports["partition"]["unmappable"]) == 2
    onnx.checker.check_model(onnx.load(tmp_path / "out" / "model.mapped.onnx"), full_check=True)


# Weights, tiles and totals.


@pytest.mark.parametrize("name", sorted(messy.HAND_BUILT))
def test_weight_count_is_the_size_of_the_weight_initializer(name):
    shapes = {"x": (1, 3, 8, 8)} if name == "symbolic_dims" else None
    canonical, _ = canonicalize(messy.HAND_BUILT[name](), shapes)
    sizes = {t.name: numpy_helper.to_array(t).size for t in canonical.graph.initializer}
    layers = partition(messy.HAND_BUILT[name](), input_shapes=shapes).layers
    assert layers and all(layer.weight_count == sizes[layer.weight] for layer in layers)


def test_layer_larger_than_a_tile_is_split_into_row_and_column_blocks():
    fc = layers_by_name(partition(messy.wide_gemm(k=70, n=40), target="tiny"))["fc"]
    assert (fc.row_blocks, fc.col_blocks, fc.tiles) == (3, 2, 6)  # ceil(70/32), ceil(40/32) on 32x32


def conv_16_channels_3x3():
    return messy.model(
        [helper.make_node("Conv", ["x", "w"], ["y"], name="conv", pads=[1, 1, 1, 1])],
        [tensor("x", [1, 16, 8, 8])],
        [tensor("y", [1, 8, 8, 8])],
        [init("w", messy._weights(8, 16, 3, 3))],
    )


def test_conv_row_blocks_hold_whole_input_channels():
    conv = layers_by_name(partition(conv_16_channels_3x3(), target="tiny"))["conv"]
    # 144 rows; a 32-row tile holds 3 channels of 9 taps (27 rows): ceil(16 / 3) = 6 blocks
    assert (conv.block_rows, conv.row_blocks, conv.col_blocks) == (27, 6, 1)


def test_same_layer_fits_one_tile_on_hermes():
    fc = layers_by_name(partition(messy.wide_gemm(k=70, n=40), target="hermes"))["fc"]
    assert (fc.row_blocks, fc.col_blocks, fc.tiles) == (1, 1, 1)


def test_matrix_exactly_one_tile_needs_one_tile():
    fc = layers_by_name(partition(messy.wide_gemm(k=32, n=32), target="tiny"))["fc"]
    assert (fc.row_blocks, fc.col_blocks) == (1, 1)


@pytest.mark.parametrize("k, fits", [(70, True), (300, False)])  # 6 or 20 tiles of tiny's 8
def test_fits_on_chip_compares_tiles_needed_with_tile_count(k, fits):
    report = partition(messy.wide_gemm(k=k, n=40), target="tiny")
    assert report.tiles_needed == -(-k // 32) * 2
    assert report.fits_on_chip is fits


def test_report_totals_sum_the_layers():
    report = partition(messy.conv_bn_relu_gemm_opset9())
    assert report.mappable_weights == 108 + 144 * 10
    assert report.mappable_macs == sum(layer.macs for layer in report.layers)
    assert report.tiles_needed == sum(layer.tiles for layer in report.layers) == 1 + 5
    assert (report.target, report.tile_rows, report.tile_cols, report.tile_count) == ("tiny", 32, 32, 8)


def test_macs_follow_the_given_input_shape():
    small = layers_by_name(partition(messy.symbolic_dims(), input_shapes={"x": (1, 3, 8, 8)}))
    large = layers_by_name(partition(messy.symbolic_dims(), input_shapes={"x": (1, 3, 16, 16)}))
    assert small["conv"].macs == conv_macs(8, (8, 8), 3, 1, (3, 3))
    assert large["conv"].macs == conv_macs(8, (16, 16), 3, 1, (3, 3))
    assert small["fc"].macs == large["fc"].macs == 8 * 5


def test_macs_are_per_inference_when_the_batch_is_symbolic():
    assert layers_by_name(partition(messy.symbolic_batch_only()))["fc"].macs == 12 * 40


def test_model_with_no_mappable_layer_is_an_error():
    with pytest.raises(HetmapError, match="no mappable layer"):
        partition(messy.no_mappable_layer())


def test_partition_leaves_the_graph_alone():
    assert Partition.rewrites_graph is False


# Models from real exporters.


@pytest.mark.parametrize("exporter", ["torch_legacy_export", "torch_dynamo_export"])
def test_torch_cnn_has_a_conv_and_a_linear_layer(exporter, request):
    report = partition(request.getfixturevalue(exporter))
    conv, linear = report.layers
    assert (conv.op_type, conv.rows, conv.cols, conv.macs) == ("Conv", 27, 8, conv_macs(8, (8, 8), 3, 1, (3, 3)))
    assert (linear.op_type, linear.rows, linear.cols, linear.macs) == ("Gemm", 128, 10, 128 * 10)


def test_sklearn_mlp_has_two_matmul_layers(sklearn_exports):
    report = partition(sklearn_exports["mlp"])
    matrices = [(layer.op_type, layer.rows, layer.cols) for layer in report.layers]
    assert matrices == [("MatMul", 6, 16), ("MatMul", 16, 1)]  # 6 features, 16 hidden, 1 logit


def test_sklearn_linear_regression_is_one_gemm_layer(sklearn_exports):
    (layer,) = partition(sklearn_exports["linear"]).layers  # canonicalize lowers the ai.onnx.ml LinearRegressor
    assert (layer.op_type, layer.rows, layer.cols) == ("Gemm", 6, 1)


def test_shapes_shape_inference_cannot_reach_are_taken_from_a_run(tmp_path):
    """pos[:, :T] with T from Shape: onnx inference loses every shape after the Slice, so the MatMul was unmappable."""
    onnx.save(messy.sliced_positions(), tmp_path / "model.onnx")
    np.savez(tmp_path / "data.npz", x=np.random.default_rng(0).standard_normal((8, 5, 8)).astype(np.float32))
    result = compile_model(
        tmp_path / "model.onnx",
        load_target("tiny"),
        tmp_path / "out",
        tmp_path / "data.npz",
        decision=Decision("all-analog"),
    )
    (layer,) = result.reports["partition"]["layers"]
    assert (layer["name"], layer["rows"], layer["cols"], layer["macs"]) == ("proj", 8, 4, 5 * 8 * 4)
    mapped = onnx.load(tmp_path / "out" / "model.mapped.onnx")
    onnx.checker.check_model(mapped, full_check=True)
    assert [o.name for o in mapped.graph.output] == ["y"]  # the run's extra outputs are gone again

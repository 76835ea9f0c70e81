"""Single-node ONNX models for the torch interpreter's parity tests: one case per op and attribute form."""

import numpy as np
import onnx
import onnx_ir as ir
from onnx import helper, numpy_helper


def floats(*shape: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng([seed, *shape]).standard_normal(shape).astype(np.float32)


def ints(*values: int) -> np.ndarray:
    return np.array(values, dtype=np.int64)


def single_node(op_type: str, inputs: list, outputs: int = 1, domain: str = "", **attributes):
    """A one-node opset-21 model and its feeds: float inputs are fed, the others are initializers."""
    names = ["" if array is None else f"in{i}" for i, array in enumerate(inputs)]
    given = {name: array for name, array in zip(names, inputs) if name}
    feeds = {name: array for name, array in given.items() if array.dtype.kind == "f"}
    output_names = [f"out{i}" for i in range(outputs)]
    graph = helper.make_graph(
        [helper.make_node(op_type, names, output_names, op_type.lower(), domain=domain, **attributes)],
        "single",
        [
            helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(a.dtype), a.shape)
            for name, a in feeds.items()
        ],
        [helper.make_value_info(name, onnx.TypeProto()) for name in output_names],
        [numpy_helper.from_array(array, name) for name, array in given.items() if name not in feeds],
    )
    opsets = [helper.make_opsetid("", 21)] + ([helper.make_opsetid(domain, 1)] if domain else [])
    proto = helper.make_model(graph, opset_imports=opsets, ir_version=10)
    return ir.serde.deserialize_model(onnx.shape_inference.infer_shapes(proto)), feeds


X4 = floats(2, 4, 7, 6)
SINGLE_NODES = {
    "conv1d_strided_dilated_asymmetric": (
        "Conv",
        [floats(2, 3, 11), floats(4, 3, 3)],
        dict(strides=[2], dilations=[2], pads=[2, 1]),
    ),
    "conv2d_grouped_asymmetric": ("Conv", [X4, floats(6, 2, 3, 2), floats(6)], dict(group=2, pads=[0, 1, 2, 1])),
    "conv2d_same_upper": ("Conv", [X4, floats(5, 4, 3, 3)], dict(auto_pad="SAME_UPPER", strides=[2, 2])),
    "conv2d_same_lower": ("Conv", [X4, floats(5, 4, 4, 2)], dict(auto_pad="SAME_LOWER", strides=[2, 1])),
    "conv2d_valid": ("Conv", [X4, floats(5, 4, 3, 3)], dict(auto_pad="VALID")),
    "conv3d": ("Conv", [floats(1, 2, 4, 5, 6), floats(3, 2, 2, 3, 3)], dict(pads=[1, 0, 1, 1, 1, 0])),
    "conv_transpose_padded": (
        "ConvTranspose",
        [X4, floats(4, 3, 3, 3), floats(6)],
        dict(group=2, strides=[2, 2], pads=[1, 0, 0, 1], output_padding=[1, 1]),
    ),
    "conv_transpose_dilated": ("ConvTranspose", [X4, floats(4, 2, 2, 3)], dict(dilations=[2, 1], strides=[1, 3])),
    "conv_transpose_same_upper": (
        "ConvTranspose",
        [X4, floats(4, 2, 3, 3)],
        dict(auto_pad="SAME_UPPER", strides=[2, 2]),
    ),
    "conv_transpose_output_shape": (
        "ConvTranspose",
        [X4, floats(4, 2, 3, 3)],
        dict(strides=[2, 2], output_shape=[14, 12]),
    ),
    "conv_transpose1d": ("ConvTranspose", [floats(2, 3, 5), floats(3, 2, 4)], dict(strides=[3])),
    "max_pool_ceil_padded_dilated": (
        "MaxPool",
        [X4],
        dict(kernel_shape=[3, 2], strides=[2, 2], pads=[1, 0, 1, 1], dilations=[1, 2], ceil_mode=1),
    ),
    "max_pool_same_upper": ("MaxPool", [X4], dict(kernel_shape=[3, 3], strides=[2, 2], auto_pad="SAME_UPPER")),
    "max_pool1d": ("MaxPool", [floats(2, 3, 10)], dict(kernel_shape=[3], strides=[3], ceil_mode=1)),
    "average_pool_excluding_pads": ("AveragePool", [X4], dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])),
    "average_pool_including_pads": (
        "AveragePool",
        [X4],
        dict(kernel_shape=[3, 3], pads=[1, 0, 0, 1], count_include_pad=1),
    ),
    "average_pool_ceil": ("AveragePool", [X4], dict(kernel_shape=[2, 2], strides=[2, 2], ceil_mode=1)),
    "average_pool_ceil_including_pads": (
        "AveragePool",
        [X4],
        dict(kernel_shape=[3, 2], strides=[2, 2], pads=[1, 1, 1, 1], ceil_mode=1, count_include_pad=1),
    ),
    "global_average_pool": ("GlobalAveragePool", [X4], {}),
    "global_max_pool": ("GlobalMaxPool", [floats(2, 3, 4, 5, 6)], {}),
    "gemm_transposed_scaled": (
        "Gemm",
        [floats(5, 3), floats(4, 5), floats(4)],
        dict(transA=1, transB=1, alpha=0.5, beta=2.0),
    ),
    "gemm_without_bias": ("Gemm", [floats(3, 5), floats(5, 4)], {}),
    "matmul_batched": ("MatMul", [floats(2, 1, 3, 5), floats(4, 5, 2)], {}),
    "matmul_vector": ("MatMul", [floats(5), floats(2, 5, 3)], {}),
    "einsum": ("Einsum", [floats(2, 3, 4), floats(2, 4, 5)], dict(equation="bij,bjk->bik")),
    "batch_norm": (
        "BatchNormalization",
        [X4, floats(4, seed=1), floats(4, seed=2), floats(4, seed=3), np.abs(floats(4, seed=4)) + 0.5],
        {},
    ),
    "layer_norm_with_statistics": ("LayerNormalization", [X4, floats(7, 6), floats(6)], dict(axis=-2, epsilon=1e-3), 3),
    "instance_norm": ("InstanceNormalization", [X4, floats(4, seed=1), floats(4, seed=2)], {}),
    "group_norm": ("GroupNormalization", [X4, floats(4, seed=1), floats(4, seed=2)], dict(num_groups=2)),
    "softmax": ("Softmax", [X4], dict(axis=1)),
    "log_softmax": ("LogSoftmax", [X4], {}),
    "reduce_mean_keepdims": ("ReduceMean", [X4, ints(1, -1)], {}),
    "reduce_sum_all": ("ReduceSum", [X4], dict(keepdims=0)),
    "reduce_max_noop": ("ReduceMax", [X4, np.zeros(0, np.int64)], dict(noop_with_empty_axes=1)),
    "reduce_min": ("ReduceMin", [X4, ints(2)], dict(keepdims=0)),
    "reduce_l2": ("ReduceL2", [X4, ints(2, 3)], {}),
    "reduce_log_sum_exp": ("ReduceLogSumExp", [X4, ints(0)], {}),
    "reduce_prod": ("ReduceProd", [X4, ints(1, 3)], {}),
    "arg_max_last": ("ArgMax", [np.round(X4)], dict(axis=1, keepdims=0, select_last_index=1)),
    "arg_min": ("ArgMin", [X4], dict(axis=-1)),
    "top_k": ("TopK", [X4, ints(3)], dict(axis=2), 2),
    "cum_sum_exclusive_reverse": ("CumSum", [X4, ints(2)], dict(exclusive=1, reverse=1)),
    "reshape_zero_and_minus_one": ("Reshape", [X4, ints(0, -1, 3)], {}),
    "reshape_allowzero": ("Reshape", [X4, ints(8, 42)], dict(allowzero=1)),
    "flatten_negative_axis": ("Flatten", [X4], dict(axis=-1)),
    "flatten_axis_zero": ("Flatten", [X4], dict(axis=0)),
    "transpose": ("Transpose", [X4], dict(perm=[0, 2, 3, 1])),
    "transpose_default": ("Transpose", [X4], {}),
    "concat": ("Concat", [X4, floats(2, 1, 7, 6)], dict(axis=-3)),
    "split_sizes": ("Split", [X4, ints(2, 5)], dict(axis=2), 2),
    "split_uneven": ("Split", [X4], dict(axis=2, num_outputs=3), 3),
    "slice_steps_and_huge_ends": (
        "Slice",
        [X4, ints(1, -1, 0), ints(2**62, -(2**62), 5), ints(1, 2, -1), ints(2, -2, 2)],
        {},
    ),
    "slice_default_axes": ("Slice", [X4, ints(0, 1), ints(-1, 3)], {}),
    "gather_negative_indices": ("Gather", [X4, np.array([[0, -1], [2, 1]], np.int64)], dict(axis=1)),
    "gather_scalar": ("Gather", [X4, np.array(-2, np.int64)], dict(axis=3)),
    "gather_scalar_from_vector": ("Gather", [floats(5), np.array(3, np.int64)], {}),
    "gather_elements": ("GatherElements", [floats(3, 4), np.array([[0, 2, -1, 1]], np.int64)], dict(axis=1)),
    "unsqueeze": ("Unsqueeze", [floats(3, 4), ints(-1, 0)], {}),
    "squeeze_axes": ("Squeeze", [floats(1, 3, 1, 4), ints(-2)], {}),
    "squeeze_all": ("Squeeze", [floats(1, 3, 1, 4)], {}),
    "shape_slice": ("Shape", [X4], dict(start=1, end=-1)),
    "size": ("Size", [X4], {}),
    "expand": ("Expand", [floats(3, 1), ints(2, 1, 4)], {}),
    "tile": ("Tile", [floats(2, 3), ints(2, 2)], {}),
    "where": ("Where", [X4 > 0, X4, floats(1, 4, 1, 6)], {}),
    "equal_ints": ("Equal", [ints(1, 2, 3), ints(3, 2, 1)], {}),
    "less_or_equal": ("LessOrEqual", [X4, np.float32(0.1) * np.ones(6, np.float32)], {}),
    "not_and_or": ("Or", [np.array([True, False, True]), np.array([False, False, True])], {}),
    "cast_to_int": ("Cast", [X4 * 3], dict(to=onnx.TensorProto.INT64)),
    "cast_to_bool": ("Cast", [np.round(X4)], dict(to=onnx.TensorProto.BOOL)),
    "cast_int_to_float": ("Cast", [ints(1, -3)], dict(to=onnx.TensorProto.DOUBLE)),
    "range": ("Range", [np.int64(2), np.int64(11), np.int64(3)], {}),
    "range_float": ("Range", [np.array(0.5, np.float32), np.array(2.0, np.float32), np.array(0.25, np.float32)], {}),
    "constant_of_shape": (
        "ConstantOfShape",
        [ints(2, 3)],
        dict(value=numpy_helper.from_array(np.array([7], np.int32))),
    ),
    "constant": ("Constant", [], dict(value_floats=[1.0, 2.5])),
    "dropout": ("Dropout", [X4], {}),
    "identity": ("Identity", [X4], {}),
    "div_ints_truncates": ("Div", [ints(7, -7, 9), ints(2, 2, -4)], {}),
    "pow_int_exponent": ("Pow", [X4, np.int64(3)], {}),
    "mod": ("Mod", [ints(7, -7, 9), ints(3, 3, -4)], {}),
    "fmod": ("Mod", [X4, np.float32(0.7) * np.ones(1, np.float32)], dict(fmod=1)),
    "max": ("Max", [X4, floats(4, 1, 6), floats(6)], {}),
    "mean": ("Mean", [X4, floats(4, 1, 6)], {}),
    "sum": ("Sum", [X4, floats(6)], {}),
    "clip": ("Clip", [X4, np.array(-0.5, np.float32), np.array(0.7, np.float32)], {}),
    "clip_max_only": ("Clip", [X4, None, np.array(0.7, np.float32)], {}),
    "prelu": ("PRelu", [X4, floats(4, 1, 1)], {}),
    "leaky_relu": ("LeakyRelu", [X4], dict(alpha=0.2)),
    "hard_sigmoid": ("HardSigmoid", [X4], dict(alpha=0.3, beta=0.4)),
    "selu": ("Selu", [X4], {}),
    "elu": ("Elu", [X4], dict(alpha=0.5)),
    "gelu_tanh": ("Gelu", [X4], dict(approximate="tanh")),
    "pad_constant_negative": ("Pad", [X4, ints(0, 1, 2, -1, 0, 0, -2, 3), np.array(1.5, np.float32)], {}),
    "pad_reflect_axes": ("Pad", [X4, ints(2, 1, 3, 2), None, ints(2, -1)], dict(mode="reflect")),
    "pad_edge": ("Pad", [X4, ints(0, 0, 3, 1, 0, 0, 1, 4)], dict(mode="edge")),
    "pad_wrap": ("Pad", [X4, ints(0, 0, 2, 1, 0, 0, 1, 3)], dict(mode="wrap")),
    "trilu_lower": ("Trilu", [X4, np.int64(-1)], dict(upper=0)),
    "trilu_upper": ("Trilu", [X4], {}),
    "array_feature_extractor": ("ArrayFeatureExtractor", [floats(3, 5), ints(4, 0)], dict(domain="ai.onnx.ml")),
    "resize_nearest_asymmetric_floor": (
        "Resize",
        [X4, None, np.array([1, 1, 2, 2], np.float32)],
        dict(coordinate_transformation_mode="asymmetric", nearest_mode="floor"),
    ),
    "resize_nearest_half_pixel": ("Resize", [X4, None, np.array([1, 1, 1.5, 0.5], np.float32)], {}),
    "resize_linear_half_pixel": ("Resize", [X4, None, np.array([1, 1, 2, 3], np.float32)], dict(mode="linear")),
    "resize_linear_align_corners": (
        "Resize",
        [X4, None, None, ints(2, 4, 10, 3)],
        dict(mode="linear", coordinate_transformation_mode="align_corners"),
    ),
    "resize_linear_pytorch_half_pixel": (
        "Resize",
        [X4, None, None, ints(2, 4, 1, 9)],
        dict(mode="linear", coordinate_transformation_mode="pytorch_half_pixel"),
    ),
    "resize_linear_axes_not_larger": (
        "Resize",
        [X4, None, None, ints(14, 18)],
        dict(mode="linear", axes=[2, 3], keep_aspect_ratio_policy="not_larger"),
    ),
    "resize_cubic": ("Resize", [X4, None, np.array([1, 1, 1.7, 2], np.float32)], dict(mode="cubic")),
    "resize_cubic_exclude_outside": (
        "Resize",
        [X4, None, np.array([1, 1, 0.6, 2], np.float32)],
        dict(mode="cubic", exclude_outside=1, cubic_coeff_a=-0.5),
    ),
    "resize_tf_crop_and_resize": (
        "Resize",
        [X4, np.array([0, 0, 0.2, -0.1, 1, 1, 0.9, 0.8], np.float32), None, ints(2, 4, 5, 5)],
        dict(mode="linear", coordinate_transformation_mode="tf_crop_and_resize", extrapolation_value=9.0),
    ),
}
SINGLE_NODES.update(
    {
        f"unary_{op}": (op, [X4], {})
        for op in (
            "Neg",
            "Abs",
            "Exp",
            "Sigmoid",
            "Tanh",
            "Erf",
            "Relu",
            "Softplus",
            "HardSwish",
            "Floor",
            "Ceil",
            "Round",
            "Sign",
        )
    }
)
SINGLE_NODES.update({f"unary_{op}": (op, [np.abs(X4) + 0.1], {}) for op in ("Sqrt", "Log", "Reciprocal")})
SINGLE_NODES.update(
    {f"binary_{op}": (op, [X4, floats(7, 1)], {}) for op in ("Add", "Sub", "Mul", "Div", "Less", "Greater")}
)

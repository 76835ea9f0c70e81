"""ai.onnx.ml linear models lowered to Gemm: the same labels and scores in onnxruntime, one mappable layer each."""

import warnings

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from helpers import assert_same_outputs, canonicalize, ort_outputs, partition
from hetmap.errors import HetmapError

FEATURES = 5
SCORES = {
    "logistic_binary": 2,
    "logistic_3": 3,
    "logistic_strings": 3,
    "svc_binary": 2,
    "svc_3": 3,
    "regression_2_targets": 2,
    "ridge": 1,
}


@pytest.fixture(scope="module")
def linear_exports() -> dict[str, onnx.ModelProto]:
    """skl2onnx conversions of fitted linear estimators, written as LinearClassifier / LinearRegressor nodes."""
    from skl2onnx import to_onnx
    from sklearn.linear_model import LinearRegression, LogisticRegression, Ridge
    from sklearn.svm import LinearSVC

    rng = np.random.default_rng(0)
    x = rng.standard_normal((90, FEATURES)).astype(np.float32)
    three = np.digitize(x[:, 0] + x[:, 1], [-0.5, 0.5])
    two = (x[:, 2] > 0).astype(np.int64)
    values = x @ rng.standard_normal((FEATURES, 2))
    no_zipmap = {"zipmap": False}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {
            "logistic_binary": to_onnx(LogisticRegression().fit(x, two), x[:1], options=no_zipmap),
            "logistic_3": to_onnx(LogisticRegression().fit(x, three), x[:1], options=no_zipmap),
            "logistic_strings": to_onnx(
                LogisticRegression().fit(x, np.array(["cat", "dog", "eel"])[three]), x[:1], options=no_zipmap
            ),
            "svc_binary": to_onnx(LinearSVC().fit(x, two), x[:1]),
            "svc_3": to_onnx(LinearSVC().fit(x, three), x[:1]),
            "regression_2_targets": to_onnx(LinearRegression().fit(x, values), x[:1]),
            "ridge": to_onnx(Ridge().fit(x, values[:, 0]), x[:1]),
        }


def ml_ops(proto: onnx.ModelProto) -> list[str]:
    return [node.op_type for node in proto.graph.node if node.domain == "ai.onnx.ml"]


def assert_lowering_keeps_outputs(proto: onnx.ModelProto, feeds: dict) -> onnx.ModelProto:
    canonical, _ = canonicalize(proto)
    onnx.checker.check_model(canonical, full_check=True)
    assert_same_outputs(ort_outputs(proto, feeds), ort_outputs(canonical, feeds), rtol=1e-5)
    return canonical


@pytest.mark.parametrize("name", sorted(SCORES))
def test_sklearn_linear_model_keeps_its_labels_and_scores(linear_exports, name):
    proto = linear_exports[name]
    feeds = {"X": np.random.default_rng(1).standard_normal((64, FEATURES)).astype(np.float32)}
    canonical = assert_lowering_keeps_outputs(proto, feeds)
    assert {"LinearClassifier", "LinearRegressor"}.isdisjoint(ml_ops(canonical))
    lowered = next(node for node in proto.graph.node if node.op_type in ("LinearClassifier", "LinearRegressor"))
    assert any(node.op_type == "Gemm" and node.name == lowered.name for node in canonical.graph.node)


@pytest.mark.parametrize("name", sorted(SCORES))
def test_sklearn_linear_model_is_one_gemm_layer_of_features_by_scores(linear_exports, name):
    (layer,) = partition(linear_exports[name]).layers
    assert (layer.op_type, layer.rows, layer.cols) == ("Gemm", FEATURES, SCORES[name])


def linear_classifier(input_shape, opsets=(("", 21), ("ai.onnx.ml", 1)), **attributes) -> onnx.ModelProto:
    """One LinearClassifier over 3 features; outputs label and scores."""
    node = helper.make_node(
        "LinearClassifier", ["x"], ["label", "scores"], name="classifier", domain="ai.onnx.ml", **attributes
    )
    scores = len(attributes["intercepts"])
    outputs = [
        helper.make_tensor_value_info("label", TensorProto.INT64, [None]),
        helper.make_tensor_value_info("scores", TensorProto.FLOAT, [None, None]),
    ]
    graph = helper.make_graph(
        [node], "ml", [helper.make_tensor_value_info("x", TensorProto.FLOAT, input_shape)], outputs
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid(d, v) for d, v in opsets])
    proto.ir_version = 8
    onnx.checker.check_model(proto)
    assert scores * 3 == len(attributes["coefficients"])
    return proto


ONE_SCORE = {"coefficients": [0.5, -1.0, 2.0], "intercepts": [0.1]}
TWO_SCORES = {"coefficients": [0.5, -1.0, 2.0, -0.3, 0.8, 0.2], "intercepts": [0.1, -0.2]}


@pytest.mark.parametrize(
    "attributes",
    [
        {**ONE_SCORE, "classlabels_ints": [3, 7], "post_transform": "LOGISTIC"},  # (1 - sigmoid(s), sigmoid(s))
        {**ONE_SCORE, "classlabels_ints": [3, 7], "post_transform": "SOFTMAX"},  # (1 - s, s): no softmax of one
        {**ONE_SCORE, "post_transform": "LOGISTIC"},  # no labels: 1 and 0 by the sign; the score stays raw
        {**TWO_SCORES, "classlabels_ints": [4, 2], "post_transform": "LOGISTIC"},
        {**TWO_SCORES, "classlabels_ints": [4, 2], "post_transform": "SOFTMAX"},
    ],
    ids=["one_score_logistic", "one_score_softmax", "one_score_no_labels", "two_scores_logistic", "two_scores_softmax"],
)
def test_hand_built_classifier_keeps_onnxruntime_semantics(attributes):
    feeds = {"x": np.random.default_rng(2).standard_normal((32, 3)).astype(np.float32)}
    assert_lowering_keeps_outputs(linear_classifier(["n", 3], **attributes), feeds)


def test_one_dimensional_input_is_one_sample_as_in_onnxruntime():
    proto = linear_classifier([3], **TWO_SCORES, classlabels_ints=[0, 1])
    assert_lowering_keeps_outputs(proto, {"x": np.array([0.3, -1.2, 0.7], np.float32)})


def test_model_of_ml_ops_alone_gets_the_canonical_opset():
    proto = linear_classifier(["n", 3], opsets=(("ai.onnx.ml", 1),), **TWO_SCORES, classlabels_ints=[0, 1])
    canonical = assert_lowering_keeps_outputs(proto, {"x": np.ones((4, 3), np.float32)})
    assert {o.domain: o.version for o in canonical.opset_import}[""] == 21


def test_probit_scores_are_refused_naming_the_node_and_the_transform():
    proto = linear_classifier(["n", 3], **TWO_SCORES, classlabels_ints=[0, 1], post_transform="PROBIT")
    with pytest.raises(HetmapError, match=r"LinearClassifier node 'classifier' has post_transform PROBIT"):
        canonicalize(proto)

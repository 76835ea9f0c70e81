"""What the third-party sweep (bench/sweep.py) found, each on an in-line model shaped like the real one; and the
sweep's quick subset, which must find no bug."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from onnx import helper

import messy_models as messy
from helpers import partition
from hetmap.driver import Decision, compile_model
from hetmap.errors import HetmapError
from hetmap.graph import parity
from hetmap.targets import load_target

REPO = Path(__file__).resolve().parents[1]


def test_paddle_minus_one_dimension_is_read_as_symbolic(tmp_path):
    """PaddlePaddle writes -1 for a dynamic dimension (rapidocr's text-direction classifier: [-1, 3, ?, ?])."""
    nodes = [helper.make_node("Conv", ["x", "conv.W"], ["y"], name="conv", pads=[1, 1, 1, 1])]
    proto = messy.model(
        nodes,
        [messy.tensor("x", [-1, 3, 8, 8])],
        [messy.tensor("y", [-1, 4, 8, 8])],
        [messy.init("conv.W", np.ones((4, 3, 3, 3), np.float32))],
    )
    onnx.save(proto, tmp_path / "paddle.onnx")
    result = compile_model(
        tmp_path / "paddle.onnx", load_target("tiny"), tmp_path / "out", decision=Decision("all-analog")
    )
    assert [layer["name"] for layer in result.reports["partition"]["layers"]] == ["conv"]


def test_saturated_sigmoid_is_compared_at_a_floor_not_at_its_tiny_scale():
    """An OCR text detector on noise: sigmoid outputs ~1e-6, float rounding of the logits moves them by ~1e-7."""
    tiny = np.full((1, 4), 3e-6, np.float32)
    assert parity.max_relative_error([tiny], [tiny + np.float32(1.2e-7)]) <= parity.RELATIVE_TOLERANCE
    unit = np.ones((1, 4), np.float32)
    assert parity.max_relative_error([unit], [unit * np.float32(1.001)]) > parity.RELATIVE_TOLERANCE


def recurrent_step() -> onnx.ModelProto:
    """Audio [1, 8] and a state [2, 1, 8] (leading dimensions differ), like silero-vad's OpenVINO export."""
    nodes = [
        helper.make_node("Gemm", ["audio", "fc.W"], ["h"], name="fc"),
        helper.make_node("Add", ["state", "h"], ["y"], name="recur"),
    ]
    inputs = [messy.tensor("audio", [1, 8]), messy.tensor("state", [2, 1, 8])]
    return messy.model(nodes, inputs, [messy.tensor("y", [2, 1, 8])], [messy.init("fc.W", np.eye(8, dtype=np.float32))])


def test_input_of_its_fixed_shape_goes_whole_into_every_fixed_batch():
    model = ir.serde.deserialize_model(recurrent_step())
    feeds = {"audio": np.ones((3, 8), np.float32), "state": np.zeros((2, 1, 8), np.float32)}
    runs = list(parity.run_model_batches(model, feeds, batch=1))
    assert len(runs) == 3 and all(outputs[0].shape == (2, 1, 8) for outputs in runs)


def test_model_whose_inputs_have_different_fixed_leading_dimensions_compiles(tmp_path):
    onnx.save(recurrent_step(), tmp_path / "step.onnx")
    result = compile_model(
        tmp_path / "step.onnx", load_target("tiny"), tmp_path / "out", decision=Decision("all-analog")
    )
    assert result.reports["calibrate"]["input_range"]["fc"] > 0


def test_no_mappable_layer_error_names_the_layer_left_inside_an_if_body():
    """silero-vad wraps its whole network in an If on the sample rate."""
    then_branch = helper.make_graph(
        [
            messy.const("w", np.ones((4, 4), np.float32), name="w_const"),
            helper.make_node("MatMul", ["x", "w"], ["t"], name="then_matmul"),
        ],
        "then",
        [],
        [messy.tensor("t", [1, 4])],
    )
    else_branch = helper.make_graph(
        [helper.make_node("Neg", ["x"], ["e"], name="neg")], "else", [], [messy.tensor("e", [1, 4])]
    )
    nodes = [helper.make_node("If", ["flag"], ["y"], name="by_rate", then_branch=then_branch, else_branch=else_branch)]
    proto = messy.model(
        nodes, [messy.tensor("x", [1, 4]), messy.tensor("flag", [], messy.BOOL)], [messy.tensor("y", [1, 4])]
    )
    with pytest.raises(
        HetmapError, match=r"MatMul 'then_matmul' is not \(inside the 'then_branch' body of If node 'by_rate'"
    ):
        partition(proto)


def test_quick_sweep_compiles_or_refuses_every_model_with_no_bug(tmp_path):
    json_path = tmp_path / "sweep.json"
    run = subprocess.run(
        [sys.executable, "-m", "bench.sweep", "--quick", "--json", str(json_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert "Traceback" not in run.stdout + run.stderr
    record = json.loads(json_path.read_text())
    bugs = [f"{m['model']} ({m['exporter']}): {m['reason']}" for m in record["models"] if m["result"] == "bug"]
    assert bugs == [] and run.returncode == 0
    assert record["counts"]["compiled"] >= 5 and record["counts"]["skipped"] == 0

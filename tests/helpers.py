"""Plain helpers for the tests: run a model in onnxruntime, run hetmap's passes, run the console script."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort

from hetmap.passes.canonicalize import Canonicalize
from hetmap.passes.partition import Partition
from hetmap.pipeline import CompileConfig, PassContext, run_pipeline
from hetmap.shapes import resolve_input_shapes
from hetmap.targets import load_target


def fed_inputs(proto: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    """The graph inputs a caller feeds (IR 3 models also list initializers)."""
    initializers = {tensor.name for tensor in proto.graph.initializer}
    return [value for value in proto.graph.input if value.name not in initializers]


def random_inputs(proto: onnx.ModelProto, shapes: dict | None = None, batch: int = 2, seed: int = 0) -> dict:
    """Seeded inputs: symbolic dims from `shapes` (the batch from `batch`), normal floats, small ints."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for value in fed_inputs(proto):
        tensor_type = value.type.tensor_type
        given = (shapes or {}).get(value.name)
        dims = [
            dim.dim_value if dim.HasField("dim_value") else given[i] if given else batch
            for i, dim in enumerate(tensor_type.shape.dim)
        ]
        dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor_type.elem_type)
        if np.issubdtype(dtype, np.floating):
            feeds[value.name] = rng.standard_normal(dims).astype(dtype)
        else:
            feeds[value.name] = rng.integers(1, 5, dims).astype(dtype)
    return feeds


def ort_outputs(proto: onnx.ModelProto, feeds: dict) -> list[np.ndarray]:
    """Outputs of stock onnxruntime (default session options), as a user would run the model."""
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def assert_same_outputs(expected: list, actual: list, rtol: float = 1e-4) -> None:
    """Equal to float tolerance, relative to each output's largest magnitude."""
    assert len(expected) == len(actual)
    for want, got in zip(expected, actual):
        want, got = np.asarray(want), np.asarray(got)
        assert got.shape == want.shape and got.dtype == want.dtype
        if np.issubdtype(want.dtype, np.floating):
            scale = max(float(np.abs(want).max()), 1.0) if want.size else 1.0
            np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol * scale)
        else:
            np.testing.assert_array_equal(got, want)


def all_nodes(graph: onnx.GraphProto):
    """Every node, those inside If/Loop/Scan bodies included."""
    for node in graph.node:
        yield node
        for attribute in node.attribute:
            for body in [attribute.g] if attribute.type == onnx.AttributeProto.GRAPH else attribute.graphs:
                yield from all_nodes(body)


def _context(model: ir.Model, target: str, input_shapes: dict | None) -> PassContext:
    shapes = resolve_input_shapes(model, None, input_shapes or {})
    return PassContext(target=load_target(target), config=CompileConfig(input_shapes=shapes))


def canonicalize(proto: onnx.ModelProto, input_shapes: dict | None = None):
    """Run the canonicalize pass alone: (canonical ModelProto, report as a dataclass)."""
    model = ir.serde.deserialize_model(copy.deepcopy(proto))
    model, report = Canonicalize().run(model, _context(model, "tiny", input_shapes))
    return ir.to_proto(model), report


def partition(proto: onnx.ModelProto, target: str = "tiny", input_shapes: dict | None = None):
    """Canonicalize then partition, as `hetmap compile` does: the partition report."""
    model = ir.serde.deserialize_model(copy.deepcopy(proto))
    context = _context(model, target, input_shapes)
    run_pipeline(model, [Canonicalize(), Partition()], context)
    return context.reports["partition"]


def layers_by_name(report) -> dict:
    return {layer.name: layer for layer in report.layers}


HETMAP = Path(sys.executable).parent / "hetmap"  # the installed console script


def run_console_script(*args, cwd) -> subprocess.CompletedProcess:
    """Run the real `hetmap` executable in `cwd`, without debug or path settings from this process."""
    env = {k: v for k, v in os.environ.items() if k not in ("HETMAP_DEBUG", "PYTHONPATH")}
    return subprocess.run([HETMAP, *map(str, args)], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def assert_one_line_error(result, *phrases: str) -> None:
    """A user error: non-zero exit, one `error: ...` line on stderr holding every phrase, no traceback."""
    stderr = result.stderr.strip()
    assert result.exit_code != 0
    assert "Traceback" not in result.stderr + result.stdout
    assert len(stderr.splitlines()) == 1 and stderr.startswith("error: "), stderr
    for phrase in phrases:
        assert phrase in stderr, stderr

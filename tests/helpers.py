"""Plain helpers for the tests: run a model in onnxruntime, run hetmap's passes, run the console script."""

from __future__ import annotations

import copy
import functools
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort

import messy_models as messy
from hetmap.driver import Decision, default_passes
from hetmap.graph.data import Dataset
from hetmap.graph.shapes import resolve_input_shapes
from hetmap.mapping.mapping import FORMAT
from hetmap.models import reference_path
from hetmap.passes.canonicalize import Canonicalize
from hetmap.passes.partition import Partition
from hetmap.pipeline import CompileConfig, PassContext, run_pipeline
from hetmap.targets import Target, load_target


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


def _context(model: ir.Model, target: str | Target, input_shapes: dict | None) -> PassContext:
    shapes = resolve_input_shapes(model, None, input_shapes or {})
    return PassContext(target=as_target(target), config=CompileConfig(input_shapes=shapes))


def as_target(target: str | Target) -> Target:
    """A built-in target by name, or the Target given."""
    return load_target(target) if isinstance(target, str) else target


def canonicalize(proto: onnx.ModelProto, input_shapes: dict | None = None):
    """Run the canonicalize pass alone: (canonical ModelProto, report as a dataclass)."""
    model = ir.serde.deserialize_model(copy.deepcopy(proto))
    model, report = Canonicalize().run(model, _context(model, "tiny", input_shapes))
    return ir.to_proto(model), report


def partition(proto: onnx.ModelProto, target: str | Target = "tiny", input_shapes: dict | None = None):
    """Canonicalize then partition, as `hetmap compile` does: the partition report."""
    model = ir.serde.deserialize_model(copy.deepcopy(proto))
    _, reports = run_pipeline(model, [Canonicalize(), Partition()], _context(model, target, input_shapes))
    return reports["partition"]


def layers_by_name(report) -> dict:
    return {layer.name: layer for layer in report.layers}


REFERENCE_MODELS = ("cnn", "mlp", "resnet", "transformer")
EXAMPLE_MODELS = (*messy.HAND_BUILT, "wide_gemm", *REFERENCE_MODELS)
MIXED = ("analog", "int8", "int4", "int2")  # the options a "mixed" mapping cycles through


def example_model(name: str) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """One of EXAMPLE_MODELS with inputs for it: 32 test samples of a reference model, else seeded ones."""
    if name in REFERENCE_MODELS:
        proto = onnx.load(reference_path(f"{name}.onnx"))
        return proto, {"x": np.load(reference_path(f"{name}.test.npz"))["x"][:32]}
    proto = messy.wide_gemm() if name == "wide_gemm" else messy.HAND_BUILT[name]()
    return proto, random_inputs(proto, {"x": [2, 3, 10, 6]} if name == "symbolic_dims" else None)


def compile_in_memory(proto: onnx.ModelProto, target: str | Target, mapping: str | dict = "all-analog", feeds=None):
    """`hetmap compile`'s passes without files: (annotated ir.Model, reports by pass name).

    `mapping` is a preset or {layer: option}; `feeds` calibrate the layers
    (and fix symbolic shapes) as `--data` does.
    """
    model = ir.serde.deserialize_model(copy.deepcopy(proto))
    dataset = Dataset(inputs=feeds, labels=None, source="feeds") if feeds is not None else None
    config = CompileConfig(input_shapes=resolve_input_shapes(model, dataset, {}), dataset=dataset)
    context = PassContext(target=as_target(target), config=config)
    with tempfile.TemporaryDirectory() as folder:
        if isinstance(mapping, dict):
            path = Path(folder) / "mapping.json"
            path.write_text(json.dumps({"format": FORMAT, "layers": mapping}))
            mapping = str(path)
        model, reports = run_pipeline(model, default_passes(Decision(mapping)), context)
    del reports["pipeline"]
    return model, reports


@functools.cache
def compiled_example(name: str, target: str | Target, mapping: str = "all-analog"):
    """example_model(name) compiled on its own inputs (shared: never modify the result).

    Besides the presets, "mixed" gives the layers analog, int8, int4, int2
    in turn, and an option name ("int2") gives every layer that option.
    """
    proto, feeds = example_model(name)
    if mapping == "mixed" or mapping in MIXED:
        layers = partition(proto, target, {k: v.shape for k, v in feeds.items()}).layers
        cycle = MIXED if mapping == "mixed" else (mapping,)
        mapping = {layer.name: cycle[i % len(cycle)] for i, layer in enumerate(layers)}
    return compile_in_memory(proto, target, mapping, feeds)


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

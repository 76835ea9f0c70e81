"""onnxruntime parity: every graph rewrite must keep the model's outputs."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort

from hetmap.errors import HetmapError
from hetmap.graph.modelio import proto_without

RELATIVE_TOLERANCE = 1e-4
# Outputs smaller than this are compared as if this large: float32 rounding of
# O(1) intermediates is ~1e-7 absolute, which is no change of a saturated
# sigmoid's 1e-6 outputs (an OCR text detector on noise).
MAGNITUDE_FLOOR = 1e-2


FEED_LIMIT_BYTES = 1024
_FEEDABLE = {np.dtype(t) for t in (np.float16, np.float32, np.float64, np.int8, np.uint8, np.int32, np.int64, np.bool_)}


def _payload_with_weights_as_inputs(model: ir.Model) -> tuple[bytes, dict[str, np.ndarray]]:
    """The model's bytes with its large weights declared as graph inputs, and those weights.

    onnxruntime reads fed arrays in place, so the weights are never copied
    into the serialised payload nor into the session.
    """
    graph = model.graph
    moved = [
        value
        for value in graph.initializers.values()
        if value.const_value is not None
        and value.const_value.nbytes > FEED_LIMIT_BYTES
        and value.const_value.dtype.numpy() in _FEEDABLE
    ]
    proto = proto_without(model, moved)
    declared = {info.name for info in proto.graph.input}
    for value in moved:
        if value.name not in declared:
            tensor = value.const_value
            proto.graph.input.append(
                onnx.helper.make_tensor_value_info(value.name, int(tensor.dtype), list(tensor.shape))
            )
    return proto.SerializeToString(), {value.name: value.const_value.numpy() for value in moved}


def run_model(model: ir.Model, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    """Run the graph as written (no ORT graph rewrites) on the CPU."""
    return next(run_model_batches(model, feeds, batch=None))


def run_shapes(model: ir.Model, feeds: dict[str, np.ndarray], names: list[str]) -> dict[str, tuple[int, ...]]:
    """The shapes the values `names` (node outputs of the main graph) take in one run on `feeds`.

    For where onnx shape inference stops: a Slice whose end comes from a Shape (position embeddings cut to a
    symbolic sequence length) leaves every shape after it unknown, though any run knows them.
    """
    produced = {value.name: value for node in model.graph for value in node.outputs}
    added = [produced[name] for name in names if name in produced and not produced[name].is_graph_output()]
    model.graph.outputs.extend(added)
    try:
        order = [value.name for value in model.graph.outputs]
        outputs = run_model(model, feeds)
    finally:
        for value in added:
            model.graph.outputs.remove(value)
    return {name: tuple(array.shape) for name, array in zip(order, outputs) if name in names}


def _fixed_shape(shape: ir.Shape | None) -> tuple[int, ...] | None:
    if shape is None or not all(isinstance(dim, int) for dim in shape):
        return None
    return tuple(shape)


def run_model_batches(model: ir.Model, feeds: dict[str, np.ndarray], batch: int | None) -> Iterator[list[np.ndarray]]:
    """run_model on consecutive `batch`-sample slices of `feeds` (all at once for None), one session.

    For models exported with a fixed batch size; a remainder short of a
    whole batch is left out. 0-d inputs, and inputs of exactly their fully
    fixed declared shape (a recurrent state of shape [2, 1, 128] beside
    audio of shape [1, 576]), go whole into every run.
    """
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 3
    payload, weights = _payload_with_weights_as_inputs(model)
    try:
        session = ort.InferenceSession(payload, options, providers=["CPUExecutionProvider"])
    except Exception as error:  # ORT raises its own exception types for unsupported graphs
        raise HetmapError(f"onnxruntime cannot load the model: {str(error).splitlines()[0]}") from None
    declared = {value.name: value.shape for value in model.graph.inputs}
    whole = {
        name for name, array in feeds.items() if array.ndim == 0 or _fixed_shape(declared.get(name)) == array.shape
    }
    size = max((len(array) for name, array in feeds.items() if name not in whole), default=1)
    step = batch or size
    for start in range(0, max(size - step, 0) + 1, step):
        part = {name: array if name in whole else array[start : start + step] for name, array in feeds.items()}
        try:
            yield session.run(None, {**weights, **part})
        except Exception as error:
            reason = " ".join(str(error).split())  # its lines name the index and the size expected
            raise HetmapError(f"onnxruntime cannot run the model on these inputs: {reason}") from None


def max_relative_error(expected: list[np.ndarray], actual: list[np.ndarray]) -> float:
    """Largest output difference, relative to each output's largest magnitude (at least MAGNITUDE_FLOOR)."""
    worst = 0.0
    for want, got in zip(expected, actual, strict=True):
        if want.shape != got.shape:
            return float("inf")
        if want.size == 0 or not np.issubdtype(want.dtype, np.number):
            if not np.array_equal(want, got):
                return float("inf")
            continue
        scale = max(float(np.max(np.abs(want))), MAGNITUDE_FLOOR)
        worst = max(worst, float(np.max(np.abs(got.astype(np.float64) - want))) / scale)
    return worst


def check_parity(pass_name: str, expected: list[np.ndarray], actual: list[np.ndarray]) -> float:
    """Raise, naming the pass, when a rewrite changed the outputs beyond float tolerance."""
    error = max_relative_error(expected, actual)
    if not error <= RELATIVE_TOLERANCE:
        raise HetmapError(
            f"pass '{pass_name}' changed the model's outputs (relative error {error:.3g} > "
            f"{RELATIVE_TOLERANCE:g}); please report this model"
        )
    return error

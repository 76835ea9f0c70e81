"""onnxruntime parity: every graph rewrite must keep the model's outputs."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
import onnxruntime as ort

from hetmap.errors import HetmapError

RELATIVE_TOLERANCE = 1e-4


def session(model: ir.Model) -> ort.InferenceSession:
    """A CPU session that runs the graph as written (no ORT graph rewrites)."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 3
    payload = ir.to_proto(model).SerializeToString()
    try:
        return ort.InferenceSession(payload, options, providers=["CPUExecutionProvider"])
    except Exception as error:  # ORT raises its own exception types for unsupported graphs
        reason = str(error).splitlines()[0]
        raise HetmapError(f"onnxruntime cannot load the model: {reason}") from None


def run_model(model: ir.Model, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    try:
        return session(model).run(None, feeds)
    except HetmapError:
        raise
    except Exception as error:
        reason = str(error).splitlines()[0]
        raise HetmapError(f"onnxruntime cannot run the model on these inputs: {reason}") from None


def max_relative_error(expected: list[np.ndarray], actual: list[np.ndarray]) -> float:
    """Largest output difference, relative to each output's largest magnitude."""
    worst = 0.0
    for want, got in zip(expected, actual, strict=True):
        if want.shape != got.shape:
            return float("inf")
        if want.size == 0 or not np.issubdtype(want.dtype, np.number):
            if not np.array_equal(want, got):
                return float("inf")
            continue
        scale = max(float(np.max(np.abs(want))), 1e-12)
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

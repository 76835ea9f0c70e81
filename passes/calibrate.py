"""Calibrate: the input range of every mappable layer, for its DAC or activation quantiser.

Analog tiles take inputs through a DAC with a fixed full scale per layer
(as on HERMES), and digital INTk layers quantise activations to 8 bits the
same way; both need the largest input magnitude the layer sees. It is
measured by running the full-precision model in onnxruntime on the
calibration data (or on the seeded random inputs when no data was given).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_ir as ir

from hetmap.errors import require_finite
from hetmap.graph import parity
from hetmap.graph.layouts import PEAK_FLOOR
from hetmap.graph.shapes import fixed_batch
from hetmap.pipeline import Pass, PassContext, parity_feeds

CALIBRATION_SAMPLES = 256


@dataclass
class CalibrateReport:
    source: str
    samples: int
    input_range: dict[str, float]


def activation_operand(layer) -> int:
    """Input index of the activation a layer multiplies by its weight."""
    return 0 if layer.op_type in ("Conv", "ConvTranspose") else 1 - layer.weight_operand


def _peak(array: np.ndarray) -> float:
    return float(np.max(np.abs(array))) if array.size else 0.0


class Calibrate(Pass):
    name = "calibrate"
    inputs = ("partition",)

    def run(self, model: ir.Model, context: PassContext) -> tuple[ir.Model, CalibrateReport]:
        nodes = {node.name: node for node in model.graph}
        inputs = {
            layer.name: nodes[layer.name].inputs[activation_operand(layer)]
            for layer in context.reports["partition"].layers
        }
        dataset = context.config.dataset
        if dataset is not None:
            feeds, source = dataset.head(CALIBRATION_SAMPLES), dataset.source
        else:
            feeds, source = parity_feeds(model, context.config), "random inputs (give --data for real ranges)"
        known = set(feeds) | {value.name for value in model.graph.outputs}
        probes = [value for value in dict.fromkeys(inputs.values()) if value.name not in known]
        model.graph.outputs.extend(probes)
        peaks = {name: _peak(array) for name, array in feeds.items()}
        try:
            names = [value.name for value in model.graph.outputs]
            for outputs in parity.run_model_batches(model, feeds, fixed_batch(model)):
                for name, array in zip(names, outputs):
                    peaks[name] = max(peaks.get(name, 0.0), _peak(array))
        finally:
            for _ in probes:
                model.graph.outputs.pop()
        for name, value in inputs.items():
            require_finite(peaks[value.name], f"calibration: the input range of layer '{name}' (tensor '{value.name}')")
        ranges = {
            name: max(peaks[value.name], PEAK_FLOOR) if peaks[value.name] else 1.0 for name, value in inputs.items()
        }
        samples = max((len(array) for array in feeds.values() if array.ndim), default=1 if feeds else 0)
        return model, CalibrateReport(source=source, samples=samples, input_range=ranges)

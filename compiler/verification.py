"""Verification: a mapping's drop on the held-out data, with its confidence interval, against the user's model.

Assign verifies its candidates with it, and refine the weights it trained,
so both measure alike: at the budget's drift time over the same seeds,
per sample, paired with the user's model's own results on the same data.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from hetmap.mapping.mapping import ANALOG
from hetmap.pipeline import PassContext
from hetmap.sim.confidence import VerifiedDrop, verified_drop
from hetmap.sim.measure import Measurement, Measurer
from hetmap.sim.scorer import Scorer


def put_weights(model: ir.Model, weights: dict[str, ir.TensorProtocol]) -> None:
    """Put `weights` into the model's initializers."""
    for name, tensor in weights.items():
        model.graph.initializers[name].const_value = tensor


class Verifier:
    """Scores mappings on the held-out verification data, against the model the user brought."""

    def __init__(
        self,
        model: ir.Model,
        context: PassContext,
        measurement: Measurement,
        confidence: float,
        data: tuple,
        users: dict[str, ir.TensorProtocol] | None = None,
    ):
        """`data`: (dataset, held out); `users`: the user's own weights where the model's differ (fine-tuned)."""
        dataset, self.held_out = data
        reference = None
        if users is not None:  # changed weights are measured against the user's model on this data too
            current = {name: model.graph.initializers[name].const_value for name in users}
            put_weights(model, users)
            reference = Scorer(model, dataset).reference
            put_weights(model, current)
        self.scorer = Scorer(model, dataset, reference, context.config.metric)
        ranges = context.reports["calibrate"].input_range
        layers = context.reports["partition"].layers
        self.measurer = Measurer(
            model, context.target, layers, ranges, self.scorer, context.config.seed, context.config.workers, True
        )
        self.measurement, self.confidence = measurement, confidence

    def __call__(self, mapping: dict[str, str]) -> VerifiedDrop:
        measurement = self.measurement
        what = f"the mapping with {sum(o == ANALOG for o in mapping.values())} analog layers (verification)"
        per_time = self.measurer.measure(mapping, [measurement.t_inference_s], measurement.seeds, what, per_sample=True)
        return verified_drop(self.scorer.full_precision_per_sample, np.array(per_time[0]), self.confidence)

"""Sensitivity: how much the metric drops when one layer alone takes one option.

For every mappable layer and every option the target offers (analog at the
budget's drift time, digital at each bit width), the model is simulated
with only that layer perturbed, on the calibration data (accuracy with
labels, else agreement with full precision), analog over Monte-Carlo
seeds. Drops are in percentage points from these weights without noise,
so that each layer's drop is its own; the solver adds them up on top of
what fine-tuning cost the noiseless model (weights_full_precision).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_ir as ir

from hetmap.errors import require_finite
from hetmap.evaluate import Scorer, parse_drift
from hetmap.mapping import ANALOG, target_options
from hetmap.passes.emit import annotated_as
from hetmap.pipeline import PassContext, scoring_dataset


@dataclass
class OptionDrop:
    drop_points: float  # full precision minus perturbed metric, percentage points
    std_points: float  # spread over seeds (0 for digital options)


@dataclass
class SensitivityReport:
    metric: str
    data: str
    samples: int
    full_precision: float  # the model the user brought
    weights_full_precision: float  # these weights without noise: lower than full_precision after fine-tuning
    drift: str
    seeds: int
    layers: dict[str, dict[str, OptionDrop]]


class Sensitivity:
    rewrites_graph = False

    def __init__(self, drift: str = "1d", seeds: int = 3, name: str = "sensitivity"):
        self.name = name  # "sensitivity_before" when fine-tuning follows
        self.drift = drift
        self.seeds = seeds

    def run(self, model: ir.Model, context: PassContext) -> tuple[ir.Model, SensitivityReport]:
        target = context.target
        partition = context.reports["partition"]
        dataset = scoring_dataset(model, context.config)
        scorer = Scorer(model, dataset, context.reference_outputs, context.config.metric)
        t_inference_s = parse_drift(self.drift)
        layers = {}
        for layer in partition.layers:
            drops = {}
            for option in target_options(target):
                seeds = self.seeds if option == ANALOG else 1
                what = f"layer '{layer.name}' as {option}"
                with annotated_as(model, {layer.name: option}, context):
                    _, per_time = scorer.simulate(model, target, [t_inference_s], seeds, context.config.seed, what=what)
                values = 100 * (scorer.model_metric - np.array(per_time[0]))
                require_finite(values, f"sensitivity: the drop of {what}")
                drops[option] = OptionDrop(float(values.mean()), float(values.std()))
            layers[layer.name] = drops
        report = SensitivityReport(
            metric=scorer.metric.name,
            data=dataset.source,
            samples=dataset.size,
            full_precision=scorer.full_precision,
            weights_full_precision=scorer.model_metric,
            drift=self.drift,
            seeds=self.seeds,
            layers=layers,
        )
        return model, report

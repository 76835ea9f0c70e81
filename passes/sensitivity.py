"""Sensitivity: how much the metric drops when one layer alone takes one option.

For every mappable layer and every option the target offers (analog at the
budget's drift time, digital at each bit width), the model is simulated
with only that layer perturbed, on the calibration data (accuracy with
labels, else agreement with full precision), analog over Monte-Carlo
seeds. Drops are in percentage points from these weights without noise,
so that each layer's drop is its own; the solver adds them up on top of
what fine-tuning cost the noiseless model (weights_full_precision). With
fine-tuning, `sensitivity_before` measures the weights as brought, before it,
and `sensitivity` the adapted ones, relative to the model the user brought.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_ir as ir

from hetmap.errors import require_finite
from hetmap.mapping.mapping import ANALOG, target_options
from hetmap.pipeline import Pass, PassContext, scoring_dataset
from hetmap.sim.measure import Measurement, Measurer
from hetmap.sim.scorer import Scorer


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


class Sensitivity(Pass):
    name = "sensitivity"
    inputs = ("partition", "calibrate", "finetune")

    def __init__(self, measurement: Measurement = Measurement()):
        self.measurement = measurement

    def run(self, model: ir.Model, context: PassContext) -> tuple[ir.Model, SensitivityReport]:
        target = context.target
        partition = context.reports["partition"]
        finetune = context.reports.get("finetune")
        dataset = scoring_dataset(model, context.config)
        reference = finetune.weights.reference_outputs if finetune else None
        scorer = Scorer(model, dataset, reference, context.config.metric)
        measurer = Measurer(
            model, target, partition.layers, context.reports["calibrate"].input_range, scorer, context.config.seed
        )
        t_inference_s = self.measurement.t_inference_s
        layers = {}
        for layer in partition.layers:
            drops = {}
            for option in target_options(target):
                seeds = self.measurement.seeds if option == ANALOG else 1
                what = f"layer '{layer.name}' as {option}"
                per_time = measurer.measure({layer.name: option}, [t_inference_s], seeds, what)
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
            drift=self.measurement.drift,
            seeds=self.measurement.seeds,
            layers=layers,
        )
        return model, report


class SensitivityBeforeFinetune(Sensitivity):
    """The same measurement on the weights as brought, when fine-tuning follows: finetune and assign read it."""

    name = "sensitivity_before"
    inputs = ("partition", "calibrate")

"""Sensitivity: how much the metric drops when one layer alone takes one option.

For every mappable layer and every option the target offers (analog at the
budget's drift time, digital at each bit width), the model is simulated
with only that layer perturbed, on the calibration data (accuracy with
labels, else agreement with full precision), analog over Monte-Carlo
seeds (hetmap.sim.layerwise: activations before the layer computed once,
only the rest of the network run per option and draw, the options
stacked in one run; hetmap.sim.screen: samples no change seen can flip
are skipped, and an option sure to drop more than the largest budget
assign solves for stops early, its drop then a lower bound). Drops are in percentage points from these weights without noise,
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
from hetmap.sim.layerwise import sweep_for, sweep_parallel
from hetmap.sim.measure import Measurement, Measurer
from hetmap.sim.scorer import Scorer

# screened: the suffix engine skipping samples a variant cannot flip (hetmap.sim.screen); suffix: every sample;
# whole: every (layer, option) simulates the whole model, as before the suffix engine
ENGINES = ("screened", "suffix", "whole")


@dataclass
class OptionDrop:
    drop_points: float  # full precision minus perturbed metric, percentage points
    std_points: float  # spread over seeds (0 for digital options)
    at_least: bool = False  # measuring stopped once the drop was sure to exceed every budget assign solves for


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
    screened_share: float  # of the sample x variant runs, those the screen skipped (they cannot flip)


class Sensitivity(Pass):
    name = "sensitivity"
    inputs = ("partition", "calibrate", "finetune")

    def __init__(
        self, measurement: Measurement = Measurement(), engine: str = "screened", largest_budget: float | None = None
    ):
        """largest_budget: the largest budget (points) assign solves for; an option sure to drop more stops early."""
        self.measurement = measurement
        self.engine = engine
        self.largest_budget = largest_budget

    def run(self, model: ir.Model, context: PassContext) -> tuple[ir.Model, SensitivityReport]:
        target = context.target
        partition = context.reports["partition"]
        finetune = context.reports.get("finetune")
        dataset = scoring_dataset(model, context.config)
        reference = finetune.weights.reference_outputs if finetune else None
        scorer = Scorer(model, dataset, reference, context.config.metric)
        ranges = context.reports["calibrate"].input_range
        screened, over = 0.0, {}
        if self.engine == "whole":
            scores = _whole_model_scores(model, context, partition.layers, ranges, scorer, self.measurement)
        else:
            options, seeds, seed = target_options(target), self.measurement.seeds, context.config.seed
            t_s, screen = self.measurement.t_inference_s, self.engine == "screened"
            stop_above = self._stop_above(scorer)
            sweep = sweep_for(
                scorer, model, target, partition.layers, ranges, options, seeds, t_s, seed, screen, stop_above
            )
            names = [layer.name for layer in partition.layers]
            swept = sweep_parallel(model, sweep, names, context.config.workers)
            scores = {name: _scores(scorer, name, layer.outputs) for name, layer in swept.items()}
            over = {name: layer.over for name, layer in swept.items()}
            run, total = (sum(getattr(layer, key) for layer in swept.values()) for key in ("rows_run", "rows_total"))
            screened = 1 - run / max(total, 1)
        layers = {}
        for layer in partition.layers:
            drops = {}
            for option in target_options(target):
                values = 100 * (scorer.model_metric - np.array(scores[layer.name][option]))
                require_finite(values, f"sensitivity: the drop of layer '{layer.name}' as {option}")
                drops[option] = OptionDrop(
                    float(values.mean()), float(values.std()), option in over.get(layer.name, ())
                )
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
            screened_share=screened,
        )
        return model, report

    def _stop_above(self, scorer: Scorer) -> float | None:
        """The drop (a metric fraction) past which no option fits: the largest budget less what the weights lost."""
        if self.largest_budget is None:
            return None
        return max(self.largest_budget - 100 * (scorer.full_precision - scorer.model_metric), 0.0) / 100


def _scores(scorer: Scorer, layer: str, outputs: dict[str, list[np.ndarray]]) -> dict[str, list[float]]:
    """The metric of each option's outputs, per draw."""
    return {
        option: [scorer.score_outputs(array, f"layer '{layer}' as {option}") for array in per_draw]
        for option, per_draw in outputs.items()
    }


def _whole_model_scores(model, context, layers, ranges, scorer, measurement) -> dict[str, dict[str, list[float]]]:
    """Every (layer, option) simulated on the whole model: the path the suffix engine must agree with."""
    measurer = Measurer(model, context.target, layers, ranges, scorer, context.config.seed)
    scores = {}
    for layer in layers:
        scores[layer.name] = {}
        for option in target_options(context.target):
            seeds = measurement.seeds if option == ANALOG else 1
            what = f"layer '{layer.name}' as {option}"
            per_time = measurer.measure({layer.name: option}, [measurement.t_inference_s], seeds, what)
            scores[layer.name][option] = per_time[0]
    return scores


class SensitivityBeforeFinetune(Sensitivity):
    """The same measurement on the weights as brought, when fine-tuning follows: finetune and assign read it."""

    name = "sensitivity_before"
    inputs = ("partition", "calibrate")

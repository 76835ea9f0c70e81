"""Sensitivity: how much the metric drops when one layer alone takes one option.

For every mappable layer and every option the target offers (analog at the
budget's drift time, digital at each bit width), the model is simulated
with only that layer perturbed, on the calibration data (accuracy with
labels, else agreement with full precision), analog over Monte-Carlo
seeds (hetmap.sim.layerwise: activations before the layer computed once,
only the rest of the network run per option and draw, the options
stacked in one run; hetmap.sim.screen: samples no change seen can flip
are skipped, and an option sure to drop more than the largest budget
assign solves for stops early, its drop then a lower bound). On deep
networks (`auto`, or `first-order` asked for) most options are predicted
instead (hetmap.train.firstorder: the layer alone simulated, the rest of
the network to first order), the others simulated as above. Drops are in
percentage points from these weights without noise, so that each layer's drop is its own; the solver adds them up on top of
what fine-tuning cost the noiseless model (weights_full_precision). With
fine-tuning, `sensitivity_before` measures the weights as brought, before it,
and `sensitivity` the adapted ones, relative to the model the user brought.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np
import onnx_ir as ir

from hetmap.errors import require_finite
from hetmap.mapping.mapping import ANALOG, target_options
from hetmap.pipeline import Pass, PassContext, scoring_dataset, simulator_for
from hetmap.sim.cut import find_cut, has_subgraphs
from hetmap.sim.layerwise import LayerSweep, sweep_for, sweep_parallel, variant_names
from hetmap.sim.measure import Measurement, Measurer
from hetmap.sim.scorer import Scorer
from hetmap.sim.sessions import freeze_survivors
from hetmap.train.firstorder import Predicted, applies, predict_layers

# screened: the suffix engine skipping samples a variant cannot flip (hetmap.sim.screen); suffix: every sample;
# whole: every (layer, option) simulates the whole model, as before the suffix engine; first-order: drops
# predicted from each layer's simulated change and one backward pass (hetmap.train.firstorder), the options
# out of its linear regime screened; torch: every (layer, option) on the whole model through torch's ops on the
# config's device (hetmap.train.device_sim), what any method becomes where that device is a GPU
EXACT_ENGINES = ("screened", "suffix", "whole", "torch")
ENGINES = (*EXACT_ENGINES, "first-order")
METHODS = ("auto", "exact", "first-order")  # what users choose (--sensitivity): exact is the screened engine
FIRST_ORDER_FROM_LAYERS = 40  # auto predicts from here on: resnet20 (22 layers) 1.17x, resnet50 (54) 2.26x


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
    predicted: dict[str, list[str]] = field(default_factory=dict)  # per layer, options whose drops are first-order
    unscored: list[str] = field(default_factory=list)  # layers the scored first output does not depend on
    simulated_on: str = "onnxruntime (cpu)"  # or torch on its device (the torch engine)


class Sensitivity(Pass):
    name = "sensitivity"
    inputs = ("partition", "calibrate", "finetune")

    def __init__(
        self, measurement: Measurement = Measurement(), engine: str = "screened", largest_budget: float | None = None
    ):
        """engine: one of ENGINES, or `auto` (first-order from FIRST_ORDER_FROM_LAYERS layers on, else screened);
        where the config's device is a GPU, every engine is the torch engine;
        largest_budget: the largest budget (points) assign solves for; an option sure to drop more stops early.
        """
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
        screened, over, predicted, engine = 0.0, {}, {}, self.engine
        if engine == "auto":
            engine = "first-order" if len(partition.layers) >= FIRST_ORDER_FROM_LAYERS else "screened"
        simulator = simulator_for(model, context, asked=engine == "torch")
        simulated_on = f"torch ({simulator.device})" if simulator else SensitivityReport.simulated_on
        if simulator or engine == "whole":
            scores = _whole_model_scores(model, context, partition.layers, ranges, scorer, self.measurement, simulator)
        else:
            options, seeds, seed = target_options(target), self.measurement.seeds, context.config.seed
            t_s, screen = self.measurement.t_inference_s, engine in ("screened", "first-order")
            stop_above = self._stop_above(scorer)
            sweep = sweep_for(
                scorer, model, target, partition.layers, ranges, options, seeds, t_s, seed, screen, stop_above
            )
            names = [layer.name for layer in partition.layers]
            predicted = {}
            if engine == "first-order":
                predicted = _predicted(model, scorer, sweep, names)
            freeze_survivors(model)  # the scorer, the sweep (and torch's modules, for first-order) outlive them
            swept = _measured(model, sweep, names, predicted, context.config.workers)
            scores = {
                name: {
                    **(p.scores(scorer.score_outputs, name) if (p := predicted.get(name)) else {}),
                    **_scores(scorer, name, swept[name].outputs),
                }
                for name in names
            }
            over = {name: layer.over for name, layer in swept.items()}
            run = sum(layer.rows_run for layer in swept.values())
            total = scorer.dataset.size * len(names) * len(variant_names(options, seeds))
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
            predicted={name: sorted(p.changes) for name, p in predicted.items() if p.changes},
            unscored=_unscored(model, partition.layers),
            simulated_on=simulated_on,
        )
        return model, report

    def _stop_above(self, scorer: Scorer) -> float | None:
        """The drop (a metric fraction) past which no option fits: the largest budget less what the weights lost."""
        if self.largest_budget is None:
            return None
        return max(self.largest_budget - 100 * (scorer.full_precision - scorer.model_metric), 0.0) / 100


def _unscored(model: ir.Model, layers) -> list[str]:
    """Layers the first output does not depend on (not looked for through control flow, whose bodies read
    outer values the cut cannot follow)."""
    if has_subgraphs(model):
        return []
    return [layer.name for layer in layers if not find_cut(model, layer.name).reaches_output]


def _predicted(model: ir.Model, scorer: Scorer, sweep, names: list[str]) -> dict[str, Predicted]:
    """First-order predictions where they apply; none (every option measured) where torch cannot run the model."""
    from hetmap.train.interpreter import UnsupportedOpError  # torch loads only for this engine

    kind, own_reference = scorer.metric.kind, scorer.reference is scorer.outputs
    if not scorer.samples_first or not applies(scorer.outputs, kind, scorer.fixed_batch, own_reference):
        return {}
    try:
        return predict_layers(model, sweep, names, scorer.dataset.inputs, scorer.outputs, kind)
    except (UnsupportedOpError, RuntimeError):  # ops torch lacks, or shapes its ops refuse: measure every option
        return {}


def _measured(model: ir.Model, sweep, names: list[str], predicted: dict[str, Predicted], workers) -> dict:
    """The suffix engine's sweep of every option not predicted, layers grouped by the options they measure."""
    wanted = {name: predicted[name].exact if name in predicted else sweep.options for name in names}
    swept = {name: LayerSweep({}, 0, set()) for name in names}
    for options in dict.fromkeys(wanted.values()):
        group = [name for name in names if wanted[name] == options]
        if options:
            swept.update(sweep_parallel(model, dataclasses.replace(sweep, options=options), group, workers))
    return swept


def _scores(scorer: Scorer, layer: str, outputs: dict[str, list[np.ndarray]]) -> dict[str, list[float]]:
    """The metric of each option's outputs, per draw."""
    return {
        option: [scorer.score_outputs(array, f"layer '{layer}' as {option}") for array in per_draw]
        for option, per_draw in outputs.items()
    }


def _whole_model_scores(
    model, context, layers, ranges, scorer, measurement, simulator=None
) -> dict[str, dict[str, list[float]]]:
    """Every (layer, option) simulated on the whole model: the path the suffix engine must agree with (through
    torch with a `simulator`, hetmap.train.device_sim)."""
    measurer = Measurer(model, context.target, layers, ranges, scorer, context.config.seed, simulator=simulator)
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

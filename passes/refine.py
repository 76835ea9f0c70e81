"""Refine: the chosen mapping alone gets a short fine-tune of its own (DESIGN step 5), kept only if it measures better.

The supernetwork's shared weights serve every mapping the sampler drew;
the one assign chose is what ships, so it trains alone for a few epochs
(hetmap's adaptation with that mapping fixed, device noise at the
target's level from the first step, the rate finetune chose), then the
simulator measures it as assign did: at the budget's drift time over the
same seeds, drops against the model the user brought. The refined weights
ship only when their measured drop is not worse than the assigned
weights'; otherwise the model leaves unchanged. Runs only with --finetune,
and trains nothing when every layer is on the widest digital unit (no
device noise, no narrow quantiser to adapt to).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import onnx_ir as ir

from hetmap.errors import HetmapError
from hetmap.graph.shapes import graph_inputs
from hetmap.mapping.mapping import ANALOG, option_bits, target_options
from hetmap.pipeline import Pass, PassContext, WeightChange, handoff, scoring_dataset
from hetmap.sim.measure import Measurement, Measurer
from hetmap.sim.scorer import Scorer


@dataclass(frozen=True)
class RefineOptions:
    """How long the chosen mapping trains, and how (finetune's scope, batch, loss mix and device)."""

    epochs: int = 1
    measurement: Measurement = Measurement()
    scope: str = "all"
    batch_size: int = 64
    label_weight: float = 0.5
    device: str = "auto"
    learning_rate: float = 1e-4  # without a finetune report only; else the rate finetune chose


@dataclass
class RefineReport:
    epochs: int
    steps: int
    learning_rate: float
    analog_layers: int
    drop_before_points: float  # the assigned weights' measured drop at the drift time, mean over seeds
    drop_after_points: float | None  # the refined weights' (None: the run diverged)
    drift: str
    seeds: int
    shipped: str  # "refined" or "as assigned"
    seconds: float
    weights: WeightChange | None = handoff()


class Refine(Pass):
    name = "refine"
    inputs = ("partition", "calibrate", "finetune", "assign")
    changes_weights = True

    def __init__(self, options: RefineOptions):
        self.options = options

    def run(self, model: ir.Model, context: PassContext) -> tuple[ir.Model, RefineReport]:
        from hetmap.train.adaptation import AdaptConfig, MappingSampler, adapt, torch_device
        from hetmap.train.supernet import Supernet, trainable_initializers

        began, options, config = time.perf_counter(), self.options, context.config
        layers = context.reports["partition"].layers
        mapping = dict(context.reports["assign"].mapping.layers)
        finetune = context.reports.get("finetune")
        reference = finetune.weights.reference_outputs if finetune and finetune.weights else None
        scorer = Scorer(model, scoring_dataset(model, config), reference, config.metric)
        ranges = context.reports["calibrate"].input_range
        measurer = Measurer(model, context.target, layers, ranges, scorer, config.seed)
        before = self._drop(measurer, mapping)

        trainable = trainable_initializers(model, layers, options.scope)
        original = {name: model.graph.initializers[name].const_value for name in trainable}
        rate = finetune.learning_rate if finetune else options.learning_rate
        if _all_widest_digital(mapping, target_options(context.target)):  # no noise and no narrow unit to adapt to
            return model, RefineReport(
                options.epochs, 0, rate, 0, before, None, options.measurement.drift, options.measurement.seeds,
                "as assigned", time.perf_counter() - began, WeightChange(original, original, scorer.reference),
            )  # fmt: skip
        net = Supernet(model, layers, ranges, context.target, trainable, options.measurement.t_inference_s)
        sampler = MappingSampler(list(mapping), target_options(context.target), None, 0.0, fixed=mapping)
        adapt_config = AdaptConfig(
            epochs=options.epochs,
            batch_size=options.batch_size,
            learning_rate=rate,
            seed=config.seed + 1,
            device=torch_device(options.device),
            noise_ramp=0.0,
            label_weight=options.label_weight,
        )
        input_names = [value.name for value in graph_inputs(model)]
        try:
            steps = adapt(net, input_names, config.train, sampler, adapt_config, "refine", context.progress).steps
            for name, array in net.graph.parameter_arrays().items():
                model.graph.initializers[name].const_value = ir.tensor(array, name=name)
            after = self._drop(measurer, mapping)
        except HetmapError:  # diverged, or weights the simulator refuses: the assigned ones ship
            steps, after = 0, math.inf
        refined = {name: model.graph.initializers[name].const_value for name in trainable}
        shipped = "refined" if after <= before else "as assigned"
        if shipped != "refined":
            for name, tensor in original.items():
                model.graph.initializers[name].const_value = tensor
        report = RefineReport(
            epochs=options.epochs,
            steps=steps,
            learning_rate=rate,
            analog_layers=sum(option == ANALOG for option in mapping.values()),
            drop_before_points=before,
            drop_after_points=after if math.isfinite(after) else None,
            drift=options.measurement.drift,
            seeds=options.measurement.seeds,
            shipped=shipped,
            seconds=time.perf_counter() - began,
            weights=WeightChange(original, refined if shipped == "refined" else original, scorer.reference),
        )
        return model, report

    def _drop(self, measurer: Measurer, mapping: dict[str, str]) -> float:
        """The mapping's measured drop in points against the reference, mean over the seeds."""
        measurement = self.options.measurement
        per_time = measurer.measure(mapping, [measurement.t_inference_s], measurement.seeds, "the chosen mapping")
        drop = float(np.mean(100 * (measurer.scorer.full_precision - np.array(per_time[0]))))
        return drop if math.isfinite(drop) else math.inf


def _all_widest_digital(mapping: dict[str, str], options: list[str]) -> bool:
    """Every layer on the widest digital unit."""
    widest = max((o for o in options if o != ANALOG), key=option_bits, default=None)
    return widest is not None and all(option == widest for option in mapping.values())

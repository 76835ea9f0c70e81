"""Refine: the chosen mapping alone gets a short fine-tune of its own (DESIGN step 5), kept only if it verifies better.

The supernetwork's shared weights serve every mapping the sampler drew;
the one assign chose is what ships, so it trains alone for a few epochs
(hetmap's adaptation with that mapping fixed, device noise at the
target's level from the first step, at the rate for one mapping: a share
of each tensor's RMS, see hetmap.passes.finetune), then the last verification
measures it as assign verified it: on the held-out data, at the budget's
drift time over the same seeds, drops against the model the user
brought, with the same confidence interval. The refined weights ship
only when the top of their interval is not above the assigned weights';
otherwise the model leaves unchanged. Runs only with --finetune, and
trains nothing when every layer is on the widest digital unit (no device
noise, no narrow quantiser to adapt to).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import onnx_ir as ir

from hetmap.errors import HetmapError
from hetmap.graph.shapes import graph_inputs
from hetmap.mapping.mapping import ANALOG, option_bits, target_options
from hetmap.pipeline import Pass, PassContext, scoring_dataset, verification_dataset
from hetmap.sim.measure import Measurement
from hetmap.verification import Verifier, put_weights


@dataclass(frozen=True)
class RefineOptions:
    """How long the chosen mapping trains, and how (finetune's scope, batch, loss mix and device); assign's confidence."""

    epochs: int = 8
    measurement: Measurement = Measurement()
    scope: str = "all"
    batch_size: int = 64
    label_weight: float = 0.5
    device: str = "auto"
    learning_rate: float = 0.01  # per step, a share of each weight tensor's RMS
    confidence: float = 0.95


@dataclass
class RefineReport:
    epochs: int
    steps: int
    learning_rate: float
    analog_layers: int
    drop_before_points: float  # the assigned weights' verified drop at the drift time, mean over seeds and samples
    drop_after_points: float | None  # the refined weights' (None: the run diverged)
    high_before_points: float  # the top of the assigned weights' confidence interval
    high_after_points: float | None
    verified_on: str  # the data both were measured on
    held_out: bool  # whether it was held out of every decision
    drift: str
    seeds: int
    shipped: str  # "refined" or "as assigned"
    seconds: float


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
        trainable = trainable_initializers(model, layers, options.scope)
        assigned = {name: model.graph.initializers[name].const_value for name in trainable}
        finetune = context.reports.get("finetune")
        users = finetune.weights.before if finetune and finetune.weights else assigned
        data = verification_dataset(model, config) or (scoring_dataset(model, config), False)
        verified = context.reports["assign"].verification  # the same mapping, weights, data and seeds
        before = (
            (verified.drop_points, verified.high_points)
            if verified is not None
            else self._verified(model, context, data, users, mapping)
        )
        untrained = dict(
            epochs=options.epochs, learning_rate=options.learning_rate, drop_before_points=before[0],
            high_before_points=before[1], verified_on=data[0].source, held_out=data[1],
            drift=options.measurement.drift, seeds=options.measurement.seeds,
        )  # fmt: skip
        if _all_widest_digital(mapping, target_options(context.target)):  # no noise and no narrow unit to adapt to
            return model, RefineReport(
                steps=0, analog_layers=0, drop_after_points=None, high_after_points=None, shipped="as assigned",
                seconds=time.perf_counter() - began, **untrained,
            )  # fmt: skip
        ranges = context.reports["calibrate"].input_range
        net = Supernet(model, layers, ranges, context.target, trainable, options.measurement.t_inference_s)
        sampler = MappingSampler(list(mapping), target_options(context.target), None, 0.0, fixed=mapping)
        adapt_config = AdaptConfig(
            epochs=options.epochs,
            batch_size=options.batch_size,
            learning_rate=options.learning_rate,
            seed=config.seed + 1,
            device=torch_device(options.device),
            noise_ramp=0.0,
            label_weight=options.label_weight,
            relative_rate=True,
        )
        input_names = [value.name for value in graph_inputs(model)]
        try:
            steps = adapt(net, input_names, config.train, sampler, adapt_config, "refine", context.progress).steps
            refined = {name: ir.tensor(array, name=name) for name, array in net.graph.parameter_arrays().items()}
            put_weights(model, refined)
            after = self._verified(model, context, data, users, mapping)
        except HetmapError:  # diverged, or weights the simulator refuses: the assigned ones ship
            steps, after = 0, None
        shipped = "refined" if after is not None and after[1] <= before[1] else "as assigned"
        if shipped != "refined":
            put_weights(model, assigned)
        report = RefineReport(
            steps=steps,
            analog_layers=sum(option == ANALOG for option in mapping.values()),
            drop_after_points=after[0] if after else None,
            high_after_points=after[1] if after else None,
            shipped=shipped,
            seconds=time.perf_counter() - began,
            **untrained,
        )
        return model, report

    def _verified(self, model: ir.Model, context: PassContext, data, users: dict, mapping) -> tuple[float, float]:
        """(mean, top of the interval) of the mapping's drop on `data` with the model's weights, against the user's."""
        drop = Verifier(model, context, self.options.measurement, self.options.confidence, data, users)(mapping)
        if not all(math.isfinite(x) for x in (drop.mean_points, drop.high_points)):
            raise HetmapError("the chosen mapping's verified drop is not finite")
        return drop.mean_points, drop.high_points


def _all_widest_digital(mapping: dict[str, str], options: list[str]) -> bool:
    """Every layer on the widest digital unit."""
    widest = max((o for o in options if o != ANALOG), key=option_bits, default=None)
    return widest is not None and all(option == widest for option in mapping.values())

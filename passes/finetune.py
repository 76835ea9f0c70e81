"""Finetune: adapt the model's weights so that mixed analog/digital mappings keep its accuracy.

The canonical model becomes a supernetwork (hetmap.train.supernet) trained on
the user's training data over the mappings the solver is likely to choose
(hetmap.train.adaptation); the adapted weights replace the initializers. The
graph's structure does not change, its outputs do: that is the point, so
there is no parity check. Accuracy before and after (full precision,
all-analog at the budget's drift time, all-digital at the widest width) is
simulated on the scoring data. Budgets stay relative to the model the user
brought: its outputs become the reference every later score compares with.
The pass changes weights: its report hands the weights before and after,
and those outputs, on to sensitivity and assign (`weights`, not in the JSON).
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import onnx_ir as ir

from hetmap.errors import HetmapError
from hetmap.graph.shapes import graph_inputs
from hetmap.mapping.mapping import ANALOG, Mapping, option_bits, target_options, validate
from hetmap.pipeline import Pass, PassContext, WeightChange, handoff, scoring_dataset, simulator_for
from hetmap.sim.measure import Measurement, Measurer
from hetmap.sim.scorer import Scorer

if TYPE_CHECKING:
    from hetmap.train.adaptation import EpochRecord
    from hetmap.train.recipe import Sweep

CHECKPOINT_NAME = "finetune.ckpt"
SCOPES = ("all", "head", "norm")
DEVICES = ("auto", "cpu", "cuda")
# The supernetwork's default rate: the sweep chose it on both shapes32 ResNets, and at 1e-3 one epoch cost ResNet-8
# 7 points all-analog and 9 points INT8 on its test set (3 epochs: 1.4 and 2.4), so the sweep's extra runs are opt-in.
FIXED_LEARNING_RATE = 1e-4
# One mapping trained alone (refine; --mapping with --finetune) hardens at a higher rate, relative to each tensor's
# RMS: 4 epochs at 1 % took ResNet-8's 95.8 %-analog mapping from 83.78 to 84.72 % on its test set, all-analog
# ResNet-8 from 66.0 to 76.8 and ResNet-20 from 85.8 to 87.6, INT8 kept within a point. A fixed 1e-3 did as well on
# ResNet-8 and took ResNet-20's all-analog to 76.0: its layers' weights are up to 6x smaller.
MAPPING_LEARNING_RATE = 0.01
# ResNet-8, 95.8 % analog, test set: 4 epochs 84.72 and (in a second run) 83.90, under MPS's 83.96; 8 epochs 84.78 and
# 84.70 (at a fixed 1e-3: 85.04, 85.36)
REFINE_EPOCHS = 8


@dataclass(frozen=True)
class Adaptation:
    """Whether and how compile fine-tunes the weights for mixed mappings (0 epochs: not at all)."""

    epochs: int = 0
    scope: str = "all"
    learning_rate: float | None = FIXED_LEARNING_RATE  # Adam, cosine-annealed to 0; None: a short sweep picks it
    refine_epochs: int = REFINE_EPOCHS  # the chosen mapping alone, after assign (0: no refine)
    mapping_learning_rate: float = MAPPING_LEARNING_RATE  # one mapping alone (refine, a given mapping): x each RMS
    batch_size: int = 64
    noise_ramp: float = 0.5  # share of the steps over which the device noise rises from 0 to the target's
    label_weight: float = 0.5  # labels' share of the loss beside distillation from full precision
    device: str = "auto"  # auto: CUDA when torch sees one


@dataclass(frozen=True)
class FinetuneOptions:
    """Finetune's options: how to adapt, the budget its sampler aims at, and a given mapping to train alone."""

    adaptation: Adaptation
    measurement: Measurement = Measurement()
    max_drop: float = 0.5
    mapping: Mapping | None = None
    mapping_source: str = ""  # where the given mapping came from, for error messages


@dataclass
class MappingScore:
    mapping: str
    mean: float  # metric, percent
    std: float
    drift: str


@dataclass
class FinetuneReport:
    epochs: int
    scope: str
    learning_rate: float
    train_data: str
    train_samples: int
    trainable_parameters: int
    steps: int
    device: str
    seconds: float
    resumed_from_epoch: int
    learning_rate_sweep: Sweep | None
    paths: list[str]
    analog_trained_in_full_precision: dict[str, str]  # layer -> why its tiles could not train it
    history: list[EpochRecord]  # torch imports only when fine-tuning runs
    before: list[MappingScore] = field(default_factory=list)
    after: list[MappingScore] = field(default_factory=list)
    weights: WeightChange | None = handoff()


class Finetune(Pass):
    name = "finetune"
    inputs = ("partition", "calibrate", "sensitivity_before")
    changes_weights = True

    def __init__(self, options: FinetuneOptions):
        self.options = options

    def run(self, model: ir.Model, context: PassContext) -> tuple[ir.Model, FinetuneReport]:
        from hetmap.train.adaptation import AdaptConfig, MappingSampler, adapt, fingerprint, torch_device
        from hetmap.train.recipe import choose_learning_rate
        from hetmap.train.supernet import Supernet, trainable_initializers

        config, options = context.config, self.options
        train = config.train
        if train is None:
            raise HetmapError("--finetune needs training data: add --train train.npz (x, optional y)")
        began = time.perf_counter()
        layers = context.reports["partition"].layers
        names = [layer.name for layer in layers]
        fixed = (
            validate(options.mapping, names, context.target, options.mapping_source).layers if options.mapping else None
        )
        dataset = scoring_dataset(model, config)
        scorer = Scorer(model, dataset, metric=config.metric)
        if not np.issubdtype(scorer.outputs.dtype, np.floating):
            raise HetmapError(
                f"cannot fine-tune: the model's first output is {scorer.outputs.dtype} (an ArgMax, say), and training "
                "needs scores it can differentiate; export the scores as the first output"
            )
        if not scorer.samples_first:
            raise HetmapError(
                f"cannot fine-tune: the model's output has {len(scorer.outputs)} rows for {dataset.size} input "
                "samples, so its samples cannot be taken in batches"
            )
        before = self._scores(self._measurer(model, context, scorer), layers, context, fixed)

        adaptation = options.adaptation
        trainable = trainable_initializers(model, layers, adaptation.scope)
        input_range = context.reports["calibrate"].input_range
        net = Supernet(model, layers, input_range, context.target, trainable, options.measurement.t_inference_s)
        sensitivity = context.reports.get("sensitivity_before")
        drops = (
            {n: {o: d.drop_points for o, d in per.items()} for n, per in sensitivity.layers.items()}
            if sensitivity
            else None
        )
        sampler = MappingSampler(names, target_options(context.target), drops, options.max_drop, fixed)
        device = torch_device(adaptation.device)
        input_names = [value.name for value in graph_inputs(model)]
        run_id = fingerprint(
            *(model.graph.initializers[n].const_value.tobytes() for n in trainable),
            *(np.ascontiguousarray(train.inputs[n]).tobytes() for n in input_names),
            np.ascontiguousarray(train.labels).tobytes() if train.labels is not None else "no labels",
            repr(
                (
                    adaptation,
                    fixed,
                    options.max_drop,
                    options.measurement.drift,
                    config.seed,
                    context.target,  # its whole spec: an edited target file under the same name trains anew
                    drops,
                )
            ),
        )
        alone = fixed is not None  # one mapping alone hardens at its own rate, under full device noise from the start
        adapt_config = AdaptConfig(
            epochs=adaptation.epochs,
            batch_size=adaptation.batch_size,
            learning_rate=(adaptation.mapping_learning_rate if alone else adaptation.learning_rate) or 0.0,
            seed=config.seed,
            device=device,
            checkpoint=config.checkpoint_dir / CHECKPOINT_NAME if config.checkpoint_dir else None,
            noise_ramp=0.0 if alone else adaptation.noise_ramp,
            label_weight=adaptation.label_weight,
            relative_rate=alone,
        )
        sweep = None
        if adaptation.learning_rate is None and not alone:  # the sweep is the supernetwork's (--finetune-lr auto)
            sweep = choose_learning_rate(net, input_names, train, sampler, adapt_config)
            adapt_config = dataclasses.replace(adapt_config, learning_rate=sweep.chosen)
        result = adapt(net, input_names, train, sampler, adapt_config, run_id, context.progress)
        original = {name: model.graph.initializers[name].const_value for name in trainable}
        for name, array in net.graph.parameter_arrays().items():
            model.graph.initializers[name].const_value = ir.tensor(array, name=name)
        adapted = {name: model.graph.initializers[name].const_value for name in trainable}
        after_scorer = Scorer(model, dataset, scorer.reference, config.metric)
        after = self._scores(self._measurer(model, context, after_scorer), layers, context, fixed)
        report = FinetuneReport(
            epochs=adaptation.epochs,
            scope=adaptation.scope,
            learning_rate=adapt_config.learning_rate,
            train_data=train.source,
            train_samples=train.size,
            trainable_parameters=sum(model.graph.initializers[n].const_value.size for n in trainable),
            steps=result.steps,
            device=device,
            seconds=time.perf_counter() - began,
            resumed_from_epoch=result.resumed_from_epoch,
            learning_rate_sweep=sweep,
            paths=list(sampler.paths(np.random.default_rng(0))),
            analog_trained_in_full_precision=net.analog_unsupported,
            history=result.history,
            before=before,
            after=after,
            weights=WeightChange(before=original, after=adapted, reference_outputs=scorer.reference),
        )
        return model, report

    @staticmethod
    def _measurer(model: ir.Model, context: PassContext, scorer: Scorer) -> Measurer:
        ranges, layers = context.reports["calibrate"].input_range, context.reports["partition"].layers
        simulator = simulator_for(model, context)
        return Measurer(model, context.target, layers, ranges, scorer, context.config.seed, simulator=simulator)

    def _scores(
        self, measurer: Measurer, layers, context: PassContext, fixed: dict[str, str] | None
    ) -> list[MappingScore]:
        """Full precision, all-analog and all-digital (or the fixed mapping) simulated at the budget's drift."""
        options = target_options(context.target)
        digital = [o for o in options if o != ANALOG]
        mappings = {"full-precision": None}
        if fixed is not None:
            mappings["mapping"] = fixed
        else:
            mappings["all-analog"] = {layer.name: ANALOG for layer in layers}
            if digital:
                widest = max(digital, key=option_bits)
                mappings[f"all-{widest}"] = {layer.name: widest for layer in layers}
        measurement = self.options.measurement
        scores = []
        for label, mapping in mappings.items():
            if mapping is None:
                scores.append(MappingScore(label, 100 * measurer.scorer.model_metric, 0.0, ""))
                continue
            per_time = measurer.measure(mapping, [measurement.t_inference_s], measurement.seeds)
            values = 100 * np.array(per_time[0])
            scores.append(MappingScore(label, float(values.mean()), float(values.std()), measurement.drift))
        return scores

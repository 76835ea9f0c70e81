"""Finetune: adapt the model's weights so that mixed analog/digital mappings keep its accuracy.

The canonical model becomes a supernetwork (compiler/supernet.py) trained on
the user's training data over the mappings the solver is likely to choose
(compiler/adaptation.py); the adapted weights replace the initializers. The
graph's structure does not change, its outputs do: that is the point, so
there is no parity check. Accuracy before and after (full precision,
all-analog at the budget's drift time, all-digital at the widest width) is
simulated on the scoring data. Budgets stay relative to the model the user
brought: its outputs become the reference every later score compares with.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import onnx_ir as ir

from hetmap.errors import HetmapError
from hetmap.evaluate import Scorer, parse_drift
from hetmap.mapping import ANALOG, Mapping, option_bits, resolve_mapping, target_options, validate
from hetmap.passes.emit import annotated_as
from hetmap.pipeline import PassContext, scoring_dataset
from hetmap.shapes import graph_inputs

if TYPE_CHECKING:
    from hetmap.adaptation import EpochRecord

CHECKPOINT_NAME = "finetune.ckpt"
SCOPES = ("all", "head", "norm")


@dataclass(frozen=True)
class Adaptation:
    """Whether and how compile fine-tunes the weights for mixed mappings (0 epochs: not at all)."""

    epochs: int = 0
    scope: str = "all"
    learning_rate: float = 1e-4  # Adam, cosine-annealed to 0; 1e-3 unsettled the trained digits ResNet
    batch_size: int = 64


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
    paths: list[str]
    analog_trained_in_full_precision: dict[str, str]  # layer -> why its tiles could not train it
    history: list[EpochRecord]  # torch and aihwkit import only when fine-tuning runs
    before: list[MappingScore] = field(default_factory=list)
    after: list[MappingScore] = field(default_factory=list)


class Finetune:
    name = "finetune"
    rewrites_graph = False

    def __init__(self, adaptation: Adaptation, mapping: str | None = None, max_drop: float = 0.5,
                 drift: str = "1d", seeds: int = 3, sensitivity: str = "sensitivity_before"):  # fmt: skip
        self.adaptation = adaptation
        self.mapping = mapping
        self.max_drop = max_drop
        self.drift = drift
        self.seeds = seeds
        self.sensitivity = sensitivity

    def run(self, model: ir.Model, context: PassContext) -> tuple[ir.Model, FinetuneReport]:
        import torch

        from hetmap.adaptation import AdaptConfig, MappingSampler, adapt, fingerprint
        from hetmap.supernet import Supernet, trainable_initializers

        config = context.config
        train = config.train
        if train is None:
            raise HetmapError("--finetune needs training data: add --train train.npz (x, optional y)")
        began = time.perf_counter()
        layers = context.reports["partition"].layers
        names = [layer.name for layer in layers]
        fixed = validate(resolve_mapping(self.mapping, names), names, context.target, self.mapping).layers if self.mapping else None
        dataset = scoring_dataset(model, config)
        scorer = Scorer(model, dataset, context.reference_outputs, context.config.metric)
        context.reference_outputs = scorer.reference
        before = self._scores(model, context, scorer, fixed)

        t_inference_s = parse_drift(self.drift)
        adaptation = self.adaptation
        trainable = trainable_initializers(model, layers, adaptation.scope)
        net = Supernet(model, layers, context.reports["calibrate"].input_range, context.target, trainable, t_inference_s)
        sensitivity = context.reports.get(self.sensitivity)
        drops = {n: {o: d.drop_points for o, d in per.items()} for n, per in sensitivity.layers.items()} if sensitivity else None
        sampler = MappingSampler(names, target_options(context.target), drops, self.max_drop, fixed)
        device = "cuda" if torch.cuda.is_available() else "cpu"
        input_names = [value.name for value in graph_inputs(model)]
        run_id = fingerprint(
            *(model.graph.initializers[n].const_value.tobytes() for n in trainable),
            *(np.ascontiguousarray(train.inputs[n]).tobytes() for n in input_names),
            repr((adaptation, fixed, self.max_drop, self.drift, config.seed, context.target.name, drops)),
        )
        adapt_config = AdaptConfig(
            epochs=adaptation.epochs,
            batch_size=adaptation.batch_size,
            learning_rate=adaptation.learning_rate,
            seed=config.seed,
            device=device,
            checkpoint=config.checkpoint_dir / CHECKPOINT_NAME if config.checkpoint_dir else None,
        )
        result = adapt(net, input_names, train, sampler, adapt_config, run_id, context.progress)
        context.weights_before_finetune = {name: model.graph.initializers[name].const_value for name in trainable}
        for name, array in net.graph.parameter_arrays().items():
            model.graph.initializers[name].const_value = ir.tensor(array, name=name)
        after = self._scores(model, context, Scorer(model, dataset, context.reference_outputs, context.config.metric), fixed)
        report = FinetuneReport(
            epochs=adaptation.epochs,
            scope=adaptation.scope,
            learning_rate=adaptation.learning_rate,
            train_data=train.source,
            train_samples=train.size,
            trainable_parameters=sum(model.graph.initializers[n].const_value.size for n in trainable),
            steps=result.steps,
            device=device,
            seconds=time.perf_counter() - began,
            resumed_from_epoch=result.resumed_from_epoch,
            paths=list(sampler.paths(np.random.default_rng(0))),
            analog_trained_in_full_precision=net.analog_unsupported,
            history=result.history,
            before=before,
            after=after,
        )
        return model, report

    def _scores(self, model: ir.Model, context: PassContext, scorer: Scorer, fixed: dict[str, str] | None) -> list[MappingScore]:
        """Full precision, all-analog and all-digital (or the fixed mapping) simulated at the budget's drift."""
        layers = context.reports["partition"].layers
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
        scores = []
        for label, mapping in mappings.items():
            if mapping is None:
                scores.append(MappingScore(label, 100 * scorer.model_metric, 0.0, ""))
                continue
            values = 100 * np.array(measure_mapping(model, context, scorer, Mapping(mapping), self.drift, self.seeds))
            scores.append(MappingScore(label, float(values.mean()), float(values.std()), self.drift))
        return scores


def measure_mapping(model: ir.Model, context: PassContext, scorer: Scorer, mapping: Mapping, drift: str, seeds: int) -> list[float]:
    """The metric of `mapping` at `drift`, one value per Monte-Carlo seed."""
    with annotated_as(model, mapping.layers, context):
        _, per_time = scorer.simulate(model, context.target, [parse_drift(drift)], seeds, context.config.seed)
    return per_time[0]

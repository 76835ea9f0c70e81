"""`hetmap run`: score an annotated model on the simulated hardware over drift times and seeds."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import onnx_ir as ir

from hetmap.graph.data import Dataset
from hetmap.mapping.annotations import read_mapping, read_target
from hetmap.sim.drift import parse_drift
from hetmap.sim.jobs import Workers
from hetmap.sim.scorer import Scorer


@dataclass
class DriftResult:
    drift: str
    t_inference_s: float
    mean: float
    std: float
    per_seed: list[float]


@dataclass
class RunReport:
    model: str
    data: str
    metric: str  # Metric.name: accuracy, agreement (top-1 with full precision), cosine, snr
    samples: int
    seeds: int
    full_precision: float
    nominal: float  # converters and quantisers on, no device noise
    drifts: list[DriftResult]
    simulated_on: str = "onnxruntime (cpu)"  # or torch on its device (hetmap.train.device_sim)


def evaluate(
    model: ir.Model,
    source: str,
    dataset: Dataset,
    drifts: list[str],
    seeds: int,
    seed: int = 0,
    on_step: Callable[[], None] = lambda: None,
    metric: str = "auto",
    workers: Workers = Workers(),
    simulator=None,
) -> RunReport:
    """Score `model` (annotated) on `dataset` at each drift time over `seeds` Monte-Carlo draws (shared by `workers`).

    With a `simulator` of the model (hetmap.train.device_sim.annotated_simulator), the draws run through torch on
    its device.
    """
    target = read_target(model, source)
    times = [parse_drift(text) for text in drifts]
    scorer = Scorer(model, dataset, metric=metric)
    if simulator is not None:
        nominal, per_time = _on_device(simulator, model, scorer, times, seeds, seed, on_step)
    else:
        nominal, per_time = scorer.simulate(
            model, target, times, seeds, seed, on_step, with_nominal=True, workers=workers
        )
    return RunReport(
        model=source,
        data=dataset.source,
        metric=scorer.metric.name,
        samples=dataset.size,
        seeds=seeds,
        full_precision=scorer.full_precision,
        nominal=nominal,
        drifts=[
            DriftResult(text, t, float(np.mean(values)), float(np.std(values)), values)
            for text, t, values in zip(drifts, times, per_time)
        ],
        simulated_on=f"torch ({simulator.device})" if simulator else RunReport.simulated_on,
    )


def _on_device(simulator, model: ir.Model, scorer: Scorer, times, seeds: int, seed: int, on_step):
    """scorer.simulate's (converters-only metric, metric per drift time per seed), through torch a draw at a time."""
    what, dataset, batch = "the mapped model", scorer.dataset, scorer.batch
    mapping = read_mapping(model)
    nominal = scorer.score_outputs(simulator.converters_only(mapping, dataset, batch), what)
    per_time = [[] for _ in times]
    for draw in range(seeds):
        drawn = simulator.runs(mapping, dataset, batch, times, range(draw, draw + 1), seed)
        for scores, (outputs,) in zip(per_time, drawn):
            scores.append(scorer.score_outputs(outputs, what))
            on_step()
    return nominal, per_time

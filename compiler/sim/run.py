"""`hetmap run`: score an annotated model on the simulated hardware over drift times and seeds."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import onnx_ir as ir

from hetmap.graph.data import Dataset
from hetmap.mapping.annotations import read_target
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
) -> RunReport:
    """Score `model` (annotated) on `dataset` at each drift time over `seeds` Monte-Carlo draws (shared by `workers`)."""
    target = read_target(model, source)
    times = [parse_drift(text) for text in drifts]
    scorer = Scorer(model, dataset, metric=metric)
    nominal, per_time = scorer.simulate(model, target, times, seeds, seed, on_step, with_nominal=True, workers=workers)
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
    )

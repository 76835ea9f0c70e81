"""`hetmap run`: score the annotated model on the simulated hardware over drift times and seeds.

Each seed programs every tile once (programming noise, drift exponents);
the same chip is then read at each drift time. The metric (hetmap.metrics)
is accuracy when the data has labels, else agreement with the
full-precision model: top-1 for class scores, per position for sequences,
cosine similarity otherwise, unless the user names one.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort

from hetmap.data import Dataset
from hetmap.errors import HetmapError, NonFiniteError, require_finite
from hetmap.metrics import Metric, choose_metric
from hetmap.shapes import fixed_batch
from hetmap.simulate import Simulation, build_simulation, draw_generators
from hetmap.targets import Target
from hetmap.targets.schema import target_from_table

DRIFT_UNITS_S = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0, "y": 365.25 * 86400.0}
CHUNK = 256


def parse_drift(text: str) -> float:
    """'1h' -> 3600.0 seconds after programming."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdwy])\s*", text)
    if not match:
        raise HetmapError(f"unknown drift time '{text}': use a number and a unit s, m, h, d, w or y (e.g. 1h,1d,1y)")
    return float(match.group(1)) * DRIFT_UNITS_S[match.group(2)]


def annotated_target(model: ir.Model, source: str) -> Target:
    """The target the model was compiled for, stored in its metadata by `emit`."""
    spec = model.metadata_props.get("hetmap.target_spec")
    if spec is None:
        raise HetmapError(f"'{source}' carries no hetmap annotations; compile it first (hetmap compile)")
    return target_from_table(json.loads(spec), source)


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


def _session(model: ir.Model, fed: set[str]) -> ort.InferenceSession:
    """A session whose initializers named in `fed` become inputs, so draws need no rebuild."""
    proto = ir.to_proto(model)
    kept = [t for t in proto.graph.initializer if t.name not in fed]
    moved = [t for t in proto.graph.initializer if t.name in fed]
    del proto.graph.initializer[:]
    proto.graph.initializer.extend(kept)
    proto.graph.input.extend(onnx.helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)) for t in moved)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])


def _predict(session: ort.InferenceSession, inputs: dict[str, np.ndarray], extra: dict[str, np.ndarray], batch: int) -> np.ndarray:
    """Outputs over every sample, `batch` at a time; a 0-d input (a scalar) goes whole into each run."""
    size = max((len(array) for array in inputs.values() if array.ndim), default=1)
    parts = []
    for start in range(0, size, batch):
        feeds = {name: array[start : start + batch] if array.ndim else array for name, array in inputs.items()}
        parts.append(session.run([session.get_outputs()[0].name], {**feeds, **extra})[0])
    return np.concatenate(parts)


def _batch_size(model: ir.Model, dataset: Dataset) -> int:
    """Samples per run: the model's fixed batch size, which must divide the data, else CHUNK."""
    batch = fixed_batch(model)
    if batch is None:
        return CHUNK
    if dataset.size % batch:
        raise HetmapError(
            f"data file '{dataset.source}' has {dataset.size} samples but the model takes exactly {batch} "
            f"per run (a fixed batch size); give a multiple of {batch} samples"
        )
    return batch


class Scorer:
    """Scores simulated variants of one model on one dataset against its full-precision outputs.

    Each seed programs the chip once and reads it at every drift time; a
    variant without analog layers is deterministic and is run once.
    """

    def __init__(self, model: ir.Model, dataset: Dataset, reference: np.ndarray | None = None, metric: str = "auto"):
        """reference: the outputs scores compare with (default: the model's own, in full precision).

        metric: a name of hetmap.metrics.METRICS; `auto` chooses from the output's shape and the labels.
        """
        self.dataset = dataset
        self.batch = _batch_size(model, dataset)
        own = _predict(_session(model, set()), dataset.inputs, {}, self.batch)
        require_finite(own, f"the model's full-precision output on data file '{dataset.source}'")
        self.reference = own if reference is None else reference
        self.metric: Metric = choose_metric(metric, self.reference, dataset.labels, dataset.source)
        self.full_precision = self.metric.score(self.reference, dataset.labels, self.reference)
        self.model_metric = self.metric.score(own, dataset.labels, self.reference)  # this model's weights, no noise

    def _score(self, session, weights, what: str) -> float:
        outputs = _predict(session, self.dataset.inputs, weights, self.batch)
        if not np.isfinite(outputs).all():
            raise NonFiniteError(f"the simulation of {what} computed a non-finite output on data file '{self.dataset.source}'")
        return self.metric.score(outputs, self.dataset.labels, self.reference)

    def simulate(
        self,
        annotated: ir.Model,
        target: Target,
        times: list[float],
        seeds: int,
        seed: int = 0,
        on_step: Callable[[], None] = lambda: None,
        with_nominal: bool = False,
        what: str = "the mapped model",
    ) -> tuple[float | None, list[list[float]]]:
        """(converters-only metric when asked, else None; metric per drift time per seed) of an annotated model.

        The converters-only run costs one more pass over the data, so only `hetmap run` asks for it.
        `what` names the variant in the error a non-finite output raises.
        """
        simulation: Simulation = build_simulation(annotated, target)
        session = _session(simulation.model, simulation.drawn_names())
        if not simulation.blocks:
            nominal = self._score(session, simulation.nominal(), what)
            for _ in range(seeds * len(times)):
                on_step()
            return nominal, [[nominal] * seeds for _ in times]
        nominal = self._score(session, simulation.nominal(), what) if with_nominal else None
        per_time = [[] for _ in times]
        for draw in range(seeds):
            program_rng, read_rngs = draw_generators(seed, draw, len(times))
            programmed = simulation.program(program_rng)
            for index, t in enumerate(times):
                weights = simulation.read(programmed, t, read_rngs[index])
                per_time[index].append(self._score(session, weights, what))
                on_step()
        return nominal, per_time


def evaluate(
    model: ir.Model,
    source: str,
    dataset: Dataset,
    drifts: list[str],
    seeds: int,
    seed: int = 0,
    on_step: Callable[[], None] = lambda: None,
    metric: str = "auto",
) -> RunReport:
    """Score `model` (annotated) on `dataset` at each drift time over `seeds` Monte-Carlo draws."""
    target = annotated_target(model, source)
    times = [parse_drift(text) for text in drifts]
    scorer = Scorer(model, dataset, metric=metric)
    nominal, per_time = scorer.simulate(model, target, times, seeds, seed, on_step, with_nominal=True)
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

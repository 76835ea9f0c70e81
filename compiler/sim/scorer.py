"""The scorer: a model's metric on one data set, in full precision and simulated over draws.

Each seed programs every tile once (programming noise, drift exponents);
the same chip is then read at each drift time. The metric (hetmap.sim.metrics)
is accuracy when the data has labels, else agreement with the
full-precision model: top-1 for class scores, per position for sequences,
cosine similarity otherwise, unless the user names one.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx_ir as ir
import onnxruntime as ort

from hetmap.errors import HetmapError, NonFiniteError, require_finite
from hetmap.graph.data import Dataset
from hetmap.graph.shapes import fixed_batch
from hetmap.sim.jobs import Workers, map_parts, split
from hetmap.sim.metrics import Metric, choose_metric
from hetmap.sim.sessions import session_for
from hetmap.sim.simulation import Simulation, build_simulation, draw_generators
from hetmap.targets import Target

CHUNK = 256
PROGRAMMED_BYTES_PER_WEIGHT = 12  # a programmed tile: conductance, drift exponent, read-noise amplitude
PROGRAMMED_LIMIT_BYTES = 512 << 20  # above: the chip is programmed again for each drift time, block by block
# From this many samples each draw is baked into a session of its own: constant weights let onnxruntime
# use its fast (NCHWc) convolutions, which pays for building the session (bench.sim_speed measures both).
BAKED_FROM_SAMPLES = 256


def _predict(
    session: ort.InferenceSession, inputs: dict[str, np.ndarray], extra: dict[str, np.ndarray], batch: int
) -> np.ndarray:
    """Outputs over every sample, `batch` at a time; a 0-d input (a scalar) goes whole into each run."""
    size = max((len(array) for array in inputs.values() if array.ndim), default=1)
    parts = []
    for start in range(0, size, batch):
        feeds = {name: array[start : start + batch] if array.ndim else array for name, array in inputs.items()}
        parts.append(
            session.run([session.get_outputs()[0].name], {**feeds, **getattr(session, "hetmap_feeds", {}), **extra})[0]
        )
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

        metric: a name of hetmap.sim.metrics.METRICS; `auto` chooses from the output's shape and the labels.
        """
        self.dataset = dataset
        self.fixed_batch = fixed_batch(model)
        self.batch = _batch_size(model, dataset)
        own = _predict(session_for(model, set(), feed_matrices=True), dataset.inputs, {}, self.batch)
        require_finite(own, f"the model's full-precision output on data file '{dataset.source}'")
        self.reference = own if reference is None else reference
        self.metric: Metric = choose_metric(metric, self.reference, dataset.labels, dataset.source)
        self.full_precision_per_sample = self.metric.per_sample(self.reference, dataset.labels, self.reference)
        self.full_precision = float(self.full_precision_per_sample.mean())
        self.model_metric = self.metric.score(own, dataset.labels, self.reference)  # this model's weights, no noise

    def _score(self, session, weights, what: str, per_sample: bool) -> float | np.ndarray:
        return self.score_outputs(_predict(session, self.dataset.inputs, weights, self.batch), what, per_sample)

    def score_outputs(self, outputs: np.ndarray, what: str, per_sample: bool = False) -> float | np.ndarray:
        """The metric of a variant's outputs (the samples' scores with `per_sample`); a non-finite output names it."""
        if not np.isfinite(outputs).all():
            raise NonFiniteError(
                f"the simulation of {what} computed a non-finite output on data file '{self.dataset.source}'"
            )
        scores = self.metric.per_sample(outputs, self.dataset.labels, self.reference)
        return scores if per_sample else float(scores.mean())

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
        per_sample: bool = False,
        workers: Workers = Workers(),
    ) -> tuple[float | None, list[list[float]]]:
        """(converters-only metric when asked, else None; metric per drift time per seed) of an annotated model.

        The converters-only run costs one more pass over the data, so only `hetmap run` asks for it.
        `what` names the variant in the error a non-finite output raises; with `per_sample`, each
        metric is the array of the samples' scores (a confidence interval needs them); `workers`
        share out the draws.
        """
        baked = self.dataset.size >= BAKED_FROM_SAMPLES
        simulation: Simulation = build_simulation(annotated, target, shifted_adc=baked)
        if not simulation.blocks:
            nominal = self._score(session_for(simulation.model, set(), feed_matrices=True), {}, what, per_sample)
            for _ in range(seeds * len(times)):
                on_step()
            return nominal, [[nominal] * seeds for _ in times]
        session = None if baked else session_for(simulation.model, simulation.drawn_names(), feed_matrices=True)
        shared = (target, times, seed, self.dataset.inputs, self.batch, baked)
        if with_nominal:
            outputs = _run_draw(simulation, session, simulation.nominal(), shared)
            nominal = self.score_outputs(outputs, what, per_sample)
        else:
            nominal = None
        done = {}
        if workers.parallel and seeds > 1:
            parts = split(list(range(seeds)), workers.count)
            for part, outputs in zip(parts, map_parts(_draws_outputs, annotated, shared, parts, workers)):
                done.update(zip(part, outputs))
        per_time = [[] for _ in times]
        for draw in range(seeds):
            outputs = done[draw] if done else _draw_outputs(simulation, session, shared, draw)
            for index, output in enumerate(outputs):
                per_time[index].append(self.score_outputs(output, what, per_sample))
                on_step()
        return nominal, per_time


def _run_draw(simulation: Simulation, session: ort.InferenceSession | None, values, shared) -> np.ndarray:
    """Outputs with the drawn initializers `values`: fed to `session`, or with none, baked into a session of their own."""
    inputs, batch = shared[3], shared[4]
    if session is not None:
        return _predict(session, inputs, values, batch)
    before = simulation.bake(values)
    try:
        return _predict(session_for(simulation.model, set(), feed_matrices=True), inputs, {}, batch)
    finally:
        simulation.unbake(before)


def _draw_outputs(simulation: Simulation, session: ort.InferenceSession | None, shared, draw: int) -> list[np.ndarray]:
    """One chip (Monte-Carlo draw `draw`) programmed once and read at every drift time: outputs per time."""
    target, times, seed = shared[:3]
    program_rng, read_rngs = draw_generators(seed, draw, len(times))
    analog_weights = sum(block.matrix.size for block in simulation.blocks)
    if len(times) == 1 or PROGRAMMED_BYTES_PER_WEIGHT * analog_weights > PROGRAMMED_LIMIT_BYTES:
        # Program again for each time, block by block: the same chip (same generator state), less memory.
        fresh = [draw_generators(seed, draw, len(times))[0] for _ in times]
        return [
            _run_draw(simulation, session, simulation.draw(p, t, r), shared) for p, t, r in zip(fresh, times, read_rngs)
        ]
    programmed = simulation.program(program_rng)
    return [
        _run_draw(simulation, session, simulation.read(programmed, t, rng), shared) for t, rng in zip(times, read_rngs)
    ]


def _draws_outputs(annotated: ir.Model, shared, draws: list[int]) -> list[list[np.ndarray]]:
    """_draw_outputs for several draws in a worker, which builds its own simulation graph."""
    baked = shared[5]
    simulation = build_simulation(annotated, shared[0], shifted_adc=baked)
    session = None if baked else session_for(simulation.model, simulation.drawn_names(), feed_matrices=True)
    return [_draw_outputs(simulation, session, shared, draw) for draw in draws]

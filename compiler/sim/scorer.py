"""The scorer: a model's metric on one data set, in full precision and simulated over draws.

Each seed programs every tile once (programming noise, drift exponents);
the same chip is then read at each drift time. The metric (hetmap.sim.metrics)
is accuracy when the data has labels, else agreement with the
full-precision model: top-1 for class scores, per position for sequences,
cosine similarity otherwise, unless the user names one.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import onnx_ir as ir
import onnxruntime as ort
from onnxruntime.capi import onnxruntime_pybind11_state as ort_state

from hetmap.errors import HetmapError, NonFiniteError, require_finite
from hetmap.graph.data import Dataset
from hetmap.graph.shapes import fixed_batch
from hetmap.sim.draws import Simulation, draw_generators
from hetmap.sim.jobs import Workers, map_parts, split
from hetmap.sim.metrics import Metric, choose_metric
from hetmap.sim.prefix import Chunks, Computed, has_analog, shares_prefix, split_at_analog
from hetmap.sim.screen import Screen, Track, screen_for
from hetmap.sim.sessions import session_for
from hetmap.sim.simulation import build_simulation
from hetmap.targets import Target

ORT_RUN_ERRORS = (ort_state.Fail, ort_state.InvalidArgument, ort_state.RuntimeException)  # onnxruntime's own types

CHUNK = 256
PROGRAMMED_BYTES_PER_WEIGHT = 12  # a programmed tile: conductance, drift exponent, read-noise amplitude
PROGRAMMED_LIMIT_BYTES = 512 << 20  # above: the chip is programmed again for each drift time, block by block
# From this many samples each draw is baked into a session of its own: constant weights let onnxruntime
# use its fast (NCHWc) convolutions, which pays for building the session (bench.sim_speed measures both).
BAKED_FROM_SAMPLES = 256


def _predict(
    session: ort.InferenceSession,
    feeds: Chunks | Computed,
    extra: dict[str, np.ndarray],
    batch: int,
    screen: Screen | None = None,
) -> np.ndarray:
    """Outputs over every sample, `batch` at a time.

    With a `screen`, `feeds` are in its order and the run stops once no sample left can flip.
    """
    parts, track = [], None if screen is None else Track(screen)
    output = session.get_outputs()[0].name
    for start in range(0, feeds.size, batch):
        run_feeds = {**feeds.get(start, start + batch), **getattr(session, "hetmap_feeds", {}), **extra}
        parts.append(session.run([output], run_feeds)[0])
        if parts[-1].ndim == 0:  # one number for the whole batch: nothing to score per sample
            raise HetmapError(
                f"the model's first output '{output}' has shape [] for {min(batch, feeds.size - start)} samples: "
                "hetmap scores each sample's output, so it needs the samples on its first axis"
            )
        if track is not None:
            track.add(parts[-1])
            if track.settled:
                break
    outputs = np.concatenate(parts)
    return outputs if screen is None else screen.complete(outputs)


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
        try:
            own = _predict(session_for(model, set(), feed_matrices=True), Chunks(dataset.inputs), {}, self.batch)
        except ORT_RUN_ERRORS as error:  # the data is what is new to the model here: a token id past the vocabulary
            reason = " ".join(str(error).split())  # its lines name the index and the size expected
            raise HetmapError(f"onnxruntime cannot run the model on data file '{dataset.source}': {reason}") from None
        require_finite(own, f"the model's full-precision output on data file '{dataset.source}'")
        self.outputs = own  # these weights without noise
        self.reference = own if reference is None else reference
        self.metric: Metric = choose_metric(metric, self.reference, dataset.labels, dataset.source)
        self.full_precision_per_sample = self.metric.per_sample(self.reference, dataset.labels, self.reference)
        self.full_precision = float(self.full_precision_per_sample.mean())
        self.model_metric = self.metric.score(own, dataset.labels, self.reference)  # this model's weights, no noise

    @property
    def samples_first(self) -> bool:
        """Whether the output's first axis is the samples' (not so for W @ X with X's rows as features)."""
        return len(self.outputs) == self.dataset.size

    @cached_property
    def screened_feed(self) -> tuple[dict[str, np.ndarray], int, Screen | None]:
        """(inputs, samples per run, screen) for runs that skip the samples no change seen so far can flip."""
        screen = screen_for(self.metric, self.outputs, self.dataset.labels, self.reference)
        if screen is None or not self.samples_first:
            return self.dataset.inputs, self.batch, None
        rows = self.batch if self.fixed_batch else min(self.batch, screen.rows)
        return self.dataset.subset(screen.order).inputs, rows, screen

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
        screened: bool = False,
    ) -> tuple[float | None, list[list[float]]]:
        """(converters-only metric when asked, else None; metric per drift time per seed) of an annotated model.

        The converters-only run costs one more pass over the data, so only `hetmap run` asks for it.
        `what` names the variant in the error a non-finite output raises; with `per_sample`, each
        metric is the array of the samples' scores (a confidence interval needs them); `workers`
        share out the draws when they split evenly; `screened` skips samples that cannot flip (hetmap.sim.screen).
        Each process computes what no draw changes once for the runs it does (hetmap.sim.prefix).
        """
        baked = self.dataset.size >= BAKED_FROM_SAMPLES
        inputs, batch, screen = self.screened_feed if screened else (self.dataset.inputs, self.batch, None)
        shared = _Runs(target, times, seed, Chunks(inputs), batch, screen, baked)
        if not has_analog(annotated):
            simulation: Simulation = build_simulation(annotated, target)
            session = session_for(simulation.model, set(), feed_matrices=True)
            nominal = self.score_outputs(_predict(session, shared.feeds, {}, batch, screen), what, per_sample)
            for _ in range(seeds * len(times)):
                on_step()
            return nominal, [[nominal] * seeds for _ in times]
        done = {}
        if _draws_to_workers(workers, seeds, annotated):
            parts = split(list(range(seeds)), workers.count)
            for part, outputs in zip(parts, map_parts(_draws_outputs, annotated, shared, parts, workers)):
                done.update(zip(part, outputs))
        # Only for runs in this process, and after the model was serialised for the workers: no peak of both.
        simulation, session = None, None
        if with_nominal or not done:
            runs = (0 if done else seeds * len(times)) + with_nominal
            annotated, shared, own = _shared_prefix(annotated, shared, runs)
            simulation = build_simulation(annotated, target, copy=not own, shifted_adc=baked)
            if not baked:
                session = session_for(simulation.model, simulation.drawn_names(), feed_matrices=True)
        nominal = None
        if with_nominal:
            nominal = self.score_outputs(_run_draw(simulation, session, simulation.nominal(), shared), what, per_sample)
        per_time = [[] for _ in times]
        for draw in range(seeds):
            outputs = done[draw] if done else _draw_outputs(simulation, session, shared, draw)
            for index, output in enumerate(outputs):
                per_time[index].append(self.score_outputs(output, what, per_sample))
                on_step()
        return nominal, per_time


@dataclass(frozen=True)
class _Runs:
    """What every draw's runs share (picklable, for workers)."""

    target: Target
    times: list[float]
    seed: int
    feeds: Chunks | Computed  # the data's, in the screen's order when there is one; Computed where it runs
    batch: int
    screen: Screen | None
    baked: bool  # each draw baked into a session of its own rather than fed


def _draws_to_workers(workers: Workers, draws: int, annotated: ir.Model) -> bool:
    """Whether the draws go to workers: they share out evenly, and on local ones only where the mapping shares no
    prefix. One process computing it once beat two computing it each: ResNet-50 with 2 analog layers among its
    last 5, 4 draws on 128 samples, 19.1 s in this process against 38.8 s on 2 workers."""
    if not workers.parallel or draws < 2 or not workers.even(draws):
        return False
    return workers.ray_address is not None or not shares_prefix(annotated)


def _shared_prefix(annotated: ir.Model, shared: _Runs, runs: int) -> tuple[ir.Model, _Runs, bool]:
    """(the model `runs` runs go through, their feeds, whether that model is built here for them alone): the
    analog layers' forward cone fed what the rest computes once (hetmap.sim.prefix), where that is worth it."""
    cut = split_at_analog(annotated, shared.target, shared.feeds, shared.batch) if runs > 1 else None
    if cut is None:
        return annotated, shared, False
    return cut.model, dataclasses.replace(shared, feeds=cut.feeds), True


def _run_draw(simulation: Simulation, session: ort.InferenceSession | None, values, shared) -> np.ndarray:
    """Outputs with the drawn initializers `values`: fed to `session`, or with none, baked into a session of their own."""
    feeds, batch, screen = shared.feeds, shared.batch, shared.screen
    if session is not None:
        return _predict(session, feeds, values, batch, screen)
    before = simulation.bake(values)
    try:
        return _predict(session_for(simulation.model, set(), feed_matrices=True), feeds, {}, batch, screen)
    finally:
        simulation.unbake(before)


def _draw_outputs(simulation: Simulation, session: ort.InferenceSession | None, shared, draw: int) -> list[np.ndarray]:
    """One chip (Monte-Carlo draw `draw`) programmed once and read at every drift time: outputs per time."""
    times, seed = shared.times, shared.seed
    program_rng, read_rngs = draw_generators(seed, draw, len(times))
    analog_weights = sum(block.matrix.size for block in simulation.blocks)
    if len(times) == 1 or PROGRAMMED_BYTES_PER_WEIGHT * analog_weights > PROGRAMMED_LIMIT_BYTES:
        # Program again for each time, block by block: the same chip (same generator state), less memory.
        fresh = [draw_generators(seed, draw, len(times))[0] for _ in times]
        drawn = (simulation.draw(p, t, r) for p, t, r in zip(fresh, times, read_rngs))
        return [_run_draw(simulation, session, values, shared) for values in drawn]
    programmed = simulation.program(program_rng)
    read = (simulation.read(programmed, t, rng) for t, rng in zip(times, read_rngs))
    return [_run_draw(simulation, session, values, shared) for values in read]


def _draws_outputs(annotated: ir.Model, shared, draws: list[int]) -> list[list[np.ndarray]]:
    """_draw_outputs for several draws in a worker, which builds its own simulation graph."""
    baked = shared.baked
    annotated, shared, own = _shared_prefix(annotated, shared, len(draws) * len(shared.times))
    simulation = build_simulation(annotated, shared.target, copy=not own, shifted_adc=baked)
    session = None if baked else session_for(simulation.model, simulation.drawn_names(), feed_matrices=True)
    return [_draw_outputs(simulation, session, shared, draw) for draw in draws]

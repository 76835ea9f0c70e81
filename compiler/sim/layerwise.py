"""One layer perturbed at a time, from activations computed once: sensitivity's measurements.

The activations the layers' suffixes read are computed from the
full-precision model group by group (as many layers as fit CACHE_BYTES),
each group's from the values the one before left (hetmap.sim.activations.Walk),
so the network runs about once in all; a layer whose own activations do not
fit has them streamed chunk by chunk. Each layer then gets one suffix session
holding a copy of the layer per variant (each Monte-Carlo draw of analog,
each digital width) stacked along the batch, so one run scores them all;
analog draws are fed as inputs with exactly the noise `Scorer.simulate`
draws for that layer alone. A model whose batch cannot be stacked (a fixed
batch size, an activation without the batch axis, a huge layer) gets one
session per option instead, analog run once per draw; a layer that reads
an activation not holding one sample per row (hetmap.sim.activations) is
measured on the whole model. Under a top-1
metric the samples run smallest top-1 gap first and each variant stops
once the samples left cannot flip (hetmap.sim.screen); the session is
rebuilt without the variants that stopped once that costs less than
running them on. Layers are independent: `sweep_layers` on any subset
gives the same arrays.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import onnx_ir as ir
import onnxruntime as ort

from hetmap.mapping.annotations import layer_annotation
from hetmap.mapping.mapping import ANALOG
from hetmap.sim.activations import Source, Walk, open_session, outputs_of, probe_activations, samples_in
from hetmap.sim.cut import FLOAT_TYPES, find_cut, has_subgraphs, split_variants, suffix_model
from hetmap.sim.draws import Simulation, draw_generators
from hetmap.sim.jobs import Workers, map_parts, split
from hetmap.sim.scorer import Scorer
from hetmap.sim.screen import Screen, Track, bound_screen
from hetmap.sim.sessions import release_graphs
from hetmap.sim.simulation import build_simulation

CACHE_BYTES = 512 << 20  # activations kept for every sample at once
RUN_BYTES = 256 << 20  # one stacked run: variants x samples x the largest activation, roughly
STACK_WEIGHT_BYTES = 256 << 20  # a layer whose copies (one per variant) would hold more runs unstacked


@dataclass(frozen=True)
class Sweep:
    """What every layer's measurement needs besides the model (picklable, for workers)."""

    target: object  # hetmap.targets.Target
    layers: tuple  # partition's MappableLayer rows
    input_ranges: dict[str, float]
    inputs: dict[str, np.ndarray]  # the data's inputs, in the screen's order when there is one
    options: tuple[str, ...]
    draws: int  # Monte-Carlo draws of analog
    t_inference_s: float
    seed: int
    batch: int  # samples per run of the unperturbed model (the scorer's)
    stackable: bool  # False for a fixed batch size: one option per run
    screen: Screen | None  # the samples' order and when a variant may stop
    stop_above: float | None  # a drop (metric fraction) no budget assign solves for admits: measuring stops there
    unperturbed: np.ndarray  # the model's first output without noise, in the data's order


@dataclass
class LayerSweep:
    outputs: dict[str, list[np.ndarray]]  # per option, one array of outputs per draw, in the data's order
    rows_run: int  # sample x variant evaluations measured (not those a variant rode along for after it left)
    over: set[str]  # options stopped once sure to drop more than `stop_above`: their drops are lower bounds


def sweep_for(
    scorer: Scorer,
    model: ir.Model,
    target,
    layers,
    input_ranges,
    options,
    draws,
    t_s,
    seed,
    screened=True,
    stop_above=None,
) -> Sweep:
    """The sweep a sensitivity measurement with this scorer runs.

    `screened`: skip the samples a variant cannot flip, and with `stop_above` (a metric fraction) stop
    measuring an option once its drop is sure to exceed it (under a continuous metric, only that).
    """
    stackable = scorer.fixed_batch is None
    inputs, screen = scorer.dataset.inputs, None
    if screened and not has_subgraphs(model):
        inputs, _, screen = scorer.screened_feed
        if screen is None and stop_above is not None and scorer.metric.kind != "top1" and scorer.samples_first:
            screen = bound_screen(scorer.metric, scorer.outputs, scorer.dataset.labels, scorer.reference)
    return Sweep(
        target,
        tuple(layers),
        dict(input_ranges),
        inputs,
        tuple(options),
        draws,
        t_s,
        seed,
        scorer.batch,
        stackable,
        screen,
        stop_above if screen is not None else None,
        scorer.outputs,
    )


def sweep_layers(model: ir.Model, sweep: Sweep, names: list[str]) -> dict[str, LayerSweep]:
    """Per layer in `names`, per option: the model's first output on every sample, one array per draw."""
    layers = {layer.name: layer for layer in sweep.layers}
    if has_subgraphs(model):
        return {name: _whole_model(model, sweep, layers[name]) for name in names}
    cuts = {name: find_cut(model, name) for name in names}
    data = sweep.inputs
    size = samples_in(data)
    probe_rows = min(size, sweep.batch if not sweep.stackable else 2)
    activations = list(dict.fromkeys(v.name for cut in cuts.values() for v in cut.inputs if v.name not in data))
    probe, elsewhere = probe_activations(model, activations, data, probe_rows, sweep.stackable)
    # a layer of another output leaves the scored one as it is; one that reads an activation not cut into rows runs whole
    results = {name: _unperturbed(sweep) for name in names if not cuts[name].reaches_output}
    for name in names:
        if name not in results and any(value.name in elsewhere for value in cuts[name].inputs):
            results[name] = _whole_model(model, sweep, layers[name])
    per_sample = {name: array.nbytes // max(probe_rows, 1) for name, array in probe.items()}
    batched = {n for n, a in data.items() if a.ndim} | {n for n, a in probe.items() if a.ndim and len(a) == probe_rows}
    samples = {**{n: a[:probe_rows] if a.ndim else a for n, a in data.items()}, **probe}
    largest = max(per_sample.values(), default=0) or max((a[:1].nbytes for a in data.values()), default=1)
    walk = Walk(model, data, sweep.batch, sweep.stackable, CACHE_BYTES)
    for group, cached in _groups([name for name in names if name not in results], cuts, per_sample, size, data):
        wanted = list(dict.fromkeys(v.name for n in group for v in cuts[n].inputs if v.name not in data))
        source = Source(model, wanted, data, sweep.batch, walk if cached else None, batched)
        for name in group:
            results[name] = _measure_layer(model, sweep, layers[name], cuts[name], source, samples, batched, largest)
    return {name: results[name] for name in names}


def sweep_parallel(model: ir.Model, sweep: Sweep, names: list[str], workers: Workers) -> dict:
    """sweep_layers over `names` with the layers dealt among `workers` (the same arrays as serial)."""
    parts = split(names, workers.count if workers.parallel else 1)
    results = {}
    for part in map_parts(sweep_layers, model, sweep, parts, workers):
        results.update(part)
    return {name: results[name] for name in names}


def _groups(names, cuts, per_sample, size, data):
    """Consecutive layers whose activations fit CACHE_BYTES together; a layer alone that does not, streamed."""
    groups, current, held = [], [], set()
    for name in names:
        needed = {v.name for v in cuts[name].inputs if v.name not in data}
        grown = held | needed
        if current and sum(per_sample[n] for n in grown) * size > CACHE_BYTES:
            groups.append((current, True))
            current, grown = [], needed
        current.append(name)
        held = grown
    if current:
        groups.append((current, len(current) > 1 or sum(per_sample[n] for n in held) * size <= CACHE_BYTES))
    return groups


def variant_names(options, draws: int) -> list[str]:
    """Every variant a layer is measured under: analog0, analog1, ... (one per draw), then each digital option."""
    digital = [option for option in options if option != ANALOG]
    return [f"{ANALOG}{d}" for d in range(draws)] * (ANALOG in options) + digital


def option_of(variant: str) -> str:
    """The option a variant name stands for."""
    return ANALOG if variant.startswith(ANALOG) else variant


def _variant_plans(sweep: Sweep, layer, stack: bool) -> list[tuple[list[str], int]]:
    """Sessions for one layer: (variant names, runs); unstacked, analog0 runs once per draw."""
    if stack:
        return [(variant_names(sweep.options, sweep.draws), 1)]
    digital = [option for option in sweep.options if option != ANALOG]
    return [([f"{ANALOG}0"], sweep.draws)] * (ANALOG in sweep.options) + [([option], 1) for option in digital]


def _measure_layer(model, sweep: Sweep, layer, cut, source: Source, samples, batched, largest) -> LayerSweep:
    outputs: dict[str, list[np.ndarray]] = {option: [] for option in sweep.options}
    float_unbatched = any(v.dtype in FLOAT_TYPES and v.name not in batched for v in cut.inputs)
    variants = len(variant_names(sweep.options, sweep.draws))
    weight_bytes = 4 * layer.weight_count * variants
    stack = sweep.stackable and not float_unbatched and weight_bytes <= STACK_WEIGHT_BYTES
    plan = _LayerPlan(model, sweep, layer, cut, samples, batched)
    rows_run, over = 0, set()
    for names, runs in _variant_plans(sweep, layer, stack):
        rows = sweep.batch if not stack else max(1, min(sweep.batch, RUN_BYTES // max(largest * len(names), 1)))
        rows = rows if sweep.screen is None or not sweep.stackable else min(rows, sweep.screen.rows)
        for run in range(runs):
            by_name, stopped_over, measured = plan.measure(names, run, source, rows, whole_options=runs == 1)
            release_graphs(model)  # the suffix graphs of these variants
            over |= stopped_over
            rows_run += measured
            for name in names:
                complete = by_name[name] if sweep.screen is None else sweep.screen.complete(by_name[name])
                outputs[option_of(name)].append(complete)
    return LayerSweep(outputs, rows_run, over)


class _LayerPlan:
    """One layer's variants run over the samples; a variant the screen settles leaves the session."""

    def __init__(self, model, sweep: Sweep, layer, cut, samples, batched):
        self.model, self.sweep, self.layer, self.cut = model, sweep, layer, cut
        self.samples, self.batched = samples, batched
        self.total_weights = sum(l.weight_count for l in sweep.layers)

    def _session(self, names: list[str], run: int):
        sweep, layer, input_range = self.sweep, self.layer, self.sweep.input_ranges[self.layer.name]
        annotations = [
            (name, layer_annotation(layer, option_of(name), sweep.target, input_range, [], self.total_weights))
            for name in names
        ]
        suffix = suffix_model(self.model, self.cut, annotations, self.samples, self.batched)
        simulation = build_simulation(suffix, sweep.target, copy=False)
        weights = draw_weights(simulation, layer.name, names, sweep, run)
        return open_session(simulation.model, simulation.drawn_names()), weights

    def measure(self, names, run: int, source: Source, rows: int, whole_options: bool):
        """(each variant's outputs on the rows it ran, in the sweep's order; the options stopped over the budget;
        the sample x variant rows measured).

        Without a screen every row runs. With one, a variant leaves once settled, and an option
        (all its variants here: `whole_options`) once its drop cannot fit under `sweep.stop_above`.
        The session is rebuilt without the variants that left when the rows left would cost those
        variants more than the build did; until then they ride along, ignored.
        """
        screen, fed = self.sweep.screen, [v.name for v in self.cut.inputs]
        parts: dict[str, list[np.ndarray]] = {name: [] for name in names}
        tracks = {name: Track(screen) for name in names} if screen is not None else {}
        active, session, over, measured = list(names), None, set(), 0
        ranges = source.ranges(rows)
        for index, (start, stop) in enumerate(ranges):
            if session is None:
                held, began = list(active), time.perf_counter()
                session, weights = self._session(held, run)
                build_s = time.perf_counter() - began
            began = time.perf_counter()
            result = _run(session, {**source.get(fed, start, stop), **weights})
            run_s = time.perf_counter() - began
            measured += (stop - start) * len(active)
            for name, part in zip(held, split_variants(result, len(held))):
                if name in active:
                    parts[name].append(part)
                    if screen is not None:
                        tracks[name].add(part)
            if screen is None:
                continue
            if whole_options and self.sweep.stop_above is not None:
                over |= _over_budget(names, active, tracks, self.sweep.stop_above)
            active = [name for name in active if not tracks[name].settled and option_of(name) not in over]
            if not active:
                break
            rows_left = sum(b - a for a, b in ranges[index + 1 :])
            riders_s = run_s * rows_left / (stop - start) * (len(held) - len(active)) / len(held)
            if riders_s > build_s:
                session = None
        return {name: np.concatenate(part) for name, part in parts.items()}, over, measured


def _over_budget(names: list[str], active: list[str], tracks: dict, stop_above: float) -> set[str]:
    """Options still running whose drop, their draws averaged, is already sure to exceed `stop_above`."""
    over = set()
    for option in {option_of(name) for name in active}:
        bounds = [tracks[name].drop_at_least() for name in names if option_of(name) == option]
        if np.mean(bounds) > stop_above:
            over.add(option)
    return over


def _run(session: ort.InferenceSession, feeds: dict[str, np.ndarray]) -> np.ndarray:
    return outputs_of(session, [session.get_outputs()[0].name], feeds)[0]


def draw_weights(simulation: Simulation, layer: str, names: list[str], sweep: Sweep, run: int) -> dict:
    """Each analog copy's drawn tiles: copy k of run r is draw r + k, with `Scorer.simulate`'s generators."""
    values = {}
    for name in names:
        if not name.startswith(ANALOG):
            continue
        draw = run + int(name[len(ANALOG) :])
        blocks = [b for b in simulation.blocks if b.weight.name.startswith(f"{layer}#{name}/")]
        own = Simulation(simulation.model, simulation.target, blocks)
        program_rng, (read_rng,) = draw_generators(sweep.seed, draw, 1)
        values.update(own.draw(program_rng, sweep.t_inference_s, read_rng))
    return values


def _unperturbed(sweep: Sweep) -> LayerSweep:
    """Every variant of a layer the scored output does not depend on: that output, unperturbed."""
    outputs = {option: [sweep.unperturbed] * (sweep.draws if option == ANALOG else 1) for option in sweep.options}
    return LayerSweep(outputs, 0, set())


def _whole_model(model: ir.Model, sweep: Sweep, layer) -> LayerSweep:
    """The layer measured on the whole model, as `Scorer.simulate` does (control flow in the graph, or
    activations the suffix cannot take in row ranges)."""
    from hetmap.mapping.annotations import clear_layer, write_layer

    node = next(node for node in model.graph if node.name == layer.name)
    total_weights = sum(l.weight_count for l in sweep.layers)
    outputs = {}
    for option in sweep.options:
        write_layer(
            node, layer_annotation(layer, option, sweep.target, sweep.input_ranges[layer.name], [], total_weights)
        )
        try:
            simulation = build_simulation(model, sweep.target)
        finally:
            clear_layer(node)
        session = open_session(simulation.model, simulation.drawn_names())
        outputs[option] = []
        for draw in range(sweep.draws if option == ANALOG else 1):
            weights = simulation.nominal()
            if option == ANALOG:
                program_rng, (read_rng,) = draw_generators(sweep.seed, draw, 1)
                weights = simulation.draw(program_rng, sweep.t_inference_s, read_rng)
            source = Source(model, [], sweep.inputs, sweep.batch, None, set(sweep.inputs))
            names = list(source.data)
            parts = [_run(session, {**source.get(names, a, b), **weights}) for a, b in source.ranges(sweep.batch)]
            ordered = np.concatenate(parts)  # in the screen's order when there is one
            outputs[option].append(ordered if sweep.screen is None else sweep.screen.complete(ordered))
    rows = sum(len(array) for arrays in outputs.values() for array in arrays)
    return LayerSweep(outputs, rows, set())

"""The pass manager: runs passes in order, checks rewrites, collects typed results.

A pass is a small class: class constants `name`, `inputs` (the earlier
passes whose results it reads), `rewrites_graph` and `changes_weights`;
its options, a frozen dataclass, given once at construction; and
`run(model, context) -> (model, result)`. The context is read-only and
holds only the results the pass declared. After a pass that rewrites the
graph, the model is checked by onnx.checker and by onnxruntime parity
against the outputs it computed before; a pass that changes weights
changes the outputs on purpose and hands the weights before and after on
in its result. Passes never print; the caller gets progress through `on_pass`.
"""

from __future__ import annotations

import dataclasses
import gc
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, ClassVar

import numpy as np
import onnx
import onnx_ir as ir
import onnx_ir.passes.common

from hetmap.errors import HetmapError
from hetmap.graph import parity
from hetmap.graph.data import Dataset
from hetmap.graph.shapes import fixed_batch, random_feeds
from hetmap.sim.jobs import Workers
from hetmap.sim.measure import Measurer
from hetmap.sim.scorer import Scorer
from hetmap.sim.sessions import freeze_survivors
from hetmap.targets import Target

PARITY_SAMPLES = 4
COLLECT_ABOVE_BYTES = 16 << 20  # small models' replaced weights may wait for the next collection


@dataclass(frozen=True)
class CompileConfig:
    """What the user asked for, shared by every pass."""

    seed: int = 0
    input_shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    dataset: Dataset | None = None
    train: Dataset | None = None  # fine-tuning data
    checkpoint_dir: Path | None = None  # where fine-tuning keeps its resumable state
    metric: str = "auto"  # how outputs are scored (hetmap.sim.metrics.METRICS)
    workers: Workers = Workers()  # where independent measurements run (sensitivity's layers)
    verify: Dataset | None = None  # held out of `dataset`, or the user's --verify: the final check of a mapping
    verify_held_out: bool = True  # False when the --verify file shares samples with the decision or training data
    device: str = "cpu"  # where torch simulates mappings (auto: on CUDA when torch sees one); cpu: onnxruntime does


@dataclass(frozen=True)
class PassContext:
    """A pass's read-only inputs: the target, the config, the results of the passes it declares."""

    target: Target
    config: CompileConfig
    reports: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    progress: Callable[[int, int, str], None] = lambda done, total, info: None  # long passes' steps

    def with_reports(self, reports: Mapping[str, Any]) -> PassContext:
        return dataclasses.replace(self, reports=MappingProxyType(dict(reports)))


class Pass:
    """The pass contract; a pass overrides what differs from these defaults, and `run`."""

    name: ClassVar[str]
    inputs: ClassVar[tuple[str, ...]] = ()  # results of earlier passes it reads (those that ran)
    rewrites_graph: ClassVar[bool] = False  # structure changes, the function must not: checker and parity after it
    changes_weights: ClassVar[bool] = False  # initializer values change on purpose: no parity check

    def run(self, model: ir.Model, context: PassContext) -> tuple[ir.Model, Any]:
        raise NotImplementedError


@dataclass(frozen=True)
class WeightChange:
    """What a pass that changes weights hands on: the initializers before and after, by name.

    `reference_outputs`: the model's outputs on the scoring data before the
    change, so later drops stay relative to the model the user brought.
    """

    before: dict[str, ir.TensorProtocol]
    after: dict[str, ir.TensorProtocol]
    reference_outputs: np.ndarray


def handoff():
    """A result field later passes read but the JSON report leaves out (weights, arrays)."""
    return field(default=None, repr=False, compare=False, metadata={"json": False})


@dataclass
class PassRecord:
    name: str
    seconds: float
    parity_relative_error: float | None


@dataclass
class PipelineReport:
    """What ran, how long each pass took, and how exactly each rewrite kept the outputs."""

    target: str
    seed: int
    input_shapes: dict[str, list[int]]
    passes: list[PassRecord]


def report_to_dict(report) -> dict:
    """A pass's result as JSON-ready data, without its handoff fields."""
    left_out = [f.name for f in dataclasses.fields(report) if not f.metadata.get("json", True)]
    data = dataclasses.asdict(dataclasses.replace(report, **dict.fromkeys(left_out)) if left_out else report)
    return {key: value for key, value in data.items() if key not in left_out}


def parity_feeds(model: ir.Model, config: CompileConfig) -> dict[str, np.ndarray]:
    """The user's first samples when data was given, else seeded random inputs.

    A model exported with a fixed batch size gets exactly that many samples.
    """
    batch = fixed_batch(model) or PARITY_SAMPLES
    if config.dataset is not None:
        return config.dataset.head(batch)
    rng = np.random.default_rng([config.seed, 7])
    return random_feeds(model, config.input_shapes, rng, batch=batch)


SCORING_RANDOM_SAMPLES = 64
RANDOM_DATA = "random inputs (give --data to score on real data)"  # the scoring data's source without --data


def scoring_dataset(model: ir.Model, config: CompileConfig) -> Dataset:
    """The data decisions are scored on: the user's, else seeded random inputs (agreement only).

    A model with a fixed batch size is scored on the largest whole number of batches.
    """
    batch = fixed_batch(model)
    if config.dataset is not None:
        return whole_batches(config.dataset, batch)
    batch = batch or SCORING_RANDOM_SAMPLES
    rng = np.random.default_rng([config.seed, 11])
    feeds = random_feeds(model, config.input_shapes, rng, batch=batch)
    return Dataset(inputs=feeds, labels=None, source=RANDOM_DATA)


def whole_mapping_measurer(model: ir.Model, context: PassContext, scorer: Scorer) -> Measurer:
    """How assign and verification measure whole mappings: screened, on the config's workers and device."""
    reports, config = context.reports, context.config
    layers, ranges = reports["partition"].layers, reports["calibrate"].input_range
    simulator = simulator_for(model, context)
    return Measurer(model, context.target, layers, ranges, scorer, config.seed, config.workers, True, simulator)


def simulator_for(model: ir.Model, context: PassContext, asked: bool = False):
    """A torch simulator of `model` (hetmap.train.device_sim) where the config's device is a GPU, or on the CPU
    where `asked`; None where onnxruntime measures (also where torch cannot run the graph)."""
    if context.config.device == "cpu" and not asked:
        return None
    from hetmap.train.device_sim import simulator_on

    reports, target = context.reports, context.target
    layers, ranges = reports["partition"].layers, reports["calibrate"].input_range
    return simulator_on(context.config.device, model, layers, ranges, target, asked)


def whole_batches(dataset: Dataset, batch: int | None) -> Dataset:
    """The largest whole number of a fixed batch size's batches (all of it for a free batch dimension)."""
    if batch and dataset.size % batch and dataset.size > batch:
        usable = dataset.size - dataset.size % batch
        labels = dataset.labels[:usable] if dataset.labels is not None else None
        return Dataset(dataset.head(usable), labels, dataset.source)
    return dataset


def left_out_note(dataset: Dataset | None, batch: int | None) -> str | None:
    """The line to show when a fixed batch size leaves the data's last samples out (whole_batches)."""
    if dataset is None or whole_batches(dataset, batch) is dataset:
        return None
    left = dataset.size % batch
    return (
        f"data file '{dataset.source}': the model takes exactly {batch} samples per run, so the last {left} of "
        f"its {dataset.size} samples are left out"
    )


def verification_dataset(model: ir.Model, config: CompileConfig) -> tuple[Dataset, bool] | None:
    """(the data a chosen mapping is verified on, whether it is held out of the decisions' data), or None.

    The held-out part of the user's data, or their --verify file; data too
    small to split is verified on itself; without data there is nothing to
    verify on (random inputs say nothing of the budget).
    """
    if config.verify is not None:
        return whole_batches(config.verify, fixed_batch(model)), config.verify_held_out
    if config.dataset is not None:
        return scoring_dataset(model, config), False
    return None


def run_pipeline(
    model: ir.Model,
    passes: Sequence[Pass],
    context: PassContext,
    on_pass: Callable[[str], None] = lambda name: None,
) -> tuple[ir.Model, dict[str, Any]]:
    """Run `passes` in order: the model and every result by pass name, `pipeline` (a PipelineReport) last."""
    records = []
    results = dict(context.reports)
    feeds = parity_feeds(model, context.config)
    try:
        for graph_pass in passes:
            on_pass(graph_pass.name)
            expected = parity.run_model(model, feeds) if graph_pass.rewrites_graph else None
            start = time.perf_counter()
            inputs = {name: results[name] for name in graph_pass.inputs if name in results}
            model, result = graph_pass.run(model, context.with_reports(inputs))
            if graph_pass.rewrites_graph:
                _release_replaced_values(model)
            freeze_survivors(model)
            seconds = time.perf_counter() - start
            error = None
            if expected is not None:
                _check_graph(graph_pass.name, model)
                error = parity.check_parity(graph_pass.name, expected, parity.run_model(model, feeds))
            results[graph_pass.name] = result
            records.append(PassRecord(graph_pass.name, round(seconds, 4), error))
    finally:
        gc.unfreeze()
    results["pipeline"] = PipelineReport(
        target=context.target.name,
        seed=context.config.seed,
        input_shapes={k: list(v) for k, v in context.config.input_shapes.items()},
        passes=records,
    )
    return model, results


def _release_replaced_values(model: ir.Model) -> None:
    """Free the weights a pass replaced, before the next pass allocates more.

    onnx-ir 1.1 keeps values removed from graph.inputs as zero counts in a
    private counter (onnx_ir.passes.common's C-API helper adds and removes
    every initializer there), pinning them for the graph's lifetime; and
    rewritten nodes sit in reference cycles until a full collection.
    """
    for graph in model.graphs():
        counter = graph.inputs._ref_counter
        for value in [value for value, count in counter.items() if count <= 0]:
            del counter[value]
    weight_bytes = sum(v.const_value.nbytes for v in model.graph.initializers.values() if v.const_value is not None)
    if weight_bytes > COLLECT_ABOVE_BYTES:  # a full collection costs ~0.1 s once torch is loaded
        gc.collect()


def _check_graph(pass_name: str, model: ir.Model) -> None:
    """onnx.checker on the graph structure (large tensors are not re-read)."""
    try:
        ir.passes.common.CheckerPass(full_check=False)(model)
    except (ir.passes.PassError, onnx.checker.ValidationError) as error:
        reason = str(error.__cause__ or error).splitlines()[0]
        raise HetmapError(f"pass '{pass_name}' produced an invalid graph: {reason}") from None

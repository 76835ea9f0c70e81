"""The pass manager: runs passes in order, checks rewrites, collects typed reports.

A pass is an object with a `name`, a `rewrites_graph` flag and
`run(model, context) -> (model, report)`. Passes never print; the caller
gets progress through `on_pass`. After every pass that rewrites the graph,
the model is checked by onnx.checker and by onnxruntime parity against the
outputs it computed before that pass.
"""

from __future__ import annotations

import dataclasses
import gc
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import onnx
import onnx_ir as ir
import onnx_ir.passes.common

from hetmap import parity
from hetmap.data import Dataset
from hetmap.errors import HetmapError
from hetmap.shapes import fixed_batch, random_feeds
from hetmap.targets import Target

PARITY_SAMPLES = 4
COLLECT_ABOVE_BYTES = 16 << 20  # small models' replaced weights may wait for the next collection


@dataclass
class CompileConfig:
    """What the user asked for, shared by every pass."""

    seed: int = 0
    input_shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    dataset: Dataset | None = None
    train: Dataset | None = None  # fine-tuning data
    checkpoint_dir: Path | None = None  # where fine-tuning keeps its resumable state
    metric: str = "auto"  # how outputs are scored (hetmap.metrics.METRICS)


@dataclass
class PassContext:
    """Read-only inputs of a pass plus the reports of the passes before it."""

    target: Target
    config: CompileConfig
    reports: dict[str, Any] = field(default_factory=dict)
    # The user's model's outputs on the scoring data, set once fine-tuning changes the
    # weights: every later drop is measured against the model the user brought.
    reference_outputs: np.ndarray | None = None
    # The weights fine-tuning replaced, so assign can ship them when the adapted ones map worse.
    weights_before_finetune: dict[str, ir.TensorProtocol] | None = None
    progress: Callable[[int, int, str], None] = lambda done, total, info: None  # long passes' steps

    def rng(self, salt: str) -> np.random.Generator:
        """A generator seeded from the user's seed and a per-use salt (stable across runs)."""
        return np.random.default_rng([self.config.seed, *salt.encode()])


class Pass(Protocol):
    name: str
    rewrites_graph: bool

    def run(self, model: ir.Model, context: PassContext) -> tuple[ir.Model, Any]: ...


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
    return dataclasses.asdict(report)


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


def scoring_dataset(model: ir.Model, config: CompileConfig) -> Dataset:
    """The data decisions are scored on: the user's, else seeded random inputs (agreement only).

    A model with a fixed batch size is scored on the largest whole number of batches.
    """
    batch = fixed_batch(model)
    if config.dataset is not None:
        dataset = config.dataset
        if batch and dataset.size % batch and dataset.size > batch:
            usable = dataset.size - dataset.size % batch
            labels = dataset.labels[:usable] if dataset.labels is not None else None
            return Dataset(dataset.head(usable), labels, dataset.source)
        return dataset
    batch = batch or SCORING_RANDOM_SAMPLES
    rng = np.random.default_rng([config.seed, 11])
    feeds = random_feeds(model, config.input_shapes, rng, batch=batch)
    return Dataset(inputs=feeds, labels=None, source="random inputs (give --data to score on real data)")


def run_pipeline(
    model: ir.Model,
    passes: Sequence[Pass],
    context: PassContext,
    on_pass: Callable[[str], None] = lambda name: None,
) -> tuple[ir.Model, PipelineReport]:
    """Run `passes` in order; each report lands in `context.reports` under the pass name."""
    records = []
    feeds = parity_feeds(model, context.config)
    for graph_pass in passes:
        on_pass(graph_pass.name)
        expected = parity.run_model(model, feeds) if graph_pass.rewrites_graph else None
        start = time.perf_counter()
        model, report = graph_pass.run(model, context)
        if graph_pass.rewrites_graph:
            _release_replaced_values(model)
        seconds = time.perf_counter() - start
        error = None
        if expected is not None:
            _check_graph(graph_pass.name, model)
            error = parity.check_parity(graph_pass.name, expected, parity.run_model(model, feeds))
        context.reports[graph_pass.name] = report
        records.append(PassRecord(graph_pass.name, round(seconds, 4), error))
    pipeline_report = PipelineReport(
        target=context.target.name,
        seed=context.config.seed,
        input_shapes={k: list(v) for k, v in context.config.input_shapes.items()},
        passes=records,
    )
    return model, pipeline_report


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

"""Measuring a mapping during compile: the model annotated with it while the scorer simulates it.

Sensitivity measures one layer's option at a time, assign whole mappings,
finetune the mappings it reports, and the benches theirs: all through
`Measurer.measure`, with the annotations emit writes and the simulation
graph and draws of `hetmap run`, so compile measures what run would. Where
the config's device is a GPU, the same draws run through torch there
(hetmap.pipeline.simulator_for, hetmap.train.device_sim).
"""

from __future__ import annotations

from dataclasses import dataclass

import onnx_ir as ir

from hetmap.mapping.annotations import clear_layer, layer_annotation, write_layer
from hetmap.sim.drift import parse_drift
from hetmap.sim.jobs import Workers
from hetmap.sim.scorer import Scorer
from hetmap.sim.sessions import release_graphs
from hetmap.targets import Target


@dataclass(frozen=True)
class Measurement:
    """How compile measures a mapping: at the budget's drift time, over Monte-Carlo seeds."""

    drift: str = "1d"
    seeds: int = 3

    @property
    def t_inference_s(self) -> float:
        return parse_drift(self.drift)


class Measurer:
    """Scores mappings of one model: partition `layers` with their calibrated input ranges."""

    def __init__(
        self,
        model: ir.Model,
        target: Target,
        layers: list,
        input_ranges: dict[str, float],
        scorer: Scorer,
        seed: int,
        workers: Workers = Workers(),
        screened: bool = False,
        simulator=None,
    ):
        self.model = model
        self.target = target
        self.layers = layers
        self.input_ranges = input_ranges
        self.scorer = scorer
        self.seed = seed
        self.workers = workers  # a mapping's draws run there
        self.screened = screened  # skip the samples no change seen can flip (hetmap.sim.screen)
        self.simulator = simulator  # a DeviceSimulator of the model: mappings it supports run through torch

    def measure(
        self,
        mapping: dict[str, str],
        times: list[float],
        seeds: int,
        what: str = "the mapped model",
        per_sample: bool = False,
    ) -> list[list[float]]:
        """The metric per drift time per seed; layers `mapping` leaves out stay full precision.

        The live graph carries the annotations only while it is simulated;
        `what` names the mapping in the error a non-finite output raises;
        with `per_sample`, each metric is the array of the samples' scores.
        """
        if self.simulator is not None and self.simulator.supports(mapping):
            scorer = self.scorer
            drawn = self.simulator.runs(mapping, scorer.dataset, scorer.batch, times, range(seeds), self.seed)
            return [[scorer.score_outputs(outputs, what, per_sample) for outputs in per_seed] for per_seed in drawn]
        nodes = {node.name: node for node in self.model.graph}
        total_weights = sum(layer.weight_count for layer in self.layers)
        chosen = [layer for layer in self.layers if layer.name in mapping]
        for layer in chosen:
            option, input_range = mapping[layer.name], self.input_ranges[layer.name]
            write_layer(nodes[layer.name], layer_annotation(layer, option, self.target, input_range, [], total_weights))
        try:
            _, per_time = self.scorer.simulate(
                self.model,
                self.target,
                times,
                seeds,
                self.seed,
                what=what,
                per_sample=per_sample,
                workers=self.workers,
                screened=self.screened,
            )
        finally:
            for layer in chosen:
                clear_layer(nodes[layer.name])
            release_graphs(self.model)
        return per_time

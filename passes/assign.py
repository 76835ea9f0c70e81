"""Assign: one option per mappable layer.

With `--mapping` the user's mapping (a file or a preset) is taken as given.
Otherwise the assignment MILP (compiler/solver.py) minimises energy, or
maximises the analog weight share, under the accuracy budget and the tile
capacity, on the additive model of the sensitivity report. The chosen
mapping is then simulated; when the measured drop breaks the budget, the
drops of its choices are scaled by measured/predicted, the mapping is cut
off, and the MILP solved again, a bounded number of rounds. The mapping
that ships is a measured one.

After fine-tuning, the same is done on the weights from before it (with
the sensitivity measured then), and those weights ship instead when their
mapping is strictly better: a short fine-tune can cost the noiseless model
more of the budget than it wins back, and must not make the result worse.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx_ir as ir

from hetmap.cost import dram_surcharge_pj_per_byte, layer_cost, mapping_energy_pj, weight_bytes
from hetmap.evaluate import Scorer, parse_drift
from hetmap.mapping import ANALOG, Mapping, resolve_mapping, target_options, validate
from hetmap.passes.emit import annotated_as
from hetmap.pipeline import PassContext, scoring_dataset
from hetmap.solver import Problem, predicted_drop, solve

CORRECTION_ROUNDS = 4
PESSIMISM = 0.9  # measured below this share of predicted: the model had slack to spend
PARETO_BUDGETS = (0.0, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0)


@dataclass
class Attempt:
    mapping: dict[str, str]
    predicted_drop_points: float
    measured_drop_points: float
    measured_std_points: float
    energy_pj: float
    analog_weight_share: float


@dataclass
class AssignReport:
    source: str  # "solver" or the user's --mapping
    mapping: Mapping
    objective: str = ""
    max_drop_points: float | None = None
    drift: str = ""
    attempts: list[Attempt] = field(default_factory=list)
    within_budget: bool | None = None
    pareto: list[Attempt] = field(default_factory=list)
    # With fine-tuning, the mapping is solved on both weights and ships with the better: "fine-tuned" or "before fine-tuning".
    weights: str = "as given"


class Assign:
    name = "assign"
    rewrites_graph = False

    def __init__(self, mapping_spec: str | None = None, max_drop: float = 0.5, objective: str = "energy",
                 drift: str = "1d", seeds: int = 3, pareto: bool = False):  # fmt: skip
        self.mapping_spec = mapping_spec
        self.max_drop = max_drop
        self.objective = objective
        self.drift = drift
        self.seeds = seeds
        self.pareto = pareto

    def run(self, model: ir.Model, context: PassContext) -> tuple[ir.Model, AssignReport]:
        names = [layer.name for layer in context.reports["partition"].layers]
        if self.mapping_spec is not None:
            mapping = validate(resolve_mapping(self.mapping_spec, names), names, context.target, self.mapping_spec)
            return model, AssignReport(source=self.mapping_spec, mapping=mapping)
        decision = self._decide(model, context, "sensitivity")
        before = context.weights_before_finetune
        weights = "fine-tuned" if before else "as given"
        if before and "sensitivity_before" in context.reports:
            adapted = _swap_weights(model, before)
            unadapted = self._decide(model, context, "sensitivity_before")
            if unadapted.beats(decision, self.objective):
                decision, weights = unadapted, "before fine-tuning"
            else:
                _swap_weights(model, adapted)
        measure, problem = decision.measure, decision.problem
        pareto = [a for budget in PARETO_BUDGETS for a in _solve_and_verify(problem, measure, budget, self.objective, measure.offset)[-1:]] if self.pareto else []
        report = AssignReport(
            source="solver",
            mapping=Mapping(dict(decision.best.mapping)),
            objective=self.objective,
            max_drop_points=self.max_drop,
            drift=self.drift,
            attempts=decision.attempts,
            within_budget=decision.feasible,
            pareto=pareto,
            weights=weights,
        )
        return model, report

    def _decide(self, model: ir.Model, context: PassContext, sensitivity: str) -> _Decision:
        """Solve and verify on the model's current weights, with the drops of report `sensitivity`."""
        measure = _Measurer(model, context, self.drift, self.seeds)
        problem = _problem(context, sensitivity)
        attempts = _solve_and_verify(problem, measure, self.max_drop, self.objective, measure.offset)
        feasible = [a for a in attempts if a.measured_drop_points <= self.max_drop]
        best = _best(feasible, self.objective) if feasible else min(attempts, key=lambda a: a.measured_drop_points)
        return _Decision(measure, problem, attempts, best, bool(feasible))


@dataclass
class _Decision:
    measure: _Measurer
    problem: Problem
    attempts: list[Attempt]
    best: Attempt
    feasible: bool

    def beats(self, other: _Decision, objective: str) -> bool:
        """Strictly better: within the budget where the other is not, a better objective, or (both over) a smaller drop."""
        if self.feasible != other.feasible:
            return self.feasible
        if not self.feasible:
            return self.best.measured_drop_points < other.best.measured_drop_points
        return _best([other.best, self.best], objective) is self.best  # ties go to the other


def _swap_weights(model: ir.Model, weights: dict[str, ir.TensorProtocol]) -> dict[str, ir.TensorProtocol]:
    """Put `weights` into the model's initializers; returns the ones they replaced."""
    replaced = {}
    for name, tensor in weights.items():
        replaced[name] = model.graph.initializers[name].const_value
        model.graph.initializers[name].const_value = tensor
    return replaced


def _best(attempts: list[Attempt], objective: str) -> Attempt:
    if objective == "energy":
        return min(attempts, key=lambda a: a.energy_pj)
    return max(attempts, key=lambda a: (a.analog_weight_share, -a.energy_pj))


def _problem(context: PassContext, sensitivity_report: str = "sensitivity") -> Problem:
    partition = context.reports["partition"]
    sensitivity = context.reports[sensitivity_report].layers
    options = target_options(context.target)
    layers = partition.layers
    drop = np.array([[max(sensitivity[l.name][o].drop_points, 0.0) for o in options] for l in layers])
    energy = np.array([[layer_cost(l, o, context.target).energy_pj for o in options] for l in layers])
    weight_bytes_per_option = np.array([[weight_bytes(l, o, context.target) for o in options] for l in layers])
    allowed = np.ones(drop.shape, dtype=bool)
    allowed[:, options.index(ANALOG)] = [l.tiles <= context.target.analog.count for l in layers]
    return Problem(
        layers=[l.name for l in layers],
        options=options,
        drop=drop,
        energy_pj=energy,
        weights=np.array([l.weight_count for l in layers], dtype=float),
        tiles=np.array([l.tiles for l in layers], dtype=float),
        tile_count=context.target.analog.count,
        allowed=allowed,
        weight_bytes=weight_bytes_per_option,
        weight_sram_bytes=context.target.memory.weight_sram_bytes,
        dram_surcharge_pj_per_byte=dram_surcharge_pj_per_byte(context.target),
    )


def _solve_and_verify(problem: Problem, measure, budget: float, objective: str, offset: float = 0.0) -> list[Attempt]:
    """MILP, simulate, correct: every measured attempt, in order.

    After each measurement the drops of the chosen options are scaled by
    measured/predicted (within [1/4, 4]) and the mapping is cut off, so the
    additive model learns from whole-mapping simulations in both
    directions: an optimistic model stops breaking the budget, a pessimistic
    one frees slack for a better mapping. When the model admits no mapping
    at all, the safest one is measured first: measurement decides. Rounds
    end early once a mapping is within budget and the model was not
    pessimistic about it. `offset`: the drop the noiseless weights already
    have (after fine-tuning), which the per-layer drops sit on top of.
    """
    problem = Problem(**{**vars(problem), "drop": problem.drop.copy()})
    attempts, tried = [], []
    for _ in range(CORRECTION_ROUNDS):
        mapping = solve(problem, max(budget - offset, 0.0), objective, tried)
        if mapping is None and attempts:
            break
        mapping = mapping or _safest(problem)
        predicted = predicted_drop(problem, mapping)  # the layers' part, on top of the offset
        attempt = measure(mapping, offset + predicted)
        attempts.append(attempt)
        tried.append(mapping)
        measured = attempt.measured_drop_points - offset
        if measured + offset <= budget and measured >= PESSIMISM * predicted:
            break
        chosen = [(i, problem.options.index(mapping[name])) for i, name in enumerate(problem.layers)]
        for i, j in chosen:
            if predicted > 0:
                problem.drop[i, j] *= min(max(measured / predicted, 0.25), 4.0)
            else:
                problem.drop[i, j] += max(measured, 0.0) / len(chosen)
    return attempts


def _safest(problem: Problem) -> dict[str, str]:
    """Per layer the allowed option with the smallest drop (the least energy among ties)."""
    mapping = {}
    for i, name in enumerate(problem.layers):
        allowed = [j for j in range(len(problem.options)) if problem.allowed[i, j]]
        best = min(allowed, key=lambda j: (problem.drop[i, j], problem.energy_pj[i, j]))
        mapping[name] = problem.options[best]
    return mapping


class _Measurer:
    """Simulates whole mappings on the scoring data at the budget's drift time."""

    def __init__(self, model: ir.Model, context: PassContext, drift: str, seeds: int):
        self.model = model
        self.context = context
        self.t_inference_s = parse_drift(drift)
        self.seeds = seeds
        self.scorer = Scorer(model, scoring_dataset(model, context.config), context.reference_outputs, context.config.metric)
        self.offset = 100 * (self.scorer.full_precision - self.scorer.model_metric)
        self.layers = context.reports["partition"].layers
        self.total_weights = context.reports["partition"].mappable_weights

    def __call__(self, mapping: dict[str, str], predicted: float) -> Attempt:
        target = self.context.target
        what = f"the mapping with {sum(o == ANALOG for o in mapping.values())} analog layers"
        with annotated_as(self.model, mapping, self.context):
            _, per_time = self.scorer.simulate(
                self.model, target, [self.t_inference_s], self.seeds, self.context.config.seed, what=what
            )
        drops = 100 * (self.scorer.full_precision - np.array(per_time[0]))
        analog = [l for l in self.layers if mapping[l.name] == ANALOG]
        return Attempt(
            mapping=dict(mapping),
            predicted_drop_points=predicted,
            measured_drop_points=float(drops.mean()),
            measured_std_points=float(drops.std()),
            energy_pj=mapping_energy_pj(self.layers, mapping, target),
            analog_weight_share=sum(l.weight_count for l in analog) / self.total_weights,
        )

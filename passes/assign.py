"""Assign: one option per mappable layer.

With `--mapping` the user's mapping (a file or a preset) is taken as given.
Otherwise the assignment MILP (hetmap.mapping.solver) minimises energy, or
maximises the analog weight share, under the accuracy budget and the tile
capacity, on the additive model of the sensitivity report. The chosen
mapping is then simulated; when the measured drop breaks the budget, the
drops of its choices are scaled by measured/predicted, the mapping is cut
off, and the MILP solved again, a bounded number of rounds
(hetmap.mapping.search). The mapping that ships is a measured one.

After fine-tuning, the same is done on the weights from before it (with
the sensitivity measured then; finetune's result hands both weights on),
and those weights ship instead when their mapping is strictly better: a
short fine-tune can cost the noiseless model more of the budget than it
wins back, and must not make the result worse.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx_ir as ir

from hetmap.mapping.cost import dram_surcharge_pj_per_byte, layer_cost, mapping_energy_pj, weight_bytes
from hetmap.mapping.mapping import ANALOG, Mapping, target_options, validate
from hetmap.mapping.search import Attempt, Decision, decide, solve_and_verify
from hetmap.mapping.solver import Problem
from hetmap.pipeline import Pass, PassContext, scoring_dataset
from hetmap.sim.measure import Measurement, Measurer
from hetmap.sim.scorer import Scorer

PARETO_BUDGETS = (0.0, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0)


@dataclass(frozen=True)
class AssignOptions:
    """Assign's options: a given mapping, or the solver's budget, objective and measurement."""

    mapping: Mapping | None = None
    mapping_source: str = ""  # the user's --mapping, named in the report and in errors
    max_drop: float = 0.5
    objective: str = "energy"
    measurement: Measurement = Measurement()
    pareto: bool = False


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


class Assign(Pass):
    name = "assign"
    inputs = ("partition", "calibrate", "sensitivity", "sensitivity_before", "finetune")
    changes_weights = True  # after fine-tuning, the weights from before it may ship

    def __init__(self, options: AssignOptions = AssignOptions()):
        self.options = options

    def run(self, model: ir.Model, context: PassContext) -> tuple[ir.Model, AssignReport]:
        options = self.options
        names = [layer.name for layer in context.reports["partition"].layers]
        if options.mapping is not None:
            mapping = validate(options.mapping, names, context.target, options.mapping_source)
            return model, AssignReport(source=options.mapping_source, mapping=mapping)
        finetune = context.reports.get("finetune")
        change = finetune.weights if finetune else None
        chosen = self._decide(model, context, "sensitivity", change)
        weights = "fine-tuned" if change and change.before else "as given"
        if change and change.before and "sensitivity_before" in context.reports:
            _swap_weights(model, change.before)
            unadapted = self._decide(model, context, "sensitivity_before", change)
            if unadapted[0].beats(chosen[0], options.objective):
                chosen, weights = unadapted, "before fine-tuning"
            else:
                _swap_weights(model, change.after)
        decision, problem, measure = chosen
        pareto = []
        if options.pareto:
            for budget in PARETO_BUDGETS:
                pareto += solve_and_verify(problem, measure, budget, options.objective, measure.offset)[-1:]
        report = AssignReport(
            source="solver",
            mapping=Mapping(dict(decision.best.mapping)),
            objective=options.objective,
            max_drop_points=options.max_drop,
            drift=options.measurement.drift,
            attempts=decision.attempts,
            within_budget=decision.feasible,
            pareto=pareto,
            weights=weights,
        )
        return model, report

    def _decide(
        self, model: ir.Model, context: PassContext, sensitivity: str, change
    ) -> tuple[Decision, Problem, _Measure]:
        """Solve and verify on the model's current weights, with the drops of report `sensitivity`."""
        reference = change.reference_outputs if change else None
        measure = _Measure(model, context, self.options.measurement, reference)
        problem = _problem(context, sensitivity)
        decision = decide(problem, measure, self.options.max_drop, self.options.objective, measure.offset)
        return decision, problem, measure


def _swap_weights(model: ir.Model, weights: dict[str, ir.TensorProtocol]) -> None:
    """Put `weights` into the model's initializers."""
    for name, tensor in weights.items():
        model.graph.initializers[name].const_value = tensor


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


class _Measure:
    """Simulates whole mappings on the scoring data at the budget's drift time: one Attempt each."""

    def __init__(self, model: ir.Model, context: PassContext, measurement: Measurement, reference: np.ndarray | None):
        self.target = context.target
        self.measurement = measurement
        self.layers = context.reports["partition"].layers
        self.total_weights = context.reports["partition"].mappable_weights
        self.scorer = Scorer(model, scoring_dataset(model, context.config), reference, context.config.metric)
        ranges = context.reports["calibrate"].input_range
        self.measurer = Measurer(model, self.target, self.layers, ranges, self.scorer, context.config.seed)
        self.offset = 100 * (self.scorer.full_precision - self.scorer.model_metric)

    def __call__(self, mapping: dict[str, str], predicted: float) -> Attempt:
        what = f"the mapping with {sum(o == ANALOG for o in mapping.values())} analog layers"
        per_time = self.measurer.measure(mapping, [self.measurement.t_inference_s], self.measurement.seeds, what)
        drops = 100 * (self.scorer.full_precision - np.array(per_time[0]))
        analog = [l for l in self.layers if mapping[l.name] == ANALOG]
        return Attempt(
            mapping=dict(mapping),
            predicted_drop_points=predicted,
            measured_drop_points=float(drops.mean()),
            measured_std_points=float(drops.std()),
            energy_pj=mapping_energy_pj(self.layers, mapping, self.target),
            analog_weight_share=sum(l.weight_count for l in analog) / self.total_weights,
        )

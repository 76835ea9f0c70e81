"""Assign: one option per mappable layer.

With `--mapping` the user's mapping (a file or a preset) is taken as given.
Otherwise the assignment MILP (hetmap.mapping.solver) minimises energy, or
maximises the analog weight share, under the accuracy budget and the tile
capacity, on the additive model of the sensitivity report. The chosen
mapping is then simulated; when the measured drop breaks the budget, the
drops of its choices are scaled by measured/predicted, the mapping is cut
off, and the MILP solved again, a bounded number of rounds
(hetmap.mapping.search). The mapping that ships is a measured one.

After a fine-tune that lost accuracy on a mapping it scored (all-analog or
all-digital, finetune's report), the same is done on the weights from
before it (with the sensitivity measured then; finetune's result hands
both weights on), and those weights ship instead when their mapping is
strictly better (verified on the held-out data, when there is some): a
short fine-tune can cost the noiseless model more of the budget than it
wins back, and must not make the result worse. A fine-tune that lost at
neither end is not second-guessed: that would double assign's work.

Every decision above is made on the decision part of the data. The best
candidates are then verified once each on the held-out verification part
(hetmap.sim.confidence): the first whose confidence interval lies within the
budget ships. Candidates come by objective, then from a ladder of solves at
shrinking shares of the budget (narrower intervals), then the harbours.
When none does, the one with the lowest upper bound ships, marked over the
budget when its whole interval is, else inconclusive, with a note of how
many samples would resolve the budget. Where the held-out data is too small
for any mapping to verify the budget, candidates go best objective first and
stop at one that changed no held-out sample: no candidate after it could
have both a lower upper bound and a better objective
(hetmap.verification.choose_verified).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx_ir as ir

from hetmap.mapping.cost import dram_surcharge_pj_per_byte, layer_cost, mapping_energy_pj, weight_bytes
from hetmap.mapping.mapping import ANALOG, Mapping, target_options, validate
from hetmap.mapping.search import Attempt, Decision, best, decide, solve_and_verify
from hetmap.mapping.solver import Problem
from hetmap.pipeline import Pass, PassContext, scoring_dataset, verification_dataset, whole_mapping_measurer
from hetmap.sim.confidence import WITHIN, VerifiedDrop
from hetmap.sim.measure import Measurement
from hetmap.sim.scorer import Scorer
from hetmap.verification import Verifier, choose_verified, put_weights

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
    confidence: float = 0.95  # of the verified drop's interval; 0: the mean alone decides


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
    # After a fine-tune that lost, the mapping is solved on both weights and ships with the better: "fine-tuned" or
    # "before fine-tuning"; after one that lost at neither end, on the fine-tuned weights alone.
    weights: str = "as given"
    weights_compared: bool = False  # the weights from before fine-tuning were decided on too (the fine-tune lost)
    verification: Verification | None = None


@dataclass
class Verification:
    """The shipped mapping's drop on the held-out data, and what it says of the budget."""

    data: str
    samples: int
    seeds: int
    held_out: bool  # False when the data was too small to split: verified on the decision data
    confidence: float
    drop_points: float
    low_points: float
    high_points: float
    verdict: str  # within, over or inconclusive (hetmap.sim.confidence)
    note: str = ""  # when the data cannot verify the budget: how many samples would
    metric: str = ""  # on this data (agreement where it has no labels, though the decision data had)
    full_precision: float | None = None  # the user's model's metric on this data, a fraction


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
        unadapted = None
        compared = bool(change and change.before and "sensitivity_before" in context.reports and _lost(finetune))
        if compared:
            put_weights(model, change.before)
            unadapted = self._decide(model, context, "sensitivity_before", change)
            put_weights(model, change.after)
        verify_data = verification_dataset(model, context.config)
        if verify_data is None:
            if unadapted is not None and unadapted[0].beats(chosen[0], options.objective):
                chosen, weights = unadapted, "before fine-tuning"
                put_weights(model, change.before)
            decision, problem, measure = chosen
            shipped, verification = decision.best, None
        else:
            # Both weights are verified and the better verified result ships: a fine-tune can win on the
            # decision data and still verify worse (its all-digital harbour may be worse than the original's).
            adapted = change if weights == "fine-tuned" else None
            shipped, verification = self._verified(model, context, chosen, verify_data, adapted)
            if unadapted is not None:
                put_weights(model, change.before)
                other = self._verified(model, context, unadapted, verify_data, None)
                if _verified_better(other, (shipped, verification), options):
                    (shipped, verification), chosen, weights = other, unadapted, "before fine-tuning"
                else:
                    put_weights(model, change.after)
            decision, problem, measure = chosen
        pareto = []
        if options.pareto:
            for budget in PARETO_BUDGETS:
                pareto += solve_and_verify(problem, measure, budget, options.objective, measure.offset)[-1:]
        report = AssignReport(
            source="solver",
            mapping=Mapping(dict(shipped.mapping)),
            objective=options.objective,
            max_drop_points=options.max_drop,
            drift=options.measurement.drift,
            attempts=decision.attempts,
            within_budget=verification.verdict == WITHIN if verification else decision.feasible,
            pareto=pareto,
            weights=weights,
            weights_compared=compared,
            verification=verification,
        )
        return model, report

    def _verified(self, model, context, chosen, verify_data, change) -> tuple[Attempt, Verification]:
        """The candidate that ships from `chosen` on the model's current weights, by held-out verification."""
        decision, problem, measure = chosen
        options = self.options
        users = change.before if change else None
        verifier = Verifier(model, context, options.measurement, options.confidence, verify_data, users)
        shipped, drop = choose_verified(
            decision, problem, measure, verifier, options.max_drop, options.objective, measure.offset
        )
        return shipped, _summary(verifier, drop, options.max_drop)

    def _decide(
        self, model: ir.Model, context: PassContext, sensitivity: str, change
    ) -> tuple[Decision, Problem, _Measure]:
        """Solve and verify on the model's current weights, with the drops of report `sensitivity`."""
        reference = change.reference_outputs if change else None
        measure = _Measure(model, context, self.options.measurement, reference)
        problem = _problem(context, sensitivity)
        decision = decide(problem, measure, self.options.max_drop, self.options.objective, measure.offset)
        return decision, problem, measure


def _lost(finetune) -> bool:
    """Whether fine-tuning lowered the score of a mapping it scored at the drift time (all-analog, all-digital)."""
    before = {score.mapping: score.mean for score in finetune.before}
    return any(score.mean < before[score.mapping] for score in finetune.after if score.drift)


def _verified_better(challenger: tuple, holder: tuple, options: AssignOptions) -> bool:
    """Strictly better: within the budget where the other is not, then the objective, else the lower upper bound."""
    (attempt, verification), (held, held_verification) = challenger, holder
    within, held_within = (v.verdict == WITHIN for v in (verification, held_verification))
    if within != held_within:
        return within
    if within:
        return best([held, attempt], options.objective) is attempt  # ties go to the holder
    return verification.high_points < held_verification.high_points


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
    # An option whose measuring stopped once it was sure to break every budget: the solver never needs it.
    at_least = np.array([[sensitivity[l.name][o].at_least for o in options] for l in layers], dtype=bool)
    masked = allowed & ~at_least
    allowed = np.where(masked.any(axis=1, keepdims=True), masked, allowed)
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
        self.measurer = whole_mapping_measurer(model, context, self.scorer)
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


def _summary(verifier: Verifier, drop: VerifiedDrop, budget: float) -> Verification:
    """The report's verification: the verdict and interval, and when the data cannot verify the budget, why."""
    verdict = drop.verdict(budget)
    note = ""
    if verdict != WITHIN and drop.high_points - drop.low_points > budget:
        needed = drop.samples_needed(budget)
        remedy = (
            f"about {needed} samples would narrow it to the budget"
            if needed
            else "no number of samples can, at a budget of 0"
        )
        note = (
            f"the {drop.samples} {'held-out ' if verifier.held_out else ''}samples cannot verify a {budget:g}-point "
            f"budget: the {drop.confidence:.0%} interval is {drop.high_points - drop.low_points:.2f} points wide; "
            f"{remedy}"
        )
    return Verification(
        data=verifier.scorer.dataset.source,
        samples=drop.samples,
        seeds=drop.seeds,
        held_out=verifier.held_out,
        confidence=drop.confidence,
        drop_points=drop.mean_points,
        low_points=drop.low_points,
        high_points=drop.high_points,
        verdict=verdict,
        note=note,
        metric=verifier.scorer.metric.name,
        full_precision=verifier.scorer.full_precision,
    )

"""Verification: a mapping's drop on the held-out data, with its confidence interval, against the user's model.

Assign verifies its candidates with it, and refine the weights it trained,
so both measure alike: at the budget's drift time over the same seeds,
per sample, paired with the user's model's own results on the same data.
`choose_verified` is the rule by which one of assign's candidates ships.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import onnx_ir as ir
from scipy.stats import norm

from hetmap.mapping.mapping import ANALOG
from hetmap.mapping.search import Attempt, Decision, best, rank, safest, solve_and_verify
from hetmap.mapping.solver import Problem, predicted_drop
from hetmap.pipeline import PassContext, whole_mapping_measurer
from hetmap.sim.confidence import WITHIN, VerifiedDrop, verified_drop
from hetmap.sim.measure import Measurement
from hetmap.sim.scorer import Scorer


def put_weights(model: ir.Model, weights: dict[str, ir.TensorProtocol]) -> None:
    """Put `weights` into the model's initializers."""
    for name, tensor in weights.items():
        model.graph.initializers[name].const_value = tensor


class Verifier:
    """Scores mappings on the held-out verification data, against the model the user brought."""

    def __init__(
        self,
        model: ir.Model,
        context: PassContext,
        measurement: Measurement,
        confidence: float,
        data: tuple,
        users: dict[str, ir.TensorProtocol] | None = None,
    ):
        """`data`: (dataset, held out); `users`: the user's own weights where the model's differ (fine-tuned)."""
        dataset, self.held_out = data
        reference = None
        if users is not None:  # changed weights are measured against the user's model on this data too
            current = {name: model.graph.initializers[name].const_value for name in users}
            put_weights(model, users)
            reference = Scorer(model, dataset).reference
            put_weights(model, current)
        self.scorer = Scorer(model, dataset, reference, context.config.metric)
        self.measurer = whole_mapping_measurer(model, context, self.scorer)
        self.measurement, self.confidence = measurement, confidence

    def __call__(self, mapping: dict[str, str]) -> VerifiedDrop:
        measurement = self.measurement
        what = f"the mapping with {sum(o == ANALOG for o in mapping.values())} analog layers (verification)"
        per_time = self.measurer.measure(mapping, [measurement.t_inference_s], measurement.seeds, what, per_sample=True)
        continuous = self.scorer.metric.kind != "top1"
        return verified_drop(self.scorer.full_precision_per_sample, np.array(per_time[0]), self.confidence, continuous)


FIRST_VERIFIED = 2  # attempts at the whole budget verified first, by objective
LADDER = (0.5, 0.25, 0.125)  # shares of the budget the solver is asked again at while nothing verified
LADDER_ROUNDS = 2  # correction rounds per rung


def choose_verified(
    decision: Decision,
    problem: Problem,
    measure: Callable[[dict[str, str], float], Attempt],
    verify: Callable[[dict[str, str]], VerifiedDrop],
    budget: float,
    objective: str,
    offset: float = 0.0,
) -> tuple[Attempt, VerifiedDrop]:
    """Verify candidates on the held-out data, best first; the first within the budget ships.

    Candidates: the attempts within the budget on the decision data by
    objective (two), else the others by measured drop; then a ladder: the
    solver asked again at a half, a quarter, an eighth of the budget, each
    rung's best mapping within its smaller budget on the decision data (a
    mapping with a small drop changes few held-out samples, so its interval
    is narrow enough to verify where the budget's own mapping cannot be;
    climbed only when the held-out samples could verify the budget at all);
    then the safest mapping (each layer's least measured drop) and the
    all-widest-digital one, the harbour when the data cannot vouch for analog
    layers. Every mapping is measured on the decision data before it is
    verified (once: attempts are reused). When none is within, the one with
    the lowest upper bound ships, ties to the objective; where no mapping can
    be within, candidates go best objective first and stop at one whose bound
    is already a changeless mapping's (_at_floor), passing over attempts that
    broke the budget on the decision data from then on: 5 whole-network
    simulations instead of 8 on ResNet-50 with 256 samples.
    `offset`: the drop the noiseless weights already have (see solve_and_verify).
    """
    candidates = _Candidates(decision, measure, verify, budget)
    feasible = [a for a in decision.attempts if a.measured_drop_points <= budget]
    ordered = sorted(feasible, key=lambda a: rank(a, objective))
    ordered += sorted((a for a in decision.attempts if a not in feasible), key=lambda a: a.measured_drop_points)
    digital = next(o for o in problem.options if o != ANALOG)  # the widest digital unit comes first
    harbours = [safest(problem), dict.fromkeys(problem.layers, digital)]
    found = candidates.first_within(ordered[:1])
    first = candidates.verified[0][1]
    if not found and _narrowest_half_width(first) >= budget:
        return _lowest_upper_bound(candidates, [*ordered[1:FIRST_VERIFIED], *harbours], problem, objective, offset)
    found = found or candidates.first_within(ordered[1:FIRST_VERIFIED])
    for share in LADDER:
        if found:
            return found
        rung = solve_and_verify(problem, candidates.measured, budget * share, objective, offset, LADDER_ROUNDS)
        within = [a for a in rung if a.measured_drop_points <= budget * share]
        found = candidates.first_within([best(within, objective)] if within else [])
    for harbour in harbours:
        if found:
            return found
        found = candidates.first_within([candidates.measured(harbour, offset + predicted_drop(problem, harbour))])
    return found or candidates.lowest(objective)


class _Candidates:
    """Mappings as they are measured on the decision data (once each) and verified on the held-out data."""

    def __init__(self, decision: Decision, measure, verify, budget: float):
        self.decision, self.measure, self.verify, self.budget = decision, measure, verify, budget
        self.known = {_key(a.mapping): a for a in decision.attempts}
        self.verified: list[tuple[Attempt, VerifiedDrop]] = []

    def measured(self, mapping: dict[str, str], predicted: float) -> Attempt:
        """The mapping's attempt: measured now unless it was before (then kept among the decision's attempts)."""
        key = _key(mapping)
        if key not in self.known:
            self.known[key] = self.measure(mapping, predicted)
            self.decision.attempts.append(self.known[key])
        return self.known[key]

    def first_within(self, attempts: list[Attempt]) -> tuple[Attempt, VerifiedDrop] | None:
        """Verify `attempts` in order (each once) until one is within the budget."""
        for attempt in attempts:
            if any(attempt is done for done, _ in self.verified):
                continue
            drop = self.verify(attempt.mapping)
            attempt.verified_drop_points = drop.mean_points
            attempt.verified_low_points, attempt.verified_high_points = drop.low_points, drop.high_points
            self.verified.append((attempt, drop))
            if drop.verdict(self.budget) == WITHIN:
                return attempt, drop
        return None

    def lowest(self, objective: str) -> tuple[Attempt, VerifiedDrop]:
        """The verified attempt with the lowest upper bound, ties to the lower verified drop, then the objective
        (one held-out sample bounds every drop by +-100 points: the tie is the rule there)."""
        return min(self.verified, key=lambda pair: (pair[1].high_points, pair[1].mean_points, rank(pair[0], objective)))


def _lowest_upper_bound(
    candidates: _Candidates, pending: list, problem: Problem, objective: str, offset: float
) -> tuple[Attempt, VerifiedDrop]:
    """Where no mapping can be within the budget: the lowest upper bound ships, ties to the objective.

    `pending` (attempts, and mappings not yet measured) go best objective first, and stop once the best
    bound so far is a changeless mapping's (only one that fixes held-out samples on net could go below
    it) and none left has a better objective; an attempt that broke the budget on the decision data is
    not verified then (it would have to change no held-out sample).
    """
    for candidate in sorted(pending, key=lambda c: _rank_of(c, problem, objective)):
        holder, drop = candidates.lowest(objective)
        if _at_floor(drop) and _rank_of(candidate, problem, objective) >= rank(holder, objective):
            break
        if _at_floor(drop) and isinstance(candidate, Attempt) and candidate.measured_drop_points > candidates.budget:
            continue
        if isinstance(candidate, dict):
            candidate = candidates.measured(candidate, offset + predicted_drop(problem, candidate))
        candidates.first_within([candidate])
    return candidates.lowest(objective)


def _at_floor(drop: VerifiedDrop) -> bool:
    """Whether the upper bound is that of a mapping changing no held-out sample (or lower), and it broke none."""
    return drop.high_points <= _narrowest_half_width(drop) * (1 + 1e-9) and drop.mean_points <= 0


def _rank_of(candidate: Attempt | dict[str, str], problem: Problem, objective: str) -> tuple[float, ...]:
    """An attempt's rank, or a mapping's before it is measured: its energy on the additive model, which never
    exceeds the measured attempt's (that adds reloaded tiles), so no mapping that could win is passed over."""
    if isinstance(candidate, Attempt):
        return rank(candidate, objective)
    chosen = [(i, problem.options.index(candidate[name])) for i, name in enumerate(problem.layers)]
    energy = sum(problem.energy_pj[i, j] for i, j in chosen)
    if problem.weight_bytes is not None and problem.weight_sram_bytes:
        spilled = sum(problem.weight_bytes[i, j] for i, j in chosen) - problem.weight_sram_bytes
        energy += problem.dram_surcharge_pj_per_byte * max(spilled, 0.0)
    analog = sum(problem.weights[i] for i, j in chosen if problem.options[j] == ANALOG) / problem.weights.sum()
    return rank(Attempt(candidate, 0.0, 0.0, 0.0, float(energy), float(analog)), objective)


def _narrowest_half_width(drop: VerifiedDrop) -> float:
    """Half the interval of a mapping that changes no held-out sample (only the two pseudo-samples spread it), on
    `drop`'s samples and confidence: 0 for a continuous score, whose pseudo-samples are as large as its changes.

    No mapping verifies a budget below it, so the ladder is not climbed then.
    """
    if drop.confidence <= 0 or drop.continuous:
        return 0.0
    if drop.samples < 2:
        return math.inf
    return float(norm.ppf(0.5 + drop.confidence / 2) * math.sqrt(2 * 100.0**2 / (drop.samples + 1) / drop.samples))


def _key(mapping: dict[str, str]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(mapping.items()))

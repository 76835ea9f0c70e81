"""Assign's decision loop: solve the additive model, measure the mapping, correct, repeat.

The measurement is a function the caller gives (assign simulates the whole
mapping), so the loop is data in, data out: a Problem, a budget, and the
measured attempts in the order they were made.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from hetmap.errors import HetmapError
from hetmap.mapping.solver import Problem, least_drop, predicted_drop, solve

CORRECTION_ROUNDS = 4
PESSIMISM = 0.9  # measured below this share of predicted: the model had slack to spend


@dataclass
class Attempt:
    mapping: dict[str, str]
    predicted_drop_points: float
    measured_drop_points: float  # on the data the decisions are made on
    measured_std_points: float
    energy_pj: float
    analog_weight_share: float
    # On the held-out verification data, when assign verified it: the mean and its confidence interval.
    verified_drop_points: float | None = None
    verified_low_points: float | None = None
    verified_high_points: float | None = None


Measure = Callable[[dict[str, str], float], Attempt]  # (mapping, predicted drop) -> the measured attempt


@dataclass
class Decision:
    """The attempts of one solve-and-verify run and the one it keeps."""

    attempts: list[Attempt]
    best: Attempt
    feasible: bool  # the kept attempt is within the budget

    def beats(self, other: Decision, objective: str) -> bool:
        """Strictly better: within the budget where the other is not, a better objective, or (both over) a smaller drop."""
        if self.feasible != other.feasible:
            return self.feasible
        if not self.feasible:
            return self.best.measured_drop_points < other.best.measured_drop_points
        return best([other.best, self.best], objective) is self.best  # ties go to the other


def decide(problem: Problem, measure: Measure, budget: float, objective: str, offset: float = 0.0) -> Decision:
    """Solve and verify; keep the best attempt within the budget, else the one with the smallest drop."""
    attempts = solve_and_verify(problem, measure, budget, objective, offset)
    feasible = [a for a in attempts if a.measured_drop_points <= budget]
    kept = best(feasible, objective) if feasible else min(attempts, key=lambda a: a.measured_drop_points)
    return Decision(attempts, kept, bool(feasible))


def best(attempts: list[Attempt], objective: str) -> Attempt:
    return min(attempts, key=lambda a: rank(a, objective))


def rank(attempt: Attempt, objective: str) -> tuple[float, ...]:
    """Sort key under the objective: the better attempt sorts first (least energy, or most analog weights)."""
    if objective == "energy":
        return (attempt.energy_pj,)
    return (-attempt.analog_weight_share, attempt.energy_pj)


def solve_and_verify(
    problem: Problem,
    measure: Measure,
    budget: float,
    objective: str,
    offset: float = 0.0,
    rounds: int = CORRECTION_ROUNDS,
) -> list[Attempt]:
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
    for _ in range(rounds):
        mapping = solve(problem, max(budget - offset, 0.0), objective, tried)
        if mapping is None and attempts:
            break
        mapping = mapping or safest(problem)
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


def safest(problem: Problem) -> dict[str, str]:
    """The mapping within the tile capacity with the least predicted drop, the least energy among ties.

    Not each layer's own safest option: where those all drop nothing (one calibration sample, say),
    that is the cheapest option, analog, on more layers than the tiles hold.
    """
    mapping = least_drop(problem)
    if mapping is None:  # digital options are always allowed, so only a malformed problem gets here
        raise HetmapError("solver: no mapping fits the target's analog tiles")
    return mapping

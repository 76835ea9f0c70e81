"""Assign's decision loop on small in-line problems: solve and verify, the safest fallback, two decisions compared.

The measurement is a plain function with the drops each option really
costs (TRUE), so each test states what the additive model predicts, what
measurement finds, and what the loop must do about the difference.
"""

import numpy as np

from hetmap.mapping.search import Attempt, Decision, decide, safest, solve_and_verify
from hetmap.mapping.solver import Problem

OPTIONS = ["analog", "int8"]
ENERGY = {"analog": 1.0, "int8": 5.0}


def problem(drop, allowed=None, energy=None):
    """Layers l0, l1, ... with predicted drops [layer, (analog, int8)]; analog costs 1, int8 5 unless given."""
    drop = np.array(drop, float)
    energy = np.array(energy, float) if energy is not None else np.tile([ENERGY[o] for o in OPTIONS], (len(drop), 1))
    allowed = np.array(allowed, bool) if allowed is not None else np.ones(drop.shape, bool)
    ones = np.ones(len(drop))
    return Problem([f"l{i}" for i in range(len(drop))], OPTIONS, drop, energy, ones, ones, len(drop), allowed)


def measurer(true_drop: dict[str, float]):
    """Measures a mapping as the sum of each chosen option's true drop; records what it was asked."""
    asked = []

    def measure(mapping: dict[str, str], predicted: float) -> Attempt:
        asked.append(dict(mapping))
        drop = sum(true_drop[option] for option in mapping.values())
        analog = sum(option == "analog" for option in mapping.values()) / len(mapping)
        energy = sum(ENERGY[option] for option in mapping.values())
        return Attempt(dict(mapping), predicted, drop, 0.0, energy, analog)

    measure.asked = asked
    return measure


def analog_count(attempt: Attempt) -> int:
    return list(attempt.mapping.values()).count("analog")


def attempt(drop: float, energy: float, share: float = 0.0) -> Attempt:
    return Attempt({}, 0.0, drop, 0.0, energy, share)


# Solve and verify.


def test_an_optimistic_model_learns_from_the_measurement_and_meets_the_budget():
    # predicted 0.1 per analog layer, really 0.4: all-analog (1.2) breaks the 0.5 budget
    p = problem([[0.1, 0.0]] * 3)
    attempts = solve_and_verify(p, measurer({"analog": 0.4, "int8": 0.0}), budget=0.5, objective="energy")
    assert [analog_count(a) for a in attempts] == [3, 1]
    assert attempts[0].measured_drop_points > 0.5 >= attempts[-1].measured_drop_points
    assert attempts[1].predicted_drop_points == 0.4  # the analog drops were scaled by measured / predicted


def test_a_pessimistic_model_frees_slack_for_a_better_mapping():
    # predicted 0.3 per analog layer, really 0.05: the first solve dares one analog layer, measurement allows all
    p = problem([[0.3, 0.0]] * 3)
    decision = decide(p, measurer({"analog": 0.05, "int8": 0.0}), budget=0.5, objective="energy")
    assert analog_count(decision.attempts[0]) == 1
    assert decision.feasible and analog_count(decision.best) == 3


def test_the_loop_leaves_the_callers_problem_unchanged():
    p = problem([[0.1, 0.0]] * 3)
    solve_and_verify(p, measurer({"analog": 0.4, "int8": 0.0}), budget=0.5, objective="energy")
    assert np.array_equal(p.drop, [[0.1, 0.0]] * 3)


def test_a_mapping_already_measured_is_never_measured_again():
    measure = measurer({"analog": 0.4, "int8": 0.3})
    solve_and_verify(problem([[0.1, 0.05]] * 3), measure, budget=0.5, objective="energy")
    assert len({tuple(sorted(m.items())) for m in measure.asked}) == len(measure.asked)


def test_the_offset_counts_against_the_budget():
    # the noiseless weights already lose 0.4 points: 0.1 of budget is left for the layers
    p = problem([[0.1, 0.0]] * 3)
    attempts = solve_and_verify(p, measurer({"analog": 0.1, "int8": 0.0}), budget=0.5, objective="energy", offset=0.4)
    assert analog_count(attempts[0]) == 1 and attempts[0].predicted_drop_points == 0.5


# The safest fallback.


def test_when_no_mapping_fits_the_model_the_safest_one_is_measured():
    # every int8 layer is predicted to cost 0.2: even all-int8 (0.6) breaks the 0.5 budget on paper
    p = problem([[1.0, 0.2]] * 3)
    attempts = solve_and_verify(p, measurer({"analog": 1.0, "int8": 0.1}), budget=0.5, objective="energy")
    assert attempts[0].mapping == {"l0": "int8", "l1": "int8", "l2": "int8"}
    assert attempts[0].measured_drop_points <= 0.5  # measurement decides, not the model


def test_safest_takes_the_smallest_drop_then_the_least_energy_among_allowed_options():
    p = problem(
        drop=[[0.0, 0.0], [0.5, 0.1], [0.0, 0.3]],
        allowed=[[True, True], [True, True], [False, True]],
        energy=[[4.0, 2.0], [1.0, 5.0], [1.0, 5.0]],
    )
    assert safest(p) == {"l0": "int8", "l1": "int8", "l2": "int8"}


def test_safest_fits_the_tiles_when_each_layers_own_safest_option_would_not():
    # nothing drops anywhere (one calibration sample), so each layer alone would take analog, the cheapest;
    # two tiles hold two of the three layers, and the third pays for int8
    p = problem(drop=[[0.0, 0.0]] * 3)
    p = Problem(p.layers, p.options, p.drop, p.energy_pj, p.weights, p.tiles, 2, p.allowed)
    assert analog_count(Attempt(safest(p), 0.0, 0.0, 0.0, 0.0, 0.0)) == 2


def test_safest_prefers_the_least_drop_over_energy_within_the_tiles():
    # l1's analog drops 0.3: with one tile, l0 takes it (no drop) and l1 stays int8 (0.1)
    p = problem(drop=[[0.0, 0.2], [0.3, 0.1]])
    p = Problem(p.layers, p.options, p.drop, p.energy_pj, p.weights, p.tiles, 1, p.allowed)
    assert safest(p) == {"l0": "analog", "l1": "int8"}


def test_decide_keeps_the_smallest_drop_when_nothing_is_within_budget():
    measure = measurer({"analog": 1.0, "int8": 0.4})
    decision = decide(problem([[1.0, 0.4]] * 2), measure, budget=0.5, objective="energy")
    assert not decision.feasible
    assert decision.best.measured_drop_points == min(a.measured_drop_points for a in decision.attempts)


# Two decisions compared (fine-tuned weights against the weights before fine-tuning).


def test_within_budget_beats_over_budget():
    within, over = Decision([], attempt(0.4, 9.0), True), Decision([], attempt(0.1, 1.0), False)
    assert within.beats(over, "energy") and not over.beats(within, "energy")


def test_over_budget_both_the_smaller_drop_wins():
    worse, better = Decision([], attempt(0.9, 1.0), False), Decision([], attempt(0.7, 9.0), False)
    assert better.beats(worse, "energy") and not worse.beats(better, "energy")


def test_within_budget_both_the_objective_decides():
    cheap, share = Decision([], attempt(0.3, 2.0, share=0.5), True), Decision([], attempt(0.3, 4.0, share=0.9), True)
    assert cheap.beats(share, "energy") and not share.beats(cheap, "energy")
    assert share.beats(cheap, "analog-share") and not cheap.beats(share, "analog-share")


def test_a_tie_is_not_strictly_better():
    one, other = Decision([], attempt(0.3, 2.0), True), Decision([], attempt(0.2, 2.0), True)
    assert not one.beats(other, "energy") and not other.beats(one, "energy")

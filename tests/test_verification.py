"""Held-out verification: a disjoint seeded split, a paired confidence interval, and the rule that ships a mapping.

The verifier in the rule's tests is synthetic: each mapping's per-sample
scores are drawn so that its true drop is known, and the test states what
the interval says and which mapping must ship.
"""

import dataclasses

import numpy as np
import pytest

from hetmap.graph.data import Dataset, split_dataset
from hetmap.mapping.search import Attempt, Decision
from hetmap.mapping.solver import Problem
from hetmap.sim.confidence import INCONCLUSIVE, OVER, WITHIN, verified_drop
from hetmap.verification import choose_verified


def labelled(samples: int = 300, classes: int = 3) -> Dataset:
    x = np.arange(samples, dtype=np.float32)[:, None]
    return Dataset({"x": x, "k": np.array(2, np.int64)}, np.arange(samples) % classes, "data.npz")


# The split.


def test_the_split_is_disjoint_whole_seeded_and_stratified():
    data = labelled()
    decide, verify = split_dataset(data, 0.5, seed=7)
    ids = lambda part: set(part.inputs["x"][:, 0].astype(int))  # noqa: E731
    assert ids(decide).isdisjoint(ids(verify)) and ids(decide) | ids(verify) == set(range(300))
    assert [int((verify.labels == c).sum()) for c in range(3)] == [50, 50, 50]  # half of each class
    assert verify.inputs["k"] == 2 and decide.source == verify.source == "data.npz"
    again, _ = split_dataset(data, 0.5, seed=7)
    other, _ = split_dataset(data, 0.5, seed=8)
    assert np.array_equal(again.inputs["x"], decide.inputs["x"])
    assert not np.array_equal(other.inputs["x"], decide.inputs["x"])


def test_the_split_keeps_whole_batches_of_a_fixed_batch_model():
    decide, verify = split_dataset(labelled(301), 0.5, seed=0, multiple=4)
    assert decide.size % 4 == 0 and verify.size % 4 == 0 and decide.size + verify.size >= 301 - 6


# The interval.


def scores(true_drop_points: float, samples: int, seeds: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Full precision right on every sample; the mapping wrong on a share true_drop of them, per draw."""
    rng = np.random.default_rng(seed)
    return np.ones(samples), (rng.random((seeds, samples)) >= true_drop_points / 100).astype(float)


def test_the_interval_covers_the_true_drop_at_its_confidence():
    covered = 0
    for trial in range(200):
        drop = verified_drop(*scores(2.0, 500, 3, seed=trial), confidence=0.9)
        covered += drop.low_points <= 2.0 <= drop.high_points
    assert 0.85 <= covered / 200 <= 0.98  # conservative by design, not wildly


def test_the_interval_narrows_with_samples_and_says_how_many_would_do():
    narrow = verified_drop(*scores(1.0, 20000, 3), confidence=0.95)
    wide = verified_drop(*scores(1.0, 200, 3), confidence=0.95)
    assert wide.high_points - wide.low_points > 4 * (narrow.high_points - narrow.low_points)
    needed = wide.samples_needed(0.5)
    assert needed > 200 and wide.samples_needed(100.0) == 200 and wide.samples_needed(0.0) is None


def test_a_continuous_score_gets_an_interval_of_its_own_spread():
    """Cosine moves each sample a little: +-100-point pseudo-samples held 271 samples near +-1 point regardless."""
    rng = np.random.default_rng(0)
    mapped = 1 - np.abs(rng.normal(0.002, 0.001, (3, 271)))  # about 0.2 points of cosine lost per sample
    continuous = verified_drop(np.ones(271), mapped, confidence=0.95, continuous=True)
    assert continuous.low_points <= 0.2 <= continuous.high_points and continuous.verdict(0.5) == WITHIN
    assert continuous.high_points - continuous.low_points < 0.1
    as_top1 = verified_drop(np.ones(271), mapped, confidence=0.95)
    assert as_top1.high_points - as_top1.low_points > 1.5


def test_confidence_zero_is_the_mean_rule():
    drop = verified_drop(*scores(1.0, 200, 3), confidence=0)
    assert drop.low_points == drop.mean_points == drop.high_points
    assert drop.verdict(drop.mean_points) == WITHIN and drop.verdict(drop.mean_points - 1e-9) == OVER


# The rule that ships a mapping, with a synthetic verifier of known drops.

TRUE_DROP = {"analog": 3.0, "int4": 0.4, "int8": 0.2}  # one layer: aggressive, moderate, safe


def decision_with(measured: dict[str, float]) -> tuple[Decision, Problem]:
    """One layer; each named mapping puts it on an option of that name, with its drop measured on the decision data."""
    attempts = [
        Attempt({"l0": name}, 0.0, drop, 0.0, energy_pj=1.0 + i, analog_weight_share=1.0 - i / 3)
        for i, (name, drop) in enumerate(measured.items())
    ]
    options = ["analog", "int8", "int4"]  # as target_options orders them: the widest digital unit first
    problem = Problem(
        ["l0"], options, np.array([[5.0, 0.0, 1.0]]), np.array([[1.0, 3.0, 2.0]]), np.ones(1), np.ones(1), 1,
        np.ones((1, 3), bool),
    )  # fmt: skip
    return Decision(attempts, attempts[0], True), problem


def synthetic_verifier(samples: int, seeds: int = 3):
    asked = []

    def verify(mapping):
        asked.append(mapping["l0"])
        return verified_drop(*scores(TRUE_DROP[mapping["l0"]], samples, seeds, seed=len(asked)), confidence=0.95)

    verify.asked = asked
    return verify


def no_measure(mapping, predicted):
    raise AssertionError("the safest mapping was an attempt already")


def test_a_lucky_measurement_is_refused_when_the_held_out_interval_breaks_the_budget():
    """Analog measured 0.2 on the decision data (a winner's curse); held out, its interval is near 3."""
    decision, problem = decision_with({"analog": 0.2, "int4": 0.3, "int8": 0.0})
    verify = synthetic_verifier(samples=20000)
    shipped, drop = choose_verified(decision, problem, no_measure, verify, budget=1.0, objective="analog-share")
    assert verify.asked == ["analog", "int4"]
    assert shipped.mapping == {"l0": "int4"} and drop.verdict(1.0) == WITHIN
    assert decision.attempts[0].verified_low_points > 1.0  # the refused one carries its interval


def test_when_the_data_cannot_tell_the_lowest_upper_bound_ships_inconclusive():
    decision, problem = decision_with({"analog": 0.2, "int4": 0.3, "int8": 0.0})
    verify = synthetic_verifier(samples=150)
    shipped, drop = choose_verified(decision, problem, no_measure, verify, 0.5, "analog-share")
    assert verify.asked == ["analog", "int4", "int8"]  # none was within: all were verified
    lowest = min(decision.attempts, key=lambda a: a.verified_high_points)
    assert shipped is lowest and drop.high_points == lowest.verified_high_points
    assert drop.verdict(0.5) == INCONCLUSIVE and drop.high_points - drop.low_points > 0.5


def test_with_one_held_out_sample_the_tie_of_bounds_goes_to_the_lower_verified_drop():
    """One sample bounds every drop by +-100 points: the mapping that broke it must not ship for its objective."""
    decision, problem = decision_with({"analog": 0.2, "int4": 0.3, "int8": 0.0})
    broken = {"analog": True, "int4": False, "int8": False}

    def verify(mapping):
        return verified_drop(np.ones(1), np.full((3, 1), 0.0 if broken[mapping["l0"]] else 1.0), confidence=0.95)

    shipped, drop = choose_verified(decision, problem, no_measure, verify, 0.5, "analog-share")
    assert (drop.low_points, drop.high_points) == (-100.0, 100.0) and drop.mean_points == 0.0
    assert shipped.mapping == {"l0": "int4"}  # the better objective of the two that broke nothing


def test_the_safest_mapping_is_measured_then_verified_when_no_attempt_was_it():
    decision, problem = decision_with({"analog": 0.2, "int4": 0.3})
    measured = []

    def measure(mapping, predicted):
        measured.append(mapping)
        return Attempt(dict(mapping), predicted, 0.0, 0.0, 3.0, 0.0)

    shipped, _ = choose_verified(decision, problem, measure, synthetic_verifier(samples=20000), 0.1, "analog-share")
    assert measured == [{"l0": "int8"}] and shipped.mapping == {"l0": "int8"}
    assert decision.attempts[-1].mapping == {"l0": "int8"}  # the report lists it with the others


@pytest.mark.parametrize("objective, first", [("energy", "analog"), ("analog-share", "analog")])
def test_candidates_are_verified_best_objective_first(objective, first):
    decision, problem = decision_with({"analog": 0.2, "int4": 0.3, "int8": 0.0})
    verify = synthetic_verifier(samples=20000)
    choose_verified(decision, problem, no_measure, verify, 5.0, objective)
    assert verify.asked == [first]


def recording_measure():
    """A measure of the one-layer problem (0.3 points on the decision data) that records the options it was asked."""
    measured = []

    def measure(mapping, predicted):
        measured.append(mapping["l0"])
        return Attempt(dict(mapping), predicted, 0.3, 0.0, {"int4": 2.0, "int8": 3.0}[mapping["l0"]], 0.0)

    return measured, measure


def test_the_ladder_solves_at_a_smaller_budget_before_falling_back_to_all_digital():
    """The budget's own mapping fails held out; the solver's mapping at half the budget verifies, before the harbour."""
    decision, problem = decision_with({"analog": 0.2})
    measured, measure = recording_measure()
    verify = synthetic_verifier(samples=20000)
    shipped, drop = choose_verified(decision, problem, measure, verify, 2.0, "analog-share")
    assert measured[0] == "int4" and verify.asked == ["analog", "int4"]
    assert shipped.mapping == {"l0": "int4"} and drop.verdict(2.0) == WITHIN


def test_the_ladder_is_not_climbed_when_no_mapping_could_verify_the_budget():
    """50 held-out samples: even a mapping that changes none has an interval wider than 2 points; the harbour is next."""
    decision, problem = decision_with({"analog": 0.2})
    measured, measure = recording_measure()
    choose_verified(decision, problem, measure, synthetic_verifier(samples=50), 2.0, "analog-share")
    assert measured == ["int8"]


def test_the_weights_guard_prefers_within_then_the_objective_then_the_lower_upper_bound():
    from hetmap.passes.assign import AssignOptions, Verification, _verified_better

    def outcome(share: float, high: float, verdict: str):
        attempt = Attempt({"fc": "analog"}, 0.0, 0.2, 0.1, 1.0, share)
        return attempt, Verification("held out", 100, 3, True, 0.95, 0.2, -0.3, high, verdict)

    options = AssignOptions(objective="analog-share", max_drop=0.5)
    fine_tuned_over, original_within = outcome(0.9, 1.5, INCONCLUSIVE), outcome(0.0, 0.4, WITHIN)
    assert _verified_better(original_within, fine_tuned_over, options)  # a better share does not beat the budget
    assert not _verified_better(outcome(0.5, 0.4, WITHIN), outcome(0.9, 0.45, WITHIN), options)
    assert not _verified_better(outcome(0.9, 0.4, WITHIN), outcome(0.9, 0.45, WITHIN), options)  # ties: the holder
    assert _verified_better(outcome(0.0, 1.2, OVER), outcome(0.9, 1.6, OVER), options)


def test_where_no_mapping_can_verify_the_budget_a_candidate_that_changed_nothing_ships_at_once():
    """150 held-out samples cannot verify 0.5 points; analog broke no held-out sample, so nothing could do better:
    a candidate of a worse objective is not verified, nor one of a better objective that broke the budget on the
    decision data, and no harbour is measured."""
    decision, problem = decision_with({"analog": 0.2, "int4": 0.3})
    asked = []

    def verify(mapping):
        asked.append(mapping["l0"])
        return verified_drop(np.ones(150), np.ones((3, 150)), confidence=0.95)

    shipped, drop = choose_verified(decision, problem, no_measure, verify, 0.5, "analog-share")
    assert asked == ["analog"] and shipped.mapping == {"l0": "analog"}
    assert drop.verdict(0.5) == INCONCLUSIVE and drop.mean_points == 0.0
    decision, problem = decision_with({"analog": 0.2, "int4": 5.0})
    decision.attempts[1].analog_weight_share, decision.attempts[1].energy_pj = 1.0, 0.5  # better, but over budget
    asked.clear()
    shipped, _ = choose_verified(decision, problem, no_measure, verify, 0.5, "analog-share")
    assert asked == ["analog"] and shipped.mapping == {"l0": "analog"}
    verifiable, _ = choose_verified(
        *decision_with({"analog": 0.2, "int4": 0.3}), no_measure, verify, 2.0, "analog-share"
    )
    assert verifiable.mapping == {"l0": "analog"}  # within a budget the data can verify: the usual rule


def test_where_no_mapping_can_verify_the_budget_a_harbour_of_less_energy_ties_the_bound_and_ships():
    """As on ResNet-50 with 256 samples: the solver's mapping changed no held-out sample, and the safest mapping
    (here int8) would too at less energy: it is measured and verified, and ships; the rest cannot win."""
    decision, problem = decision_with({"int4": 0.3, "analog": 5.0})  # energies 1 and 2
    problem = dataclasses.replace(problem, energy_pj=np.array([[2.0, 0.5, 1.0]]))  # analog, int8, int4
    asked, measured = [], []

    def verify(mapping):
        asked.append(mapping["l0"])
        return verified_drop(np.ones(150), np.ones((3, 150)), confidence=0.95)

    def measure(mapping, predicted):
        measured.append(mapping["l0"])
        return Attempt(dict(mapping), predicted, 0.0, 0.0, 0.5, 0.0)

    shipped, drop = choose_verified(decision, problem, measure, verify, 0.5, "energy")
    assert asked == ["int4", "int8"] and measured == ["int8"] and shipped.mapping == {"l0": "int8"}

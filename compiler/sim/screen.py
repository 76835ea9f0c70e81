"""Which samples a perturbation can still change: top-1 gaps, so measurements skip the rest.

A top-1 metric (accuracy or agreement) changes on a sample only when the
perturbation moves its arg-max, which takes a change of at least half the
gap between its two best scores. Measurements therefore run the samples in
order of that gap relative to the output's size, smallest first, and a
variant (one option, one draw) is settled once every sample left has a
relative gap more than SAFETY times twice the largest relative change the
variant caused on any sample so far: the rows it skips keep the unperturbed
outputs. The measured rows are exact, so a result changes only if a skipped
sample would have flipped under a change SAFETY times larger than any seen.

Sensitivity also stops an option whose drop can no longer fit the budget:
`Track.drop_at_least` counts the score the measured rows lost, less what
every sample left that could still flip (by the rule above) could win back.
Continuous metrics (cosine, snr) have no gap: every sample counts and none
is skipped, but the budget stop applies (`bound_screen`: a sample scores at
most 1, so the samples left can win back at most what they lack of it), in
smaller chunks, since one chunk of a small data set would be all of it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hetmap.sim.metrics import Metric

SAFETY = 2.0  # a skipped sample would flip only under a change twice the largest seen
MIN_ROWS = 32  # samples every variant runs before it may be settled
CHUNK_ROWS = 32  # samples per screened run
BOUND_CHUNK_ROWS = 8  # samples per run where only the budget stop applies


@dataclass(frozen=True)
class Screen:
    """The samples in the order measurements run them, with what scoring them needs."""

    order: np.ndarray  # sample indices, smallest relative gap first
    gaps: np.ndarray  # relative gap of each sample in that order
    baseline: np.ndarray  # the unperturbed model's outputs, in that order
    baseline_scores: np.ndarray  # their per-sample metric
    metric: Metric
    labels: np.ndarray | None  # in that order, one row per sample
    reference: np.ndarray  # the outputs the metric compares with, in that order
    rows: int = CHUNK_ROWS  # samples per run

    def relative_change(self, outputs: np.ndarray, start: int) -> np.ndarray:
        """Per row of `outputs` (rows start.. of the order): the largest score change over the output's size."""
        baseline = self.baseline[start : start + len(outputs)]
        change = np.abs(outputs.astype(np.float64) - baseline).reshape(len(outputs), -1).max(axis=1)
        return change / _scale(baseline)

    def scores(self, outputs: np.ndarray, start: int) -> np.ndarray:
        stop = start + len(outputs)
        labels = None if self.labels is None else self.labels[start:stop]
        return self.metric.per_sample(outputs, labels, self.reference[start:stop])

    def complete(self, measured: np.ndarray) -> np.ndarray:
        """The outputs of every sample in the data's order: the measured rows, then unperturbed ones."""
        rows = measured
        if len(measured) < len(self.order):
            rows = np.concatenate([measured, self.baseline[len(measured) :]])
        restored = np.empty_like(rows)
        restored[self.order] = rows
        return restored


class Track:
    """One variant's rows so far: the largest relative change it caused and the score it lost."""

    def __init__(self, screen: Screen):
        self.screen, self.done, self.largest, self.lost = screen, 0, 0.0, 0.0

    def add(self, outputs: np.ndarray) -> None:
        """The variant's outputs on the next rows of the screen's order."""
        change = self.screen.relative_change(outputs, self.done)
        self.largest = max(self.largest, float(np.nanmax(change, initial=0.0)))
        lost = self.screen.baseline_scores[self.done : self.done + len(outputs)] - self.screen.scores(
            outputs, self.done
        )
        self.lost += float(lost.sum())
        self.done += len(outputs)

    @property
    def settled(self) -> bool:
        """Whether no row left can flip under twice the largest change seen (never before MIN_ROWS rows)."""
        gaps = self.screen.gaps
        if self.done >= len(gaps):
            return True
        return self.done >= MIN_ROWS and bool(gaps[self.done] > 2 * SAFETY * self.largest)

    def drop_at_least(self) -> float:
        """The least drop of the metric (a fraction) the variant can end with, if no settled row flips."""
        rest = slice(self.done, None)
        flippable = self.screen.gaps[rest] <= 2 * SAFETY * self.largest
        regained = float((1 - self.screen.baseline_scores[rest])[flippable].sum())
        return (self.lost - regained) / len(self.screen.order)


def screen_for(metric: Metric, outputs: np.ndarray, labels: np.ndarray | None, reference: np.ndarray) -> Screen | None:
    """The screen for unperturbed `outputs` (samples first) under `metric`; None where it cannot apply."""
    if metric.kind != "top1" or metric.indices or outputs.ndim < 2 or outputs.shape[-1] < 2:
        return None  # class indices have no scores to take a gap between
    scores = outputs.astype(np.float64)
    per_row = scores.shape[-1] if metric.per_position else int(np.prod(scores.shape[1:]))
    best_two = np.sort(scores.reshape(len(scores), -1, per_row), axis=-1)[..., -2:]
    gaps = (best_two[..., 1] - best_two[..., 0]).min(axis=1) / _scale(outputs)
    order = np.argsort(gaps, kind="stable")
    ordered_labels = None if labels is None else labels.reshape(len(outputs), -1)[order]
    baseline_scores = metric.per_sample(outputs, labels, reference)[order]
    return Screen(order, gaps[order], outputs[order], baseline_scores, metric, ordered_labels, reference[order])


def bound_screen(metric: Metric, outputs: np.ndarray, labels: np.ndarray | None, reference: np.ndarray) -> Screen:
    """A screen for a continuous metric: the data's order, every sample able to move (a gap of 0)."""
    order = np.arange(len(outputs))
    scores = metric.per_sample(outputs, labels, reference)
    return Screen(order, np.zeros(len(outputs)), outputs, scores, metric, labels, reference, BOUND_CHUNK_ROWS)


def _scale(outputs: np.ndarray) -> np.ndarray:
    """Each sample's largest absolute score (a zero output counts as tiny, so its gap is never trusted)."""
    largest = np.abs(outputs.astype(np.float64)).reshape(len(outputs), -1).max(axis=1)
    return np.maximum(largest, 1e-30)

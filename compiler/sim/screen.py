"""Which samples a perturbed layer can still change: top-1 margins, so sensitivity skips the rest.

A top-1 metric (accuracy or agreement) changes on a sample only when the
perturbation moves its arg-max, which takes a change of at least half the
gap between its two best scores. Sensitivity therefore runs the samples in
order of that gap relative to the output's size, smallest first, and a
variant (one option, one draw) stops once every sample left has a relative
gap more than SAFETY times twice the largest relative change the variant
caused on any sample so far: the rows it skips keep the unperturbed outputs.
The measured rows are exact, so a drop changes only if a skipped sample
would have flipped under a change SAFETY times larger than any seen.
Continuous metrics (cosine, snr) count every sample and are never screened.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hetmap.sim.metrics import Metric

SAFETY = 2.0  # a skipped sample would flip only under a change twice the largest seen
MIN_ROWS = 32  # samples every variant runs before it may stop
CHUNK_ROWS = 32  # samples per screened run


@dataclass(frozen=True)
class Screen:
    """The unperturbed outputs and relative gaps of the samples, in the order sensitivity runs them."""

    order: np.ndarray  # sample indices, smallest relative gap first
    gaps: np.ndarray  # relative gap of each sample in that order
    baseline: np.ndarray  # the unperturbed model's outputs, in that order

    def can_stop(self, changes: list[np.ndarray], done: int) -> bool:
        """Whether a variant whose rows so far changed by `changes` (relative) can skip the rows after `done`."""
        if done >= len(self.order):
            return True
        if done < MIN_ROWS:
            return False
        largest = max((float(part.max()) for part in changes if part.size), default=0.0)
        return bool(self.gaps[done] > 2 * SAFETY * largest)

    def relative_change(self, outputs: np.ndarray, start: int) -> np.ndarray:
        """Per row of `outputs` (rows start.. of the order): the largest score change over the output's size."""
        baseline = self.baseline[start : start + len(outputs)]
        change = np.abs(outputs.astype(np.float64) - baseline).reshape(len(outputs), -1).max(axis=1)
        return change / _scale(baseline)

    def complete(self, measured: np.ndarray) -> np.ndarray:
        """The outputs of every sample in the data's order: the measured rows, then unperturbed ones."""
        rows = (
            np.concatenate([measured, self.baseline[len(measured) :]]) if len(measured) < len(self.order) else measured
        )
        restored = np.empty_like(rows)
        restored[self.order] = rows
        return restored


def screen_for(metric: Metric, outputs: np.ndarray) -> Screen | None:
    """The screen for unperturbed `outputs` (samples first) under `metric`; None where it cannot apply."""
    if metric.kind != "top1" or outputs.ndim < 2 or outputs.shape[-1] < 2:
        return None
    scores = outputs.astype(np.float64)
    scores = (
        scores.reshape(len(scores), -1, scores.shape[-1]) if metric.per_position else scores.reshape(len(scores), 1, -1)
    )
    best_two = np.sort(scores, axis=-1)[..., -2:]
    gaps = (best_two[..., 1] - best_two[..., 0]).min(axis=1) / _scale(outputs)
    order = np.argsort(gaps, kind="stable")
    return Screen(order, gaps[order], outputs[order])


def _scale(outputs: np.ndarray) -> np.ndarray:
    """Each sample's largest absolute score (a zero output counts as tiny, so its gap is never trusted)."""
    largest = np.abs(outputs.astype(np.float64)).reshape(len(outputs), -1).max(axis=1)
    return np.maximum(largest, 1e-30)

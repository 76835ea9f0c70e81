"""How sure a measured drop is: a confidence interval over samples and Monte-Carlo draws.

The full-precision model and the mapped one score the same samples, so the
drop is paired per sample: d[s, i] = fp[i] - mapped[s, i] for draw s and
sample i. Its mean has two sources of spread, the finite sample (which
images were drawn) and the chips (which noise was drawn); the standard
error adds both, var_i(mean_s d) / n + var_s(mean_i d) / S, which counts the
draw-and-sample residual twice and so errs on the wide side. The interval is
normal: mean +- z se, z the two-sided quantile of the confidence.

A mapping that changed no held-out sample would get an interval of width
0 (the Wald interval's known failure at a proportion of 0): the sample
variance counts two pseudo-samples besides the real ones, one the mapping
broke and one it fixed (as Agresti and Caffo's adjusted interval adds one
success and one failure per arm), so no finite sample vouches for a drop of
exactly 0. The mean is the real samples' own. A top-1 score is 0 or 1 per
sample, so the pseudo-samples drop by +-100 points; a continuous score
(cosine, snr) moves by far less, and its pseudo-samples move as far as the
largest change seen: at +-100 they alone held 271 samples' interval near
+-1 point, whatever the real spread.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.stats import norm

WITHIN, OVER, INCONCLUSIVE = "within", "over", "inconclusive"


@dataclass(frozen=True)
class VerifiedDrop:
    """A drop in points with its interval; at confidence 0 the interval is the mean itself."""

    mean_points: float
    low_points: float
    high_points: float
    samples: int
    seeds: int
    confidence: float
    continuous: bool = False  # per-sample scores that vary continuously (cosine, snr), not top-1's 0 or 1

    def verdict(self, budget: float) -> str:
        """within: the interval's top meets the budget; over: its bottom breaks it; else inconclusive."""
        if self.high_points <= budget:
            return WITHIN
        return OVER if self.low_points > budget else INCONCLUSIVE

    def samples_needed(self, budget: float) -> int | None:
        """About how many samples would narrow the interval to the budget's width (it shrinks as 1/sqrt(n)).

        None for a budget of 0, which no interval of a mapping that changes any sample can fit.
        """
        width = self.high_points - self.low_points
        if width <= budget:
            return self.samples
        return math.ceil(self.samples * (width / budget) ** 2) if budget > 0 else None


def verified_drop(
    full_precision: np.ndarray, mapped: np.ndarray, confidence: float, continuous: bool = False
) -> VerifiedDrop:
    """The drop from per-sample scores: full precision [samples], mapped [seeds, samples] (fractions);
    `continuous`: scores anywhere in between (cosine, snr), not top-1's 0 or 1."""
    mapped = np.atleast_2d(mapped)
    drops = 100 * (full_precision[None, :] - mapped)
    seeds, samples = drops.shape
    mean = float(drops.mean())
    if confidence <= 0:
        return VerifiedDrop(mean, mean, mean, samples, seeds, confidence, continuous)
    if samples < 2:  # no spread to estimate: the interval is every drop there can be
        return VerifiedDrop(mean, -100.0, 100.0, samples, seeds, confidence, continuous)
    per_sample = drops.mean(axis=0)
    extreme = float(np.abs(per_sample).max()) if continuous else 100.0
    per_sample = np.concatenate([per_sample, [extreme, -extreme]])  # the two pseudo-samples
    per_seed = drops.mean(axis=1)
    variance = per_sample.var(ddof=1) / samples
    variance += per_seed.var(ddof=1) / seeds if seeds > 1 else 0.0
    half = float(norm.ppf(0.5 + confidence / 2) * math.sqrt(variance))
    return VerifiedDrop(mean, mean - half, mean + half, samples, seeds, confidence, continuous)

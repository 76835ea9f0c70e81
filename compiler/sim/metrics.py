"""How a mapped model's outputs are scored against the labels or the full-precision outputs.

Every metric is a fraction where 1 is perfect, so a drop in points is
100 x (full precision - mapped) whatever the metric:
- top1: with labels, accuracy; without, agreement of the arg-max with full
  precision. Per sample for outputs (batch, classes); per position for
  (batch, positions..., classes) outputs (text, speech, token
  classification), where one changed character must count.
- cosine: cosine similarity with the full-precision output, per sample.
- snr: the signal's share of signal plus error power, S / (S + N) per sample
  (N = |mapped - full precision|^2, S = |full precision|^2): 1 - 1/(1 + SNR).
  With one value per sample (a regressor) S is the full-precision outputs'
  variance over the data, the same for every sample: their own power is
  mostly a common offset, which would hide any error.
`auto` picks top1 for class scores (last axis > 1 on outputs of rank 2 or 3)
and whenever labels are given, top1 on the values themselves for integer
outputs (class indices, as an ArgMax export gives), snr for one float per
sample (a regressor: cosine of one number is its sign, blind to any error),
else cosine.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from hetmap.errors import HetmapError

METRICS = ("auto", "top1", "cosine", "snr")


@dataclass(frozen=True)
class Metric:
    kind: str  # top1, cosine or snr
    per_position: bool = False  # top1 over every position of (batch, positions..., classes)
    labelled: bool = False  # top1 against labels rather than against full precision
    indices: bool = False  # top1 on outputs that are class indices already (integers), compared as they are
    signal: float | None = None  # snr's signal power for every sample alike (one value each: the data's variance)

    @property
    def name(self) -> str:
        """What the reports call it: accuracy, agreement (top-1 with full precision), cosine or snr."""
        if self.kind != "top1":
            return self.kind
        base = "accuracy" if self.labelled else "agreement"
        return f"{base} per position" if self.per_position else base

    def score(self, outputs: np.ndarray, labels: np.ndarray | None, reference: np.ndarray) -> float:
        """The metric of `outputs` (the first model output over every sample)."""
        return float(np.mean(self.per_sample(outputs, labels, reference)))

    def per_sample(self, outputs: np.ndarray, labels: np.ndarray | None, reference: np.ndarray) -> np.ndarray:
        """Each sample's share of the metric (its positions averaged): their mean is `score`."""
        if self.kind == "top1":
            winners = self._classes(outputs)
            expected = labels.reshape(winners.shape) if self.labelled else self._classes(reference)
            hits = winners == expected
            return hits.reshape(len(hits), -1).mean(axis=1)
        a = outputs.reshape(len(outputs), -1).astype(np.float64)
        b = reference.reshape(len(reference), -1).astype(np.float64)
        if self.kind == "cosine":
            norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
            return (a * b).sum(axis=1) / np.maximum(norms, 1e-12)
        signal = (b * b).sum(axis=1) if self.signal is None else np.full(len(b), self.signal)
        error = ((a - b) ** 2).sum(axis=1)
        return np.where(signal + error > 0, signal / np.maximum(signal + error, 1e-300), 1.0)

    def _classes(self, outputs: np.ndarray) -> np.ndarray:
        """The class of each sample (or position), [samples, positions]."""
        return outputs.reshape(len(outputs), -1) if self.indices else _top1(outputs, self.per_position)


def _top1(outputs: np.ndarray, per_position: bool) -> np.ndarray:
    if per_position:
        return outputs.argmax(axis=-1).reshape(len(outputs), -1)
    return outputs.reshape(len(outputs), -1).argmax(axis=1)


def choose_metric(requested: str, reference: np.ndarray, labels: np.ndarray | None, source: str) -> Metric:
    """The metric for outputs shaped like `reference`, checking `labels` (from data file `source`) against them."""
    if requested not in METRICS:
        raise HetmapError(f"unknown metric '{requested}': choose one of {', '.join(METRICS)}")
    shape = reference.shape
    if not np.issubdtype(reference.dtype, np.floating):
        return _indices_metric(requested, reference, labels, source)
    one_value = math.prod(shape[1:]) == 1
    if requested == "cosine" and one_value:
        raise HetmapError(
            f"--metric cosine on the model's output of shape {list(shape)}: with one value per sample, cosine is its "
            "sign and sees no error; use snr"
        )
    classes_last = len(shape) >= 2 and shape[-1] > 1
    # one value per sample: its own power is mostly the outputs' common offset, so the signal is their spread
    spread = float(reference.astype(np.float64).var()) if one_value and len(reference) > 1 else None
    if requested in ("cosine", "snr"):
        return Metric(requested, signal=spread if requested == "snr" else None)
    if requested == "top1" and not classes_last and labels is None:
        raise HetmapError(
            f"--metric top1 needs class scores on the last axis of the model's output, which has shape {list(shape)}; "
            "use cosine or snr"
        )
    if labels is None:
        if requested == "top1" or (classes_last and len(shape) <= 3):
            return Metric("top1", per_position=len(shape) >= 3)
        return Metric("snr", signal=spread) if one_value else Metric("cosine")
    return _labelled_metric(reference, labels, source)


def _indices_metric(requested: str, reference: np.ndarray, labels: np.ndarray | None, source: str) -> Metric:
    """Top-1 on an output of class indices (integers): each entry is a sample's (or a position's) class."""
    if requested in ("cosine", "snr"):
        raise HetmapError(
            f"--metric {requested} needs float outputs, and the model's first output holds {reference.dtype} (class "
            "indices, say): use top1 or auto, which compare them as they are"
        )
    if labels is not None and labels.size != reference.size:
        raise HetmapError(
            f"data file '{source}': labels 'y' have shape {list(labels.shape)}, but the model's output "
            f"{list(reference.shape)} holds one class index per entry"
        )
    return Metric("top1", per_position=reference[0].size > 1, labelled=labels is not None, indices=True)


def _labelled_metric(reference: np.ndarray, labels: np.ndarray, source: str) -> Metric:
    """Accuracy per position when labels have one entry per position, else per sample over the flattened output."""
    samples, shape = len(reference), reference.shape
    positions = math.prod(shape[1:-1]) if len(shape) >= 3 else 1
    per_position = len(shape) >= 3 and labels.size == samples * positions and positions > 1
    if not per_position and labels.size != samples:
        raise HetmapError(
            f"data file '{source}': labels 'y' have shape {list(labels.shape)}, but the model's output {list(shape)} "
            f"takes one label per sample ({samples})"
            + (f" or per position ({samples}x{positions})" if positions > 1 else "")
        )
    classes = shape[-1] if per_position else math.prod(shape[1:])
    _check_labels(labels, classes, source)
    return Metric("top1", per_position=per_position, labelled=True)


def _check_labels(labels: np.ndarray, classes: int, source: str) -> None:
    if labels.dtype.kind == "f" and not np.array_equal(labels, np.round(labels)):
        raise HetmapError(
            f"data file '{source}': labels 'y' must be class indices, found the fraction {labels[labels != np.round(labels)][0]}"
        )
    if labels.dtype.kind not in "fiub":
        raise HetmapError(f"data file '{source}': labels 'y' must be integer class indices, got {labels.dtype}")
    low, high = labels.min(), labels.max()
    if low < 0 or high >= classes:
        raise HetmapError(
            f"data file '{source}': labels 'y' must be class indices 0..{classes - 1} for the model's {classes} "
            f"output scores (found {low:g}..{high:g})"
        )

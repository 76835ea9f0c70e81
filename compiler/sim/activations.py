"""The activations a layer's suffix reads: computed from the unperturbed model, given range by range of samples.

A suffix (hetmap.sim.layerwise) takes its inputs in ranges of rows, so it
needs activations that hold one sample per row of their first axis. Those
computed from weights alone hold none and are given whole; those that hold
the samples otherwise (attention's [sequence, batch, width], or [sequence x
batch, width] after a Reshape) cannot be cut into ranges, and the layers
that read them are measured on the whole model instead.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
import onnxruntime as ort

from hetmap.sim.sessions import session_for


def open_session(model: ir.Model, fed: set[str]) -> ort.InferenceSession:
    """Large MatMul/Gemm weights are fed, not constant: onnxruntime would copy them (a suffix's FC matrices)."""
    return session_for(model, fed, feed_matrices=True)


def outputs_of(session: ort.InferenceSession, names: list[str], feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    return session.run(names, {**feeds, **session.hetmap_feeds})


def _activations_session(model: ir.Model, names: list[str]) -> ort.InferenceSession:
    """A session of the unperturbed model with the named activations as extra outputs."""
    values = {v.name: v for node in model.graph for v in node.outputs}
    extra = [values[name] for name in names if not values[name].is_graph_output()]
    model.graph.outputs.extend(extra)
    try:
        return open_session(model, set())
    finally:
        for _ in extra:
            model.graph.outputs.pop()


def full_precision(model: ir.Model, names: list[str], *feeds: dict[str, np.ndarray]):
    """The named activations of the unperturbed model on `feeds` (one dict; one per feeds given when several)."""
    if not names:
        return {} if len(feeds) == 1 else [{} for _ in feeds]
    session = _activations_session(model, names)
    computed = [dict(zip(names, outputs_of(session, names, feed))) for feed in feeds]
    return computed[0] if len(feeds) == 1 else computed


def probe_activations(model: ir.Model, names: list[str], data: dict[str, np.ndarray], rows: int, free_batch: bool):
    """(the named activations on the first `rows` samples, those that hold the samples other than one per row).

    The second needs a free batch size: the first sample once and twice, in the same session; an activation
    whose shape changes other than from 1 row to 2 is one.
    """
    head = {n: a[:rows] if a.ndim else a for n, a in data.items()}
    if not free_batch or not names:
        return full_precision(model, names, head), set()
    once = {n: a[:1] if a.ndim else a for n, a in data.items()}
    twice = {n: np.concatenate([a[:1], a[:1]]) if a.ndim else a for n, a in data.items()}
    first, single, double = full_precision(model, names, head, once, twice)
    return first, {n for n in names if single[n].shape != double[n].shape and not _rows(single, double, n)}


def _rows(single: dict[str, np.ndarray], double: dict[str, np.ndarray], name: str) -> bool:
    """Whether an activation has one row per sample: 1 row for one sample, 2 for two, the rest alike."""
    one, two = single[name].shape, double[name].shape
    return len(one) > 0 and one[0] == 1 and two[0] == 2 and one[1:] == two[1:]


class Source:
    """The inputs a suffix reads, sample range by sample range: cached once, or computed per range.

    An activation not in `batched` (one computed from weights alone) is the same for every range, and is
    kept and given whole.
    """

    def __init__(self, model, names: list[str], data: dict[str, np.ndarray], batch: int, cached: bool, batched):
        self.model, self.names, self.data, self.batch, self.batched = model, names, data, batch, batched
        self.session, self.cache = None, None
        if not names:
            self.cache = {}
        elif cached:
            parts = [self._compute(start, stop) for start, stop in self.ranges(batch)]
            self.cache = {
                name: np.concatenate([part[name] for part in parts]) if name in batched else parts[0][name]
                for name in names
            }
            self.session = None  # its weights are a second copy of the model's

    @property
    def size(self) -> int:
        return max((len(a) for a in self.data.values() if a.ndim), default=1)

    def ranges(self, step: int) -> list[tuple[int, int]]:
        return [(start, min(start + step, self.size)) for start in range(0, self.size, step)]

    def _slice(self, start: int, stop: int) -> dict[str, np.ndarray]:
        return {name: a[start:stop] if a.ndim else a for name, a in self.data.items()}

    def _compute(self, start: int, stop: int) -> dict[str, np.ndarray]:
        if self.session is None:
            self.session = _activations_session(self.model, self.names)
        return dict(zip(self.names, outputs_of(self.session, self.names, self._slice(start, stop))))

    def get(self, names: list[str], start: int, stop: int) -> dict[str, np.ndarray]:
        inputs = self._slice(start, stop)
        computed = None
        for name in names:
            if name in inputs:
                continue
            if self.cache is not None:
                cached = self.cache[name]
                inputs[name] = cached[start:stop] if name in self.batched else cached
            else:
                computed = computed or self._compute(start, stop)
                inputs[name] = computed[name]
        return {name: inputs[name] for name in names}

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

from hetmap.sim.cut import segment_model, segment_nodes
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


def _segment_session(model: ir.Model, names: list[str]) -> ort.InferenceSession:
    """A session of just the nodes that compute the named activations of the unperturbed model from its inputs."""
    return open_session(segment_model(model, segment_nodes(model, names, set()), names, {}), set())


def computed_outputs(session: ort.InferenceSession, names: list[str], available: dict[str, np.ndarray]) -> dict:
    """The named outputs of a segment's session, fed from `available` what it reads (besides its fed matrices)."""
    inputs = [i.name for i in session.get_inputs() if i.name not in session.hetmap_feeds]
    return dict(zip(names, outputs_of(session, names, {name: available[name] for name in inputs})))


def samples_in(data: dict[str, np.ndarray]) -> int:
    """How many samples the data holds (its arrays of one or more axes hold one sample per row)."""
    return max((len(a) for a in data.values() if a.ndim), default=1)


def _ranges(data: dict[str, np.ndarray], step: int) -> list[tuple[int, int]]:
    """Ranges of `step` samples over the data."""
    size = samples_in(data)
    return [(start, min(start + step, size)) for start in range(0, size, step)]


def sliced(arrays: dict[str, np.ndarray], start: int, stop: int) -> dict[str, np.ndarray]:
    """Rows start..stop of every array (a 0-d one, a scalar input, goes whole)."""
    return {name: a[start:stop] if a.ndim else a for name, a in arrays.items()}


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
    head = sliced(data, 0, rows)
    if not free_batch or not names:
        return full_precision(model, names, head), set()
    once = sliced(data, 0, 1)
    first, single, double = full_precision(model, names, head, once, _twice(once))
    return first, {n for n in names if single[n].shape != double[n].shape and not _rows(single, double, n)}


def _twice(once: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """One sample's feeds, the sample given twice (a probe of which activations hold one row per sample)."""
    return {name: np.concatenate([a, a]) if a.ndim else a for name, a in once.items()}


def _rows(single: dict[str, np.ndarray], double: dict[str, np.ndarray], name: str) -> bool:
    """Whether an activation has one row per sample: 1 row for one sample, 2 for two, the rest alike."""
    one, two = single[name].shape, double[name].shape
    return len(one) > 0 and one[0] == 1 and two[0] == 2 and one[1:] == two[1:]


class Source:
    """The inputs a suffix reads, sample range by sample range: computed for every sample at once by a Walk, or
    per range.

    An activation not in `batched` (one computed from weights alone) is the same for every range, and is
    kept and given whole.
    """

    def __init__(self, model, names: list[str], data: dict[str, np.ndarray], batch: int, walk: Walk | None, batched):
        """`walk`: compute them all at once, from where the last group's left off; None: range by range."""
        self.model, self.names, self.data, self.batch, self.batched = model, names, data, batch, batched
        self.session, self.cache = None, None
        if not names:
            self.cache = {}
        elif walk is not None:
            self.cache = walk.compute(names, batched)

    def ranges(self, step: int) -> list[tuple[int, int]]:
        return _ranges(self.data, step)

    def _compute(self, start: int, stop: int) -> dict[str, np.ndarray]:
        if self.session is None:
            self.session = _segment_session(self.model, self.names)
        return computed_outputs(self.session, self.names, sliced(self.data, start, stop))

    def get(self, names: list[str], start: int, stop: int) -> dict[str, np.ndarray]:
        inputs = sliced(self.data, start, stop)
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


class Walk:
    """Group after group of activations for every sample, each group's computed from what the ones before left.

    Computed from the graph inputs, every group would run the network up to it (ResNet-50 at 128 samples: 19
    groups, 129 of 473 s of sensitivity); here the network runs about once in all. A float value is carried
    on while a node not yet run reads it and it holds one row per sample (the first sample once and twice, as
    probe_activations tells); other values are computed again from what is carried, or from the inputs.
    Carried values are held for every sample; past `limit_bytes` (many long skips) they are dropped and the
    next group starts from the inputs. A fixed batch size carries nothing (no probe).
    """

    def __init__(self, model: ir.Model, data: dict[str, np.ndarray], batch: int, free_batch: bool, limit_bytes: int):
        self.model, self.data, self.batch, self.free_batch, self.limit = model, data, batch, free_batch, limit_bytes
        self.live: dict[str, np.ndarray] = {}
        self.run: set[int] = set()  # ids of the nodes computed so far
        self.values = {v.name: v for node in model.graph for v in node.outputs}

    def compute(self, names: list[str], batched: set[str]) -> dict[str, np.ndarray]:
        """The named activations on every sample: those in `batched` row by row, the others (from weights) whole."""
        wanted = [name for name in names if name not in self.live]
        fed = {name: array.dtype for name, array in self.live.items()}
        nodes = segment_nodes(self.model, wanted, set(fed)) if wanted else []
        self.run |= {id(node) for node in nodes}
        later = [v.name for node in nodes for v in node.outputs if self._needed_later(v)]
        outputs = list(dict.fromkeys(wanted + later))
        computed, carried = {}, set()
        if outputs:
            session = open_session(segment_model(self.model, nodes, outputs, fed), set())
            carried = self._rows(session, outputs, later)
            available = {**self.data, **self.live}
            parts = [computed_outputs(session, outputs, sliced(available, *r)) for r in _ranges(self.data, self.batch)]
            rows = set(batched) | carried if len(parts) > 1 else set()  # one run: its arrays as they are
            computed = {n: np.concatenate([p[n] for p in parts]) if n in rows else parts[0][n] for n in outputs}
        found = {name: self.live[name] if name in self.live else computed[name] for name in names}
        kept = {**self.live, **{name: computed[name] for name in carried}}
        self.live = {name: array for name, array in kept.items() if self._needed_later(self.values[name])}
        if sum(array.nbytes for array in self.live.values()) > self.limit:
            self.live, self.run = {}, set()
        return found

    def _needed_later(self, value: ir.Value) -> bool:
        return any(id(consumer) not in self.run for consumer in value.consumers())

    def _rows(self, session, outputs: list[str], candidates: list[str]) -> set[str]:
        """The candidates that hold one float row per sample (none for a fixed batch size)."""
        if not self.free_batch or not candidates:
            return set()
        once = sliced({**self.data, **self.live}, 0, 1)
        single, double = (computed_outputs(session, outputs, feeds) for feeds in (once, _twice(once)))
        return {name for name in candidates if single[name].dtype.kind == "f" and _rows(single, double, name)}

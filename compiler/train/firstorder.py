"""First-order sensitivity: each variant's change of the outputs, predicted from one backward pass.

A layer perturbed alone moves the model's outputs by J·δ to first order:
δ, the change of the layer's own output, is simulated exactly (the layer
alone, every variant with the draws the suffix engine uses), and J, the
gradient of each sample's TRACKED_CLASSES best scores with respect to that
output, comes for every layer at once from one forward pass of the torch
interpreter and one batched backward pass (a row per tracked class).
That costs a few network passes plus each layer alone per variant, where
the suffix engine runs the rest of the network per layer and variant.

The prediction holds while the perturbation is small: an option that moves
a layer's output by more than LINEAR_LIMIT of its norm (int2, on most
layers) is left to the exact engines; a digital option whose weights alone
move by more than WEIGHT_ERROR_LIMIT is left to them without being
simulated here. Top-1 metrics on [samples, classes] outputs track each
sample's best classes: they decide the arg-max, and a class outside them
moves too little to matter. Only those classes' changes are kept (a
layer's full outputs are built when scored). Cosine and snr against the
model's own outputs y depend on the change d = J·δ only through its power:
1 - cosine is |d⊥|² / |y|² (d⊥: d without its part along y) to leading
order, 1/snr - 1 is |d|² / |y|². That power is estimated from PROBES random
directions r per sample (E[(r·d)²] = |d|² for r ~ N(0, I)): their gradients
come from the same batched backward pass, projected off y for cosine.
Each layer's session stays open across the chunks of samples, holding
about the layer's weights once per variant, until RUNS_KEPT_BYTES of them
are held; the layers past that build theirs again for each chunk (the same
draws: they are seeded by what they measure).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx_ir as ir

from hetmap.graph.layouts import WeightLayout, quantize_symmetric
from hetmap.graph.shapes import graph_inputs
from hetmap.mapping.annotations import layer_annotation
from hetmap.mapping.mapping import ANALOG, option_bits
from hetmap.sim.activations import open_session, outputs_of
from hetmap.sim.cut import layer_cut, suffix_model
from hetmap.sim.layerwise import draw_weights, option_of, variant_names
from hetmap.sim.sessions import release_graphs
from hetmap.sim.simulation import build_simulation

TRACKED_CLASSES = 3  # each sample's best scores whose gradients are taken (more changed no resnet20 drop)
PROBES = 16  # random output directions per sample for cosine and snr: the power's spread is sqrt(2/PROBES) per sample
LINEAR_LIMIT = 0.2  # ||δ|| / ||layer output|| past which an option is measured exactly
WEIGHT_ERROR_LIMIT = 2 * LINEAR_LIMIT  # ||Q(W) - W|| / ||W||: int2 on every layer of ResNet-50 and ours (0.45-0.90)
CHUNK_BYTES = 1 << 30  # activations and gradients held for one chunk of samples, roughly
# The layer-alone runs kept open across chunks, counted as the layer's weights once per variant. BERT-base's
# 72 layers on 32 samples (a chunk each), all kept: 5.42 GB peak, 383-392 s; up to this: 4.73 GB, 425 s.
RUNS_KEPT_BYTES = 1 << 30


@dataclass
class Predicted:
    """One layer's predicted changes per option (one array per draw, the data's order), and its outputs on demand."""

    changes: dict[str, list[np.ndarray]]  # [samples, tracked]: the change of each tracked class's score or probe
    relative_change: dict[str, float]  # ||δ|| / ||output|| over the data, draws pooled
    exact: tuple[str, ...]  # options out of the linear regime: measure them exactly
    baseline: np.ndarray = field(repr=False)  # the unperturbed outputs, shared by every layer
    classes: np.ndarray | None = field(repr=False)  # [samples, tracked]: each sample's tracked classes (top-1)
    kind: str = "top1"  # the metric's (hetmap.sim.metrics.Metric.kind)

    @property
    def outputs(self) -> dict[str, list[np.ndarray]]:
        """The predicted outputs: the baseline with each sample's tracked classes moved (built per call)."""
        rows = np.arange(len(self.baseline))[:, None]
        built = {}
        for option, per_draw in self.changes.items():
            built[option] = []
            for change in per_draw:
                outputs = self.baseline.astype(np.float32)
                outputs[rows, self.classes] += change
                built[option].append(outputs)
        return built

    def scores(self, score_outputs, layer: str) -> dict[str, list[float]]:
        """The predicted metric per option per draw: top-1 scores the predicted outputs (with `score_outputs`, the
        scorer's); cosine and snr come from each sample's power, the mean square of its probes' changes."""
        if self.kind == "top1":
            return {
                option: [score_outputs(outputs, f"layer '{layer}' as {option}") for outputs in per_draw]
                for option, per_draw in self.outputs.items()
            }
        scores = {}
        for option, per_draw in self.changes.items():
            power = [np.mean(np.square(change, dtype=np.float64), axis=1) for change in per_draw]
            per_sample = [1 / np.sqrt(1 + p) if self.kind == "cosine" else 1 / (1 + p) for p in power]
            scores[option] = [float(values.mean()) for values in per_sample]
        return scores


def applies(outputs: np.ndarray, metric_kind: str, fixed_batch: int | None, own_reference: bool) -> bool:
    """Whether predictions can stand for measurements, on a free batch: a top-1 metric on [samples, classes], or
    cosine or snr against the model's own outputs (after fine-tuning they are the user's: no expansion around them)."""
    if fixed_batch is not None or not np.issubdtype(outputs.dtype, np.floating):  # class indices: no gradient
        return False
    if metric_kind == "top1":
        return outputs.ndim == 2 and outputs.shape[1] >= 2
    return own_reference and outputs[0].size > 1  # one value per sample: snr's signal is the data's spread


def predict_layers(
    model: ir.Model, sweep, names: list[str], inputs: dict, baseline: np.ndarray, kind: str = "top1"
) -> dict[str, Predicted]:
    """Per layer in `names` that reads only float activations: its options' predicted outputs on `inputs`.

    `sweep` is the suffix engine's (hetmap.sim.layerwise.Sweep: target, layers, ranges, options, draws,
    seed); `baseline` the unperturbed outputs on `inputs`; `kind` the metric's. Raises UnsupportedOpError when
    torch cannot run the model.
    """
    from hetmap.train.interpreter import OnnxModule

    far = {layer.name: _far_from_linear(model, layer, sweep.options) for layer in sweep.layers if layer.name in names}
    simulated = [name for name in names if set(sweep.options) - far[name]]
    cuts = {name: cut for name in simulated if (cut := layer_cut(model, name)) is not None}
    layers = {layer.name: layer for layer in sweep.layers if layer.name in cuts}
    state = _State(sweep, layers, baseline, kind, far)
    floats = [
        n for n, v in model.graph.initializers.items() if v.const_value is not None and v.dtype.is_floating_point()
    ]
    net = OnnxModule(model, trainable=floats, overrides=dict.fromkeys(cuts, state.capture)).eval()
    fed = [inputs[value.name] for value in graph_inputs(model)]
    batched = [array.ndim > 0 and len(array) == len(baseline) for array in fed]
    start, rows = 0, 1  # the first sample alone sizes the chunks
    while start < len(baseline):
        stop = min(start + rows, len(baseline))
        state.chunk(model, net, cuts, [a[start:stop] if b else a for a, b in zip(fed, batched)], start)
        rows = rows if start else max(1, CHUNK_BYTES // max(state.bytes_per_sample, 1))
        start = stop
    release_graphs(model)
    return {name: state.result(name) for name in cuts}


class _State:
    """What the chunks accumulate: predicted outputs and the squared sizes of δ and of each layer's output."""

    def __init__(self, sweep, layers: dict, baseline: np.ndarray, kind: str, far: dict[str, set[str]]):
        self.sweep, self.layers, self.baseline, self.kind, self.far = sweep, layers, baseline, kind, far
        self.tracked = min(TRACKED_CLASSES, baseline.shape[1]) if kind == "top1" else PROBES
        self.classes = np.argsort(-baseline, axis=1, kind="stable")[:, : self.tracked] if kind == "top1" else None
        self.variants = {
            name: variant_names([o for o in sweep.options if o not in far[name]], sweep.draws) for name in layers
        }
        shape = (len(baseline), self.tracked)
        self.changes = {name: {v: np.zeros(shape, np.float32) for v in self.variants[name]} for name in layers}
        self.moved = {name: dict.fromkeys(self.variants[name], 0.0) for name in layers}
        self.size = dict.fromkeys(layers, 0.0)
        self.runs: dict[str, tuple] = {}  # layer-alone runs kept open across chunks
        self.kept_bytes = 0  # their drawn weights' bytes
        self.held: dict[str, tuple] = {}
        self.unbatched: set[str] = set()  # layers not simulated alone with the samples first: measured
        self.bytes_per_sample = 0

    def capture(self, node: ir.Node, arguments: list) -> list:
        from hetmap.train.interpreter import run_node

        outputs = run_node(node, arguments)
        self.held[node.name] = (arguments, outputs[0])
        return outputs

    def chunk(self, model, net, cuts: dict, feeds: list[np.ndarray], start: int) -> None:
        """One forward pass over samples start.. and one backward pass per tracked class (batched)."""
        import torch

        self.held.clear()
        scores = net(*(torch.from_numpy(feed) for feed in feeds))
        scores = scores[0] if isinstance(scores, tuple) else scores
        count = len(scores)
        outputs = [self.held[name][1] for name in cuts]
        # one backward pass per tracked class or probe, batched: the k-th row of every gradient is the k-th's
        picks = torch.from_numpy(self._picks(start, count))
        gradients = torch.autograd.grad(scores, outputs, picks, allow_unused=True, is_grads_batched=True)
        # the layers' outputs, their gradients per tracked class, and as much again for what the backward keeps
        self.bytes_per_sample = sum(o.numel() * o.element_size() for o in outputs) * 2 * (1 + self.tracked) // count
        for (name, cut), gradient in zip(cuts.items(), gradients):
            arguments, output = self.held[name]
            read = {value.name: arguments[k] for k, value in enumerate(cut.layer.inputs) if value in cut.inputs}
            if name in self.unbatched or any(
                a.dim() == 0 or len(a) != count or not a.is_floating_point() for a in [*read.values(), output]
            ):
                self.unbatched.add(name)
                continue
            fed = {value_name: tensor.detach().numpy() for value_name, tensor in read.items()}
            nominal = output.detach().numpy()
            perturbed = self._perturbed(model, name, cut, fed, keep=start + count < len(self.baseline))
            if perturbed is None or perturbed.shape != (len(self.variants[name]) * count, *nominal.shape[1:]):
                self.unbatched.add(name)
                continue
            self.size[name] += _squared(nominal)
            if gradient is None:  # the output does not depend on this layer
                gradient = torch.zeros((self.tracked, *output.shape))
            variants = self.variants[name]
            deltas = perturbed.reshape(len(variants), count, -1) - nominal.reshape(1, count, -1)
            for k, variant in enumerate(variants):
                self.moved[name][variant] += _squared(deltas[k])
            # every variant's change of each tracked score: [samples, tracked, variants]
            per_sample = gradient.reshape(self.tracked, count, -1).transpose(0, 1)
            change = torch.bmm(per_sample, torch.from_numpy(deltas).permute(1, 2, 0))
            for k, variant in enumerate(variants):
                self.changes[name][variant][start : start + count] += change[:, :, k].numpy()

    def _picks(self, start: int, count: int) -> np.ndarray:
        """[tracked, samples, *output]: one-hot at each sample's tracked classes (top-1), else random probes over
        |y| (projected off y for cosine), seeded by the sweep's seed and the chunk."""
        baseline = self.baseline[start : start + count]
        if self.kind == "top1":
            picks = np.zeros((self.tracked, *baseline.shape), np.float32)
            picks[
                np.arange(self.tracked)[:, None], np.arange(count)[None, :], self.classes[start : start + count].T
            ] = 1
            return picks
        rng = np.random.default_rng([self.sweep.seed, start])
        probes = rng.standard_normal((self.tracked, count, baseline[0].size))
        y = baseline.reshape(count, -1).astype(np.float64)
        norms = np.maximum(np.linalg.norm(y, axis=1, keepdims=True), 1e-30)
        if self.kind == "cosine":
            along = y / norms
            probes -= np.einsum("psk,sk->ps", probes, along)[:, :, None] * along[None]
        return (probes / norms[None]).astype(np.float32).reshape(self.tracked, *baseline.shape)

    def _perturbed(self, model, name: str, cut, fed: dict[str, np.ndarray], keep: bool) -> np.ndarray | None:
        """The layer alone under every variant, stacked; None where onnxruntime cannot run it so (measured then).
        With `keep` (chunks follow), its session stays open for them while RUNS_KEPT_BYTES allows."""
        try:
            run = self.runs.get(name) or _layer_run(model, self.sweep, self.layers[name], cut, self.variants[name], fed)
            session, weights = run
            outputs = outputs_of(session, [session.get_outputs()[0].name], {**fed, **weights})[0]
            size = len(self.variants[name]) * self.layers[name].weight_count * 4  # fed and baked copies, float32
            if keep and name not in self.runs and self.kept_bytes + size <= RUNS_KEPT_BYTES:
                self.runs[name], self.kept_bytes = run, self.kept_bytes + size
            return outputs
        except Exception:  # noqa: BLE001 (onnxruntime's own error types): prediction is optional, measuring is not
            return None

    def result(self, name: str) -> Predicted:
        if name in self.unbatched:
            return Predicted({}, {}, self.sweep.options, self.baseline, self.classes, self.kind)
        by_option: dict[str, list[np.ndarray]] = {}
        moved: dict[str, list[float]] = {}
        for variant in self.variants[name]:
            by_option.setdefault(option_of(variant), []).append(self.changes[name][variant])
            moved.setdefault(option_of(variant), []).append(self.moved[name][variant])
        size = max(self.size[name], 1e-30)
        relative = {option: float(np.sqrt(np.mean(values) / size)) for option, values in moved.items()}
        out = {option for option, value in relative.items() if not value <= LINEAR_LIMIT} | self.far[name]
        exact = tuple(option for option in self.sweep.options if option in out)
        changes = {o: a for o, a in by_option.items() if o not in exact}
        return Predicted(changes, relative, exact, self.baseline, self.classes, self.kind)


def _far_from_linear(model: ir.Model, layer, options) -> set[str]:
    """The digital options whose quantised weights differ from the layer's by more than WEIGHT_ERROR_LIMIT."""
    node = next(node for node in model.graph if node.name == layer.name)
    weight = node.inputs[layer.weight_operand].const_value
    if weight is None:
        return set()
    array = weight.numpy()
    axis = WeightLayout(layer.op_type, array.shape, layer.groups, layer.weight_transposed).output_axis
    shape = [-1 if k == axis else 1 for k in range(array.ndim)]
    size, far = max(float(np.linalg.norm(array)), 1e-30), set()
    for option in options:
        if option != ANALOG:
            integers, scale = quantize_symmetric(array, option_bits(option), axis)
            if np.linalg.norm(integers * scale.reshape(shape) - array) > WEIGHT_ERROR_LIMIT * size:
                far.add(option)
    return far


def _squared(array: np.ndarray) -> float:
    """The sum of squares (BLAS, float32 products: the linear-regime test needs no more)."""
    flat = array.reshape(-1)
    return float(np.dot(flat, flat))


def _layer_run(model, sweep, layer, cut, variants: list[str], samples: dict[str, np.ndarray]):
    """The layer alone with one copy per variant, stacked: its session and the drawn analog weights."""
    total_weights = sum(l.weight_count for l in sweep.layers)
    input_range = sweep.input_ranges[layer.name]
    annotations = [
        (v, layer_annotation(layer, option_of(v), sweep.target, input_range, [], total_weights)) for v in variants
    ]
    alone = suffix_model(model, cut, annotations, samples, set(samples), output=cut.layer.outputs[0])
    simulation = build_simulation(alone, sweep.target, copy=False)
    weights = draw_weights(simulation, layer.name, variants, sweep, 0)
    return open_session(simulation.model, simulation.drawn_names()), weights

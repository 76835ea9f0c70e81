"""Baseline mappers for bench.headline, built from hetmap's own parts.

Each starts from the same canonical, calibrated model (`prepare`) and is
scored as hetmap's solver scores a mapping: hetmap's simulator on the same
data, target, drift time and Monte-Carlo seeds, drops against the model the
user brought. Fine-tuning a mapping is hetmap's supernetwork trained by
hetmap's adaptation with that one mapping fixed: hardware-aware training.

- layer-by-layer (LionHeart, Lammie et al. 2024): layers by MACs, largest
  first, move to analog one at a time (the others at INT8), fine-tune
  briefly, measure at the drift time; keep the move when the drop fits the
  budget, else revert the mapping and the weights.
- hessian (HAWQ-style, Dong et al. 2020): per layer a Hutchinson estimate of
  the loss Hessian's trace (full precision, a calibration batch) times the
  squared weight error one analog draw adds at the drift time; least
  sensitive first, layers move to analog while the measured drop fits the
  budget. No fine-tuning.
- all-analog, with and without hardware-aware fine-tuning; all-INT8, all-INT4.

A method's `seconds` is its wall time from the calibrated model to its
mapping, fine-tuning included; the final score is taken outside that time.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, fields
from pathlib import Path

import aihwkit.nn  # noqa: F401  (loaded here, not inside the first method timed)
import numpy as np
import onnx_ir as ir
import torch

from hetmap.graph.data import Dataset, load_dataset
from hetmap.graph.layouts import WeightLayout
from hetmap.graph.modelio import read_model
from hetmap.graph.shapes import graph_inputs, resolve_input_shapes
from hetmap.mapping.cost import mapping_energy_pj
from hetmap.mapping.mapping import ANALOG, option_bits, target_options
from hetmap.passes.calibrate import Calibrate
from hetmap.passes.canonicalize import Canonicalize
from hetmap.passes.finetune import FIXED_LEARNING_RATE, MAPPING_LEARNING_RATE, REFINE_EPOCHS, Adaptation
from hetmap.passes.partition import Partition
from hetmap.pipeline import CompileConfig, PassContext, run_pipeline, scoring_dataset
from hetmap.sim.drift import parse_drift
from hetmap.sim.measure import Measurer
from hetmap.sim.noise import noisy_weights
from hetmap.sim.scorer import Scorer
from hetmap.targets import Target
from hetmap.train.adaptation import AdaptConfig, MappingSampler, adapt
from hetmap.train.supernet import Supernet, trainable_initializers


@dataclass(frozen=True)
class Setting:
    """What every method shares with hetmap's solver, and the baselines' own knobs."""

    max_drop: float = 0.5  # percentage points at `drift`
    drift: str = "1d"
    seeds: int = 3
    epochs: int = 3  # all-analog hardware-aware fine-tuning, as hetmap's --finetune
    hetmap_epochs: int | None = None  # hetmap's own --finetune where it differs (bench.compare: MPS's wall clock)
    confidence: float = 0.95  # hetmap's --confidence (0: the mean rule, as MPS decides)
    learning_rate: float = FIXED_LEARNING_RATE  # every fine-tune here (hetmap's sweeps its own)
    batch_size: int = Adaptation.batch_size
    layer_steps: int = 10  # LionHeart's brief fine-tune per move, optimiser steps
    hutchinson_vectors: int = 8
    calibration_samples: int = 256


@dataclass
class Calibrated:
    """A model after canonicalize, partition and calibrate: where every mapper starts (never changed)."""

    model: ir.Model
    context: PassContext
    scorer: Scorer  # reference: this model's full-precision outputs on the scoring data

    @property
    def layers(self) -> list:
        return self.context.reports["partition"].layers

    @property
    def full_precision(self) -> float:
        return 100 * self.scorer.full_precision

    def rng(self, salt: str) -> np.random.Generator:
        """A generator seeded from the seed and a per-use salt (stable across runs)."""
        return np.random.default_rng([self.context.config.seed, *salt.encode()])

    def measurer(self, model: ir.Model, scorer: Scorer | None = None) -> Measurer:
        """Measures mappings of `model` (these layers, perhaps other weights) with `scorer` (default: this model's)."""
        ranges = self.context.reports["calibrate"].input_range
        return Measurer(
            model, self.context.target, self.layers, ranges, scorer or self.scorer, self.context.config.seed
        )

    @property
    def train(self) -> Dataset:
        return self.context.config.train


@dataclass
class Outcome:
    method: str
    mapping: dict[str, str]
    accuracy: float  # percent at the drift time, mean over seeds
    accuracy_std: float
    drop_points: float  # against full precision
    analog_weight_share: float
    energy_vs_int8: float  # against the same layers on the widest digital unit
    seconds: float  # mapping wall time
    details: dict = field(default_factory=dict)
    model: ir.Model | None = field(
        default=None, repr=False
    )  # the weights the mapping runs on (None: the calibrated ones)

    def as_json(self) -> dict:
        """The outcome's fields as data, without the model."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "model"}


def prepare(model_path: Path, target: Target, data_path: Path, train_path: Path, seed: int = 0) -> Calibrated:
    """Canonicalize, partition and calibrate as compile does, scoring on `data_path`."""
    model = read_model(model_path)
    dtypes = {value.name: value.dtype.numpy() for value in graph_inputs(model)}
    dataset = load_dataset(data_path, dtypes)
    config = CompileConfig(
        seed=seed,
        input_shapes=resolve_input_shapes(model, dataset, {}),
        dataset=dataset,
        train=load_dataset(train_path, dtypes),
    )
    context = PassContext(target=target, config=config)
    model, reports = run_pipeline(model, [Canonicalize(), Partition(), Calibrate()], context)
    return Calibrated(model, context.with_reports(reports), Scorer(model, scoring_dataset(model, config)))


def outcome(
    base: Calibrated,
    method: str,
    mapping: dict[str, str],
    accuracy: float,
    std: float,
    seconds: float,
    details: dict | None = None,
    model: ir.Model | None = None,
) -> Outcome:
    """A mapping's row: its measured accuracy with its analog weight share and energy against all-INT8."""
    target = base.context.target
    analog = sum(layer.weight_count for layer in base.layers if mapping[layer.name] == ANALOG)
    digital = {layer.name: widest_digital(target) for layer in base.layers}
    energy = mapping_energy_pj(base.layers, mapping, target) / mapping_energy_pj(base.layers, digital, target)
    share = analog / base.context.reports["partition"].mappable_weights
    return Outcome(
        method,
        dict(mapping),
        accuracy,
        std,
        base.full_precision - accuracy,
        share,
        energy,
        seconds,
        details or {},
        model,
    )


def widest_digital(target: Target) -> str:
    return max((o for o in target_options(target) if o != ANALOG), key=option_bits)


def measure(model: ir.Model, base: Calibrated, mapping: dict[str, str], setting: Setting) -> tuple[float, float]:
    """Mean and std over seeds of the metric of `mapping` (percent) on `model`'s weights at the drift time."""
    scores = 100 * np.array(base.measurer(model).measure(mapping, [parse_drift(setting.drift)], setting.seeds)[0])
    return float(scores.mean()), float(scores.std())


def _fits(base: Calibrated, mapping: dict[str, str]) -> bool:
    return (
        sum(layer.tiles for layer in base.layers if mapping[layer.name] == ANALOG) <= base.context.target.analog.count
    )


def _scored(
    base: Calibrated,
    method: str,
    model: ir.Model,
    mapping: dict[str, str],
    setting: Setting,
    began: float,
    details: dict | None = None,
) -> Outcome:
    seconds = time.perf_counter() - began
    return outcome(base, method, mapping, *measure(model, base, mapping, setting), seconds, details, model)


class _Adaptable:
    """A copy of the calibrated model and its supernetwork; fine-tuning changes both."""

    def __init__(self, base: Calibrated, setting: Setting):
        self.base = base
        self.setting = setting
        self.model = ir.from_proto(ir.to_proto(base.model))
        ranges = base.context.reports["calibrate"].input_range
        trainable = trainable_initializers(self.model, base.layers, "all")
        self.net = Supernet(self.model, base.layers, ranges, base.context.target, trainable, parse_drift(setting.drift))
        self.device = "cuda" if torch.cuda.is_available() else "cpu"

    def finetune(self, mapping: dict[str, str], train: Dataset, epochs: int, rate: float | None = None) -> None:
        """Train `mapping` alone (hetmap's adaptation with a fixed mapping) and write the weights back.

        `rate`: hetmap's own rate for one mapping (a share of each tensor's RMS), with full device noise from the
        first step (its --refine and --mapping recipe); None: the setting's rate, the noise ramped as by default.
        """
        names = [layer.name for layer in self.base.layers]
        sampler = MappingSampler(names, target_options(self.base.context.target), None, 0.0, fixed=mapping)
        config = AdaptConfig(
            epochs=epochs,
            batch_size=self.setting.batch_size,
            learning_rate=rate or self.setting.learning_rate,
            seed=self.base.context.config.seed,
            device=self.device,
            noise_ramp=0.0 if rate else None,
            relative_rate=bool(rate),
        )
        adapt(self.net, [value.name for value in graph_inputs(self.model)], train, sampler, config, run_id="baseline")
        self.load(self.net.graph.parameter_arrays())

    def weights(self) -> dict[str, np.ndarray]:
        return self.net.graph.parameter_arrays()

    def load(self, arrays: dict[str, np.ndarray]) -> None:
        """Set the trainable weights in the supernetwork and the model alike."""
        with torch.no_grad():
            for name, array in arrays.items():
                self.net.graph.initializer(name).copy_(torch.from_numpy(array))
        for name, array in arrays.items():
            self.model.graph.initializers[name].const_value = ir.tensor(array, name=name)


def _steps_subset(base: Calibrated, setting: Setting, salt: str) -> Dataset:
    """A random part of the training set that one epoch crosses in `setting.layer_steps` optimiser steps."""
    train = base.train
    count = min(train.size, setting.layer_steps * setting.batch_size)
    index = np.sort(base.rng(salt).permutation(train.size)[:count])
    inputs = {name: array[index] if array.ndim else array for name, array in train.inputs.items()}
    return Dataset(inputs, None if train.labels is None else train.labels[index], train.source)


def preset(base: Calibrated, setting: Setting, option: str) -> Outcome:
    """Every layer on `option`, weights as trained."""
    began = time.perf_counter()
    mapping = {layer.name: option for layer in base.layers}
    return _scored(base, f"all-{option}", base.model, mapping, setting, began)


def all_analog_finetuned(base: Calibrated, setting: Setting) -> Outcome:
    """All-analog after hetmap's fine-tune of that mapping alone (`hetmap compile --mapping all-analog --finetune E`).

    E: the epochs hetmap+finetune trains in all, its supernetwork's and refine's.
    """
    began = time.perf_counter()
    tuned = _Adaptable(base, setting)
    mapping = {layer.name: ANALOG for layer in base.layers}
    epochs = (setting.hetmap_epochs or setting.epochs) + REFINE_EPOCHS
    tuned.finetune(mapping, base.train, epochs, MAPPING_LEARNING_RATE)
    details = {"epochs": epochs, "learning_rate": MAPPING_LEARNING_RATE}
    return _scored(base, "all-analog+hwa", tuned.model, mapping, setting, began, details)


def layer_by_layer(base: Calibrated, setting: Setting) -> Outcome:
    """LionHeart: largest layers first, one move to analog at a time, each fine-tuned, measured, kept or reverted."""
    began = time.perf_counter()
    tuned = _Adaptable(base, setting)
    mapping = {layer.name: widest_digital(base.context.target) for layer in base.layers}
    moves = []
    for layer in sorted(base.layers, key=lambda layer: -layer.macs):
        candidate = {**mapping, layer.name: ANALOG}
        if not _fits(base, candidate):
            moves.append({"layer": layer.name, "kept": False, "reason": "tiles"})
            continue
        before = tuned.weights()
        tuned.finetune(candidate, _steps_subset(base, setting, f"layer-by-layer {layer.name}"), epochs=1)
        drop = base.full_precision - measure(tuned.model, base, candidate, setting)[0]
        kept = drop <= setting.max_drop
        moves.append({"layer": layer.name, "macs": layer.macs, "drop_points": drop, "kept": kept})
        if kept:
            mapping = candidate
        else:
            tuned.load(before)
    return _scored(
        base,
        "layer-by-layer",
        tuned.model,
        mapping,
        setting,
        began,
        {"steps_per_move": setting.layer_steps, "moves": moves},
    )


def hessian_traces(net, base: Calibrated, setting: Setting) -> dict[str, float]:
    """Hutchinson: tr(d2L/dW2) ~ mean of v.Hv over Rademacher v, per mappable layer, full precision, one batch."""
    train = base.train
    count = min(train.size, setting.calibration_samples)
    feeds = [
        torch.from_numpy(np.ascontiguousarray(train.head(count)[value.name])) for value in graph_inputs(base.model)
    ]
    labels = torch.from_numpy(np.asarray(train.labels[:count]).astype(np.int64))
    net.set_mapping({})
    net.eval()
    weights = [net.graph.initializer(layer.weight) for layer in base.layers]
    outputs = net(*feeds)
    outputs = outputs[0] if isinstance(outputs, tuple) else outputs
    loss = torch.nn.functional.cross_entropy(outputs.reshape(count, -1), labels)
    gradients = torch.autograd.grad(loss, weights, create_graph=True)
    generator = torch.Generator().manual_seed(base.context.config.seed)
    traces = np.zeros(len(weights))
    for _ in range(setting.hutchinson_vectors):
        vectors = [torch.randint(0, 2, w.shape, generator=generator).to(w.dtype) * 2 - 1 for w in weights]
        products = torch.autograd.grad(gradients, weights, grad_outputs=vectors, retain_graph=True)
        traces += [float((hv * v).sum()) for hv, v in zip(products, vectors)]
    return {layer.name: trace / setting.hutchinson_vectors for layer, trace in zip(base.layers, traces)}


def analog_weight_error(base: Calibrated, setting: Setting) -> dict[str, float]:
    """Squared norm of the weight error of one analog draw at the drift time, per layer (hetmap's noise model)."""
    rng = base.rng("hessian weight error")
    noise, t_inference_s = base.context.target.analog.noise, parse_drift(setting.drift)
    errors = {}
    for layer in base.layers:
        weight = base.model.graph.initializers[layer.weight].const_value.numpy()
        matrix = (
            WeightLayout(layer.op_type, weight.shape, layer.groups, layer.weight_transposed)
            .to_matrix(weight)
            .astype(np.float32)
        )
        errors[layer.name] = float(np.sum((noisy_weights(matrix, noise, t_inference_s, rng) - matrix) ** 2))
    return errors


def hessian(base: Calibrated, setting: Setting) -> Outcome:
    """HAWQ-style: rank by tr(H)/n * |dW|^2 (the expected loss increase), move the least sensitive first."""
    began = time.perf_counter()
    traces = hessian_traces(_Adaptable(base, setting).net, base, setting)
    errors = analog_weight_error(base, setting)
    sensitivity = {layer.name: traces[layer.name] / layer.weight_count * errors[layer.name] for layer in base.layers}
    ranking = sorted(sensitivity, key=sensitivity.get)
    mapping = {layer.name: widest_digital(base.context.target) for layer in base.layers}
    moves = []
    for name in ranking:
        candidate = {**mapping, name: ANALOG}
        if not _fits(base, candidate):
            continue
        drop = base.full_precision - measure(base.model, base, candidate, setting)[0]
        moves.append({"layer": name, "drop_points": drop, "kept": drop <= setting.max_drop})
        if drop > setting.max_drop:
            break
        mapping = candidate
    details = {
        "ranking": ranking,
        "hessian_trace": traces,
        "weight_error": errors,
        "sensitivity": sensitivity,
        "moves": moves,
    }
    return _scored(base, "hessian", base.model, mapping, setting, began, details)


def run_baselines(base: Calibrated, setting: Setting) -> list[Outcome]:
    """Every baseline on one calibrated model, in the order the headline lists them."""
    digital = [o for o in target_options(base.context.target) if o in ("int8", "int4")]
    return [
        preset(base, setting, ANALOG),
        all_analog_finetuned(base, setting),
        *(preset(base, setting, option) for option in digital),
        layer_by_layer(base, setting),
        hessian(base, setting),
    ]

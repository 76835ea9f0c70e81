"""The Mixed-Precision Supernetwork baseline (Benmeziane, Lammie, Boybat et al., Nature Communications 2026).

Written from the paper's method (and its public reference implementation,
read to understand it, not copied) on hetmap's supernetwork: every mappable
layer chooses among full precision, INT8 fake-quantisation and analog
(aihwkit's TorchInferenceRPUConfig with the target's converters and HWA
weight noise), all over one shared weight, with learnable per-layer
selection logits. Three phases:

1. fairness training: each step trains as many paths as there are options,
   every layer taking each option exactly once (strict fairness: a random
   permutation of the options per layer), the analog noise off (the paper
   warms the weights up under stable training);
2. progressive noise scaling with quantisation-aware training: the same
   sampling while the analog training noise ramps linearly from 0 to the
   target's weight error at the drift time; the INT8 paths train with
   fake quantisation throughout;
3. rank-preserving fine-tuning of the logits, weights frozen: each step
   samples mappings uniformly, estimates (accuracy on the scoring data with
   the analog noise on, analog MAC ratio, digital weight size), sorts them
   into Pareto ranks and lowers a pairwise hinge loss asking every mapping
   of a better rank to be more likely under the logits than every mapping
   of a worse one.

The mapping is the argmax of the logits. The hardware has no
full-precision unit, so a layer MPS leaves at `fp` runs at INT8 when
scored (`hardware_mapping`); its weights were trained for both.

Budget: `budget_steps` is hetmap's fine-tune (epochs x ceil(train size /
batch)); MPS spends it 40/40/20 % on the three phases, the proportions of the
reference implementation's command (20/20/10 epochs). Phases 1-2 count
weight optimiser steps (each training one path per option, as hetmap's step
trains three), phase 3 counts logit optimiser steps. The weights train with
hetmap's optimiser (Adam at the same learning rate, cosine-annealed per
phase), so the methods differ in what they train, not how.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import onnx_ir as ir
import torch

from bench.baselines import Calibrated, _Adaptable
from hetmap.graph.data import Dataset
from hetmap.graph.shapes import graph_inputs
from hetmap.mapping.mapping import ANALOG
from hetmap.passes.finetune import FIXED_LEARNING_RATE
from hetmap.train.adaptation import AdaptConfig, adapt
from hetmap.train.supernet import FULL_PRECISION

INT8 = "int8"
OPTIONS = (FULL_PRECISION, INT8, ANALOG)
WEIGHT_BITS = {FULL_PRECISION: 16, INT8: 8, ANALOG: 0}  # digital weight storage; the paper's fp operator is FP16
PHASE_SHARES = (0.4, 0.4, 0.2)


@dataclass(frozen=True)
class MpsSetting:
    steps: int  # total optimiser steps: weights in phases 1-2, logits in phase 3
    batch_size: int = 64
    learning_rate: float = FIXED_LEARNING_RATE  # the weights' (hetmap's fine-tune's without its sweep)
    logit_learning_rate: float = 3e-3  # the reference implementation's
    samples: int = 16  # mappings ranked per phase-3 step (reference implementation)
    margin: float = 0.1  # hinge margin on log-probability differences (reference implementation)
    proxy_samples: int = 256  # scoring-data samples per accuracy estimate in phase 3
    seed: int = 0


@dataclass
class MpsResult:
    mapping: dict[str, str]  # argmax of the logits, over fp/int8/analog
    hardware_mapping: dict[str, str]  # fp scored as int8
    logits: dict[str, list[float]]
    initial_logits: dict[str, list[float]]
    phase_steps: tuple[int, int, int]
    rank_losses: list[float]
    phase_losses: dict[str, list[float]]
    phase_seconds: dict[str, float]
    seconds: float
    model: ir.Model = field(repr=False)  # the supernetwork's trained weights


def budget_steps(train_size: int, epochs: int, batch_size: int = 64) -> int:
    """Optimiser steps of hetmap's fine-tune: epochs x ceil(train size / batch)."""
    return epochs * math.ceil(train_size / batch_size)


def phase_steps(total: int) -> tuple[int, int, int]:
    """The budget split 40/40/20 % over the phases; they add up to `total`, every phase gets one at least from 3 on."""
    if total < 3:
        raise ValueError(f"MPS needs at least 3 optimiser steps, got {total}")
    third = max(1, round(total * PHASE_SHARES[2]))
    first = max(1, round(total * PHASE_SHARES[0]))
    return first, total - first - third, third


class FairSampler:
    """Strict fairness: per step one path per option, each layer's options in a fresh random order."""

    def __init__(self, layers: list[str], options: tuple[str, ...] = OPTIONS):
        self.layers = layers
        self.options = options

    def paths(self, rng: np.random.Generator) -> dict[str, dict[str, str]]:
        orders = {name: rng.permutation(len(self.options)) for name in self.layers}
        return {
            f"path{k}": {name: self.options[order[k]] for name, order in orders.items()}
            for k in range(len(self.options))
        }


def dominates(a: tuple[float, float, float], b: tuple[float, float, float]) -> bool:
    """(accuracy up, analog MAC ratio up, digital weight bits down): a no worse anywhere and better somewhere."""
    no_worse = a[0] >= b[0] and a[1] >= b[1] and a[2] <= b[2]
    return no_worse and (a[0] > b[0] or a[1] > b[1] or a[2] < b[2])


def pareto_ranks(objectives: list[tuple[float, float, float]]) -> list[int]:
    """Non-dominated sorting: rank 0 is the Pareto front, rank 1 the front once it is removed, and so on."""
    ranks = [-1] * len(objectives)
    left, rank = set(range(len(objectives))), 0
    while left:
        front = {i for i in left if not any(dominates(objectives[j], objectives[i]) for j in left if j != i)}
        for i in front:
            ranks[i] = rank
        left -= front
        rank += 1
    return ranks


def rank_loss(logits: torch.Tensor, choices: np.ndarray, ranks: list[int], margin: float) -> torch.Tensor:
    """Mean pairwise hinge: log p(better) should exceed log p(worse) by `margin`.

    logits [layers, options]; choices [mappings, layers] option indices.
    """
    log_probs = logits.log_softmax(dim=1)
    index = torch.as_tensor(choices, dtype=torch.long)
    scores = log_probs.gather(1, index.T).sum(dim=0)  # log-probability of each mapping
    rank = torch.as_tensor(ranks)
    better = rank[:, None] < rank[None, :]
    if not better.any():
        return logits.sum() * 0.0
    gaps = scores[:, None] - scores[None, :]
    return torch.relu(margin - gaps)[better].mean()


def _phase_data(train: Dataset, start_step: int, steps: int, batch_size: int, seed: int) -> Dataset:
    """The samples of `steps` steps from `start_step` on, walking the training set epoch by epoch."""
    epochs = math.ceil((start_step + steps) * batch_size / train.size)
    order = np.concatenate([np.random.default_rng([seed, epoch]).permutation(train.size) for epoch in range(epochs)])
    begin = min(start_step * batch_size, len(order))
    return train.subset(np.sort(order[begin : begin + steps * batch_size]))


class Mps:
    """The supernetwork, its selection logits and the three phases on one calibrated model."""

    def __init__(self, base: Calibrated, setting: MpsSetting, drift: str):
        from bench.baselines import Setting

        self.base = base
        self.setting = setting
        self.adaptable = _Adaptable(
            base, Setting(drift=drift, learning_rate=setting.learning_rate, batch_size=setting.batch_size)
        )
        self.net = self.adaptable.net
        self.draws = 0
        self.layers = base.layers
        self.names = [layer.name for layer in self.layers]
        self.logits = torch.zeros(len(self.layers), len(OPTIONS), requires_grad=True)
        self.input_names = [value.name for value in graph_inputs(base.model)]
        macs = np.array([layer.macs for layer in self.layers], dtype=float)
        self.mac_share = macs / max(macs.sum(), 1.0)
        self.weight_counts = np.array([layer.weight_count for layer in self.layers], dtype=float)

    def set_noise_scale(self, scale: float) -> None:
        self.net.set_noise_scale(scale)

    def train_weights(self, phase: int, data: Dataset, noise_ramp: bool) -> list[float]:
        """One pass of hetmap's adaptation over `data` with the fairness sampler (one optimiser step per batch)."""
        steps = math.ceil(data.size / self.setting.batch_size)
        self.set_noise_scale(1 / steps if noise_ramp else 0.0)

        def on_step(done: int, total: int, info: str) -> None:
            if noise_ramp:
                self.set_noise_scale(min((done + 1) / total, 1.0))

        config = AdaptConfig(
            epochs=1,
            batch_size=self.setting.batch_size,
            learning_rate=self.setting.learning_rate,
            seed=self.setting.seed * 10 + phase,
            device=self.adaptable.device,
        )
        result = adapt(
            self.net, self.input_names, data, FairSampler(self.names), config, run_id=f"mps {phase}", on_step=on_step
        )
        return [record.loss for record in result.history]

    def _proxy_batch(self) -> tuple[list[torch.Tensor], np.ndarray]:
        dataset = self.base.scorer.dataset
        count = min(dataset.size, self.setting.proxy_samples)
        index = np.sort(np.random.default_rng([self.setting.seed, 3]).permutation(dataset.size)[:count])
        feeds = [
            torch.from_numpy(
                np.ascontiguousarray(dataset.inputs[n][index] if dataset.inputs[n].ndim else dataset.inputs[n])
            )
            for n in self.input_names
        ]
        labels = (
            dataset.labels[index] if dataset.labels is not None else self.base.scorer.reference[index].argmax(axis=1)
        )
        return feeds, np.asarray(labels).reshape(-1)

    @torch.no_grad()
    def objectives(
        self, choices: np.ndarray, feeds: list[torch.Tensor], labels: np.ndarray
    ) -> list[tuple[float, float, float]]:
        """(accuracy with the analog noise on, analog MAC ratio, digital weight bits) of each mapping."""
        self.net.eval()
        result = []
        for row in choices:
            self.draws += 1  # the analog estimate sees one chip's noise, a new chip per estimate
            self.net.draw_noise(*(np.random.default_rng([self.setting.seed, 4, self.draws, i]) for i in range(2)))
            self.net.set_mapping({name: OPTIONS[j] for name, j in zip(self.names, row)})
            outputs = self.net(*feeds)
            outputs = outputs[0] if isinstance(outputs, tuple) else outputs
            accuracy = float(np.mean(outputs.reshape(len(labels), -1).argmax(1).numpy() == labels))
            analog = row == OPTIONS.index(ANALOG)
            bits = sum(self.weight_counts[i] * WEIGHT_BITS[OPTIONS[j]] for i, j in enumerate(row))
            result.append((accuracy, float(self.mac_share[analog].sum()), float(bits)))
        self.net.set_mapping({})
        self.net.clear_noise()
        return result

    def train_logits(self, steps: int) -> list[float]:
        """Phase 3: weights frozen, the logits follow the Pareto ranks of uniformly sampled mappings."""
        self.set_noise_scale(1.0)
        optimizer = torch.optim.Adam([self.logits], lr=self.setting.logit_learning_rate)
        rng = np.random.default_rng([self.setting.seed, 3, 1])
        torch.manual_seed(self.setting.seed)
        feeds, labels = self._proxy_batch()
        losses = []
        for _ in range(steps):
            choices = rng.integers(0, len(OPTIONS), size=(self.setting.samples, len(self.layers)))
            ranks = pareto_ranks(self.objectives(choices, feeds, labels))
            optimizer.zero_grad()
            loss = rank_loss(self.logits, choices, ranks, self.setting.margin)
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()))
        return losses

    def logit_table(self) -> dict[str, list[float]]:
        return {name: [float(v) for v in row] for name, row in zip(self.names, self.logits.detach())}

    def argmax_mapping(self) -> dict[str, str]:
        return {name: OPTIONS[int(row.argmax())] for name, row in zip(self.names, self.logits.detach())}


def hardware_mapping(mapping: dict[str, str]) -> dict[str, str]:
    """What the target runs: no full-precision unit, so fp layers take INT8."""
    return {name: INT8 if option == FULL_PRECISION else option for name, option in mapping.items()}


def run_mps(base: Calibrated, setting: MpsSetting, drift: str) -> MpsResult:
    """The three phases from the calibrated model; `seconds` is the wall time to the mapping."""
    began = time.perf_counter()
    mps = Mps(base, setting, drift)
    initial = mps.logit_table()
    first, second, third = phase_steps(setting.steps)
    losses, seconds = {}, {"setup": time.perf_counter() - began}
    for phase, (name, start, steps) in enumerate((("fairness", 0, first), ("noise+qat", first, second)), start=1):
        tick = time.perf_counter()
        data = _phase_data(base.train, start, steps, setting.batch_size, setting.seed)
        losses[name] = mps.train_weights(phase, data, noise_ramp=phase == 2)
        seconds[name] = time.perf_counter() - tick
    tick = time.perf_counter()
    rank_losses = mps.train_logits(third)
    seconds["rank-preserving"] = time.perf_counter() - tick
    mapping = mps.argmax_mapping()
    mps.adaptable.load(mps.adaptable.weights())
    return MpsResult(
        mapping,
        hardware_mapping(mapping),
        mps.logit_table(),
        initial,
        (first, second, third),
        rank_losses,
        losses,
        seconds,
        time.perf_counter() - began,
        mps.adaptable.model,
    )

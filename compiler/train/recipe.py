"""The fine-tuning recipe's choices that need measurements: the learning rate, by a small sweep.

Each candidate rate trains a short run (a quarter of the run's steps,
6 to 24, noise ramp included) from the same starting weights on most of
the training data, and is scored by the loss of the sandwich paths (each
analog path under one fixed chip draw) on the held-out rest; the best rate
wins and the weights go back to where they started. A rate whose run
diverges scores infinity. The sweep is seeded like the adaptation, so it
chooses the same rate every time.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np
import torch

from hetmap.errors import HetmapError
from hetmap.graph.data import Dataset
from hetmap.train.adaptation import (
    AdaptConfig,
    MappingSampler,
    adapt,
    first_output,
    input_tensors,
    labels_of,
    mixed_loss,
    noise_generators,
    teacher_outputs,
)

CANDIDATE_RATES = (1e-4, 3e-4, 1e-3)
VALIDATION_SHARE = 0.2
SWEEP_STEPS = (6, 24)  # per candidate: a quarter of the run's steps, within these bounds


@dataclass
class Sweep:
    chosen: float
    validation_loss: dict[str, float]  # per candidate rate (as text), the lower the better
    steps_per_rate: int
    validation_samples: int


def choose_learning_rate(
    net,
    input_names: list[str],
    train: Dataset,
    sampler: MappingSampler,
    config: AdaptConfig,
    candidates: tuple[float, ...] = CANDIDATE_RATES,
) -> Sweep:
    """The candidate rate whose short run leaves the lowest validation loss; `net`'s weights are unchanged."""
    if train.size < 2:
        raise HetmapError(
            "--finetune-lr auto needs at least 2 training samples (one trains each candidate rate, one scores it); "
            "give --finetune-lr a rate, or more samples in --train"
        )
    order = np.random.default_rng([config.seed, 17]).permutation(train.size)
    held_out = max(1, min(int(train.size * VALIDATION_SHARE), train.size - 1))
    validation, fit = train.subset(np.sort(order[:held_out])), train.subset(np.sort(order[held_out:]))
    run_steps = config.epochs * math.ceil(train.size / config.batch_size)
    steps = min(max(SWEEP_STEPS[0], run_steps // 4), SWEEP_STEPS[1], math.ceil(fit.size / config.batch_size))
    fit = fit.subset(np.arange(min(fit.size, steps * config.batch_size)))
    start = {name: p.detach().clone() for name, p in net.named_parameters() if p.requires_grad}
    scale = _noise_scale(net)
    scorer = _Validation(net, input_names, validation, sampler, config)
    losses = {}
    for rate in candidates:
        short = dataclasses.replace(config, epochs=1, learning_rate=rate, checkpoint=None)
        try:
            adapt(net, input_names, fit, sampler, short, run_id=f"sweep {rate}")
            losses[f"{rate:g}"] = scorer.loss()
        except HetmapError:  # diverged
            losses[f"{rate:g}"] = math.inf
        _restore(net, start)
    net.set_noise_scale(scale)
    finite = {rate: loss for rate, loss in losses.items() if math.isfinite(loss)}
    if not finite:
        raise HetmapError(f"fine-tuning diverged at every learning rate tried ({', '.join(losses)}); check the data")
    chosen = float(min(finite, key=finite.get))
    return Sweep(chosen, losses, steps, validation.size)


class _Validation:
    """The loss of the sandwich paths on held-out data, analog paths under one fixed chip draw."""

    def __init__(self, net, input_names, data: Dataset, sampler: MappingSampler, config: AdaptConfig):
        self.net, self.config = net, config
        device = torch.device(config.device)
        net.to(device)
        inputs = input_tensors(data, input_names)
        self.feeds = [tensor.to(device) for tensor in inputs.values()]
        self.labels = labels_of(net, input_names, inputs, data, device) if config.label_weight > 0 else None
        self.teacher = None
        if self.labels is None or config.label_weight < 1:
            self.teacher = teacher_outputs(net, input_names, inputs, data.size, config.batch_size, device)
        self.paths = sampler.paths(np.random.default_rng([config.seed, 18]))

    @torch.no_grad()
    def loss(self) -> float:
        net, config = self.net, self.config
        net.eval()
        net.set_noise_scale(1.0)
        net.draw_noise(*noise_generators(config.seed + 19))
        total = 0.0
        device = self.feeds[0].device
        for mapping in self.paths.values():
            net.set_mapping(mapping)
            outputs = first_output(net(*self.feeds))
            labels = None if self.labels is None else self.labels.to(device)
            teacher = None if self.teacher is None else self.teacher.to(device)
            total += float(mixed_loss(outputs, labels, teacher, config.label_weight)) / len(self.paths)
        net.set_mapping({})
        net.clear_noise()
        return total if math.isfinite(total) else math.inf


def _noise_scale(net) -> float:
    scales = [layer.analog.noise_scale for layer in net.mixed.values() if layer.analog is not None]
    return scales[0] if scales else 1.0


def _restore(net, state: dict[str, torch.Tensor]) -> None:
    parameters = dict(net.named_parameters())
    with torch.no_grad():
        for name, value in state.items():
            parameters[name].copy_(value)

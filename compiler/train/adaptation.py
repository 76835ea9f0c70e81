"""Mapping-aware adaptation: train the supernetwork's shared weights over the mappings the solver may pick.

Each optimiser step trains several paths through the supernetwork on the
same minibatch and sums their gradients (the sandwich rule): the all-analog
mapping and the all-digital one at the widest width (the two ends of the
analog share), plus one mapping sampled per layer from a Boltzmann
distribution over the options' measured sensitivity drops, with the
accuracy budget as temperature. The solver keeps options whose drops fit the
budget, so that is where the samples concentrate; options far over budget
are rarely trained. With a fixed mapping (`--mapping`), only it is trained.

Each step draws one chip (the PCM noise of every analog layer at the drift
time, hetmap.train.analog) that its analog paths see, scaled by a ramp from
0 to the target's level over the first `noise_ramp` of the steps: weights
first move toward the digital paths' optimum, then harden. The loss mixes
distillation from the full-precision model (its outputs on the training
data, computed once) with the labels when there are any (`label_weight`).

Every random draw of a step (batch order, sampled mapping, device noise) is
seeded from (seed, epoch, step), so a run resumed from its checkpoint
continues exactly as an uninterrupted one.
"""

from __future__ import annotations

import hashlib
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from hetmap.errors import HetmapError
from hetmap.graph.data import Dataset
from hetmap.mapping.mapping import ANALOG, option_bits

CHECKPOINT_FORMAT = "hetmap.finetune/1"
RMS_FLOOR = 1e-3  # a tensor of zeros (a fresh bias) still moves under a relative rate


@dataclass(frozen=True)
class AdaptConfig:
    epochs: int
    batch_size: int = 64
    learning_rate: float = 1e-4
    seed: int = 0
    device: str = "cpu"
    checkpoint: Path | None = None  # resumed from when it belongs to the same run
    noise_ramp: float | None = None  # share of the steps the noise takes to reach full scale; None: the caller's
    label_weight: float = 1.0  # labels' share of the loss beside distillation (without labels: distillation)
    relative_rate: bool = False  # learning_rate as a share of each tensor's RMS at the start, per step


@dataclass
class EpochRecord:
    epoch: int
    loss: float
    accuracy: dict[str, float]  # training accuracy per path (labels only), during the epoch
    seconds: float


@dataclass
class AdaptResult:
    history: list[EpochRecord] = field(default_factory=list)
    steps: int = 0
    resumed_from_epoch: int = 0


class MappingSampler:
    """The paths one step trains: named mappings over the layer names."""

    def __init__(
        self,
        layers: list[str],
        options: list[str],
        drops: dict[str, dict[str, float]] | None,
        temperature: float,
        fixed: dict[str, str] | None = None,
    ):
        self.layers = layers
        self.options = options
        self.fixed = fixed
        digital = [o for o in options if o != ANALOG]
        self.widest = max(digital, key=option_bits) if digital else None
        scale = max(temperature, 0.05)
        self.probabilities = {}
        for name in layers:
            drop = np.array([max(drops[name][o], 0.0) if drops else 0.0 for o in options])
            weights = np.exp(-(drop - drop.min()) / scale)
            self.probabilities[name] = weights / weights.sum()

    def paths(self, rng: np.random.Generator) -> dict[str, dict[str, str]]:
        if self.fixed is not None:
            return {"mapping": self.fixed}
        paths = {"all-analog": {name: ANALOG for name in self.layers}}
        if self.widest is not None:
            paths[f"all-{self.widest}"] = {name: self.widest for name in self.layers}
        paths["sampled"] = {
            name: self.options[rng.choice(len(self.options), p=p)] for name, p in self.probabilities.items()
        }
        return paths


def torch_device(name: str) -> str:
    """The torch device `--device` names; auto picks CUDA when torch sees one."""
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise HetmapError("--device cuda: torch sees no CUDA device here; use --device cpu or auto")
    return name


def _step_seed(seed: int, epoch: int, step: int) -> int:
    return int(np.random.SeedSequence([seed, epoch, step]).generate_state(1)[0])


def _loss(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy on class labels; otherwise regression onto the targets (labels or teacher outputs)."""
    if targets.dtype in (torch.int32, torch.int64):
        return torch.nn.functional.cross_entropy(outputs.reshape(outputs.shape[0], -1), targets.reshape(-1))
    if outputs.dim() == 2 and outputs.shape[1] > 1 and targets.shape == outputs.shape:  # teacher logits
        return torch.nn.functional.kl_div(outputs.log_softmax(1), targets.softmax(1), reduction="batchmean")
    return torch.nn.functional.mse_loss(outputs, targets.reshape(outputs.shape).to(outputs.dtype))


def mixed_loss(outputs: torch.Tensor, labels, teacher, label_weight: float) -> torch.Tensor:
    """label_weight x the label loss + the rest x distillation from the full-precision outputs."""
    if labels is None or teacher is None:
        return _loss(outputs, teacher if labels is None else labels)
    return label_weight * _loss(outputs, labels) + (1 - label_weight) * _loss(outputs, teacher)


def noise_generators(seed: int) -> tuple[np.random.Generator, np.random.Generator]:
    """Programming and read generators of one step's chip."""
    program, read = np.random.SeedSequence([seed, 1]).spawn(2)
    return np.random.default_rng(program), np.random.default_rng(read)


def fingerprint(*parts: bytes | str) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part if isinstance(part, bytes) else part.encode())
    return digest.hexdigest()[:16]


def first_output(outputs) -> torch.Tensor:
    return outputs[0] if isinstance(outputs, tuple) else outputs


def adapt(
    net,
    input_names: list[str],
    train: Dataset,
    sampler: MappingSampler,
    config: AdaptConfig,
    run_id: str,
    on_step: Callable[[int, int, str], None] = lambda done, total, info: None,
) -> AdaptResult:
    """Fine-tune the trainable parameters of `net` for config.epochs epochs; checkpoints after each epoch."""
    device = torch.device(config.device)
    net.to(device)
    inputs = input_tensors(train, input_names)
    batch_inputs = [name for name in input_names if inputs[name].dim() > 0]
    labels = labels_of(net, input_names, inputs, train, device) if config.label_weight > 0 else None
    teacher = None
    if labels is None or config.label_weight < 1:
        teacher = teacher_outputs(net, input_names, inputs, train.size, config.batch_size, device)
    size = train.size
    steps_per_epoch = math.ceil(size / config.batch_size)
    total = steps_per_epoch * config.epochs
    parameters = [p for p in net.parameters() if p.requires_grad]
    if not parameters:
        raise HetmapError("fine-tuning scope leaves no trainable parameter in this model; choose --finetune-scope all")
    optimizer = torch.optim.Adam(_rate_groups(parameters, config), lr=config.learning_rate)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * min(step / max(total, 1), 1.0)))
    )
    result = AdaptResult()
    start = _resume(config.checkpoint, run_id, net, optimizer, schedule, result)
    net.train()
    for epoch in range(start, config.epochs):
        began, losses, correct, seen = time.perf_counter(), [], {}, 0
        order = np.random.default_rng([config.seed, epoch]).permutation(size)
        for step in range(steps_per_epoch):
            index = torch.from_numpy(order[step * config.batch_size : (step + 1) * config.batch_size])
            seed = _step_seed(config.seed, epoch, step)
            torch.manual_seed(seed)
            feeds = [(inputs[n][index] if n in batch_inputs else inputs[n]).to(device) for n in input_names]
            label = labels[index].to(device) if labels is not None else None
            soft = teacher[index].to(device) if teacher is not None else None
            optimizer.zero_grad(set_to_none=True)
            paths = sampler.paths(np.random.default_rng(seed))
            done = epoch * steps_per_epoch + step
            if config.noise_ramp is not None:
                net.set_noise_scale(min(1.0, (done + 1) / max(config.noise_ramp * total, 1)))
            if any(ANALOG in mapping.values() for mapping in paths.values()):
                net.draw_noise(*noise_generators(seed))
            step_loss = 0.0
            for name, mapping in paths.items():
                net.set_mapping(mapping)
                outputs = first_output(net(*feeds))
                loss = mixed_loss(outputs, label, soft, config.label_weight) / len(paths)
                if not torch.isfinite(loss):
                    raise HetmapError(
                        f"fine-tuning diverged: the {name} path's loss is {loss.item()} at step {done + 1}"
                    )
                loss.backward()
                step_loss += loss.item()
                if label is not None and label.dtype == torch.int64:
                    hits = (outputs.reshape(len(index), -1).argmax(1) == label.reshape(-1)).sum()
                    correct[name] = correct.get(name, 0) + int(hits)
            optimizer.step()
            schedule.step()
            losses.append(step_loss)
            seen += len(index)
            result.steps += 1
            accuracy = {name: hits / seen for name, hits in correct.items()}
            info = f"loss {np.mean(losses):.3f}" + "".join(f" {name} {100 * a:.1f}%" for name, a in accuracy.items())
            on_step(epoch * steps_per_epoch + step + 1, total, info)
        result.history.append(EpochRecord(epoch + 1, float(np.mean(losses)), accuracy, time.perf_counter() - began))
        _save(config.checkpoint, run_id, epoch + 1, net, optimizer, schedule, result)
    net.set_mapping({})
    net.clear_noise()
    net.eval()
    return result


def _rate_groups(parameters: list[torch.Tensor], config: AdaptConfig) -> list[dict]:
    """One group per tensor; with `relative_rate`, each tensor's rate is learning_rate x its RMS.

    Adam moves every weight by about its rate per step whatever the gradient's scale, so a fixed rate
    is a larger relative step for a network of smaller weights (ResNet-20's median layer RMS is half
    ResNet-8's, its smallest a sixth): the relative rate moves every layer by the same share.
    """
    if not config.relative_rate:
        return [{"params": parameters}]
    groups = []
    for parameter in parameters:
        rms = float(parameter.detach().float().pow(2).mean().sqrt()) if parameter.numel() else 0.0
        groups.append({"params": [parameter], "lr": config.learning_rate * max(rms, RMS_FLOOR)})
    return groups


def labels_of(net, input_names, inputs, train: Dataset, device) -> torch.Tensor | None:
    """The labels as class indices (checked against the model's outputs) or regression targets; None without."""
    if train.labels is None:
        return None
    labels = np.asarray(train.labels)
    net.set_mapping({})
    with torch.no_grad():
        first = [(inputs[n][:1] if inputs[n].dim() else inputs[n]).to(device) for n in input_names]
        classes = first_output(net(*first)).reshape(1, -1).shape[1]
    if labels.dtype.kind == "f" and labels[0].size == classes == 1:  # one value per sample: a regression target
        return torch.from_numpy(labels.astype(np.float32))
    if labels[0].size == classes > 1:  # one-hot or soft rows, which scoring refuses too
        raise HetmapError(
            f"training data '{train.source}': labels 'y' have shape {list(labels.shape)}; give one class index "
            "per sample (for one-hot rows: np.argmax(y, axis=1))"
        )
    if labels.dtype.kind == "f" and not np.array_equal(labels, np.round(labels)):  # the scorer's rule, too
        raise HetmapError(
            f"training data '{train.source}': labels 'y' must be class indices, or targets shaped like the "
            f"model's {classes} outputs per sample (found the fraction {labels[labels != np.round(labels)][0]:g})"
        )
    if labels.min() < 0 or labels.max() >= classes:
        raise HetmapError(
            f"training data '{train.source}': labels 'y' must be class indices 0..{classes - 1} "
            f"for this model's {classes} outputs (found {labels.min()}..{labels.max()})"
        )
    return torch.from_numpy(labels.astype(np.int64))


def input_tensors(data: Dataset, input_names: list[str]) -> dict[str, torch.Tensor]:
    """The data's inputs as tensors; a scalar input (no samples axis) stays 0-d, as np.ascontiguousarray would not."""
    return {name: torch.from_numpy(np.asarray(data.inputs[name], order="C")) for name in input_names}


def teacher_outputs(net, input_names, inputs, size: int, batch_size: int, device) -> torch.Tensor:
    """The full-precision model's own outputs on the training data: distillation's targets."""
    net.set_mapping({})
    net.clear_noise()
    return outputs_over(net, input_names, inputs, size, batch_size, device)


@torch.no_grad()
def outputs_over(net, input_names, inputs, size: int, batch_size: int, device) -> torch.Tensor:
    """The net's first output (eval mode, on the CPU) over `size` samples of `inputs`, `batch_size` at a time."""
    net.eval()
    chunks = []
    for start in range(0, size, batch_size):
        feeds = [
            (inputs[n][start : start + batch_size] if inputs[n].dim() else inputs[n]).to(device) for n in input_names
        ]
        chunks.append(first_output(net(*feeds)).cpu())
    return torch.cat(chunks)


def _trainable_state(net) -> dict[str, torch.Tensor]:
    return {name: p.detach().cpu() for name, p in net.named_parameters() if p.requires_grad}


def _save(path: Path | None, run_id: str, epoch: int, net, optimizer, schedule, result: AdaptResult) -> None:
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {
        "format": CHECKPOINT_FORMAT,
        "run": run_id,
        "epoch": epoch,
        "parameters": _trainable_state(net),
        "optimizer": optimizer.state_dict(),
        "schedule": schedule.state_dict(),
        "history": [vars(record) for record in result.history],
        "steps": result.steps,
    }
    partial = path.with_name(path.name + ".partial")
    torch.save(state, partial)
    os.replace(partial, path)


def _resume(path: Path | None, run_id: str, net, optimizer, schedule, result: AdaptResult) -> int:
    """The epoch to start from: after the checkpoint's, when it belongs to this run; else 0."""
    if path is None or not path.is_file():
        return 0
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # a checkpoint cut short or from another tool: start over, it will be rewritten
        return 0
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT or state.get("run") != run_id:
        return 0
    parameters = dict(net.named_parameters())
    with torch.no_grad():
        for name, value in state["parameters"].items():
            parameters[name].copy_(value)
    optimizer.load_state_dict(state["optimizer"])
    schedule.load_state_dict(state["schedule"])
    result.history = [EpochRecord(**record) for record in state["history"]]
    result.steps = state["steps"]
    result.resumed_from_epoch = state["epoch"]
    return state["epoch"]

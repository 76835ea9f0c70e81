"""Train the reference models (digits, shapes32) and export each to ONNX with its data and onnxruntime accuracy.

    python -m hetmap.models.train [--seed 0] [--only NAME] [--out DIR]

Writes NAME.onnx, NAME.train.npz, NAME.test.npz (x float32, y int64) and accuracy.json into models/.
"""

import argparse
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn

from hetmap.models import digits, shapes32
from hetmap.models.architectures import ARCHITECTURES, weight_count

MODELS_DIR = Path(__file__).resolve().parent
BATCH_SIZE = 64


@dataclass(frozen=True)
class Recipe:
    """How one reference model is trained and exported; export routes differ on purpose, as users' models do."""

    layout: str  # digits: "flat", "image" or "tokens"; shapes32 images are always (N, 3, 32, 32)
    epochs: int
    learning_rate: float
    exporter: str  # "dynamo" (torch.export, opset 20) or "torchscript"
    opset: int | None = None  # TorchScript only
    keep_batchnorm: bool = False  # TorchScript only: skip constant folding so BatchNormalization stays unfolded
    data: str = "digits"  # or "shapes32"
    one_cycle: bool = False  # learning rate warms up to learning_rate, then anneals to ~0 (OneCycleLR)
    dihedral: bool = False  # each batch turned by a random multiple of 90 degrees and maybe mirrored
    channels_last: bool = False  # train in NHWC memory layout: ~25 % faster convolutions on CPU; export is unaffected


RECIPES = {
    "cnn": Recipe("image", epochs=30, learning_rate=3e-3, exporter="dynamo"),
    "mlp": Recipe("flat", epochs=40, learning_rate=2e-3, exporter="torchscript", opset=13),
    "resnet": Recipe("image", epochs=30, learning_rate=3e-3, exporter="torchscript", opset=11, keep_batchnorm=True),
    "transformer": Recipe("tokens", epochs=80, learning_rate=2e-3, exporter="dynamo"),
    # shapes32's classes are closed under rotation and mirroring, so the dihedral turns are free extra data;
    # the epochs keep both trainings to about 7.5 minutes on one thread.
    "resnet8": Recipe(
        "image",
        epochs=30,
        learning_rate=3e-3,
        exporter="dynamo",
        data="shapes32",
        one_cycle=True,
        dihedral=True,
        channels_last=True,
    ),
    "resnet20": Recipe(
        "image",
        epochs=20,
        learning_rate=3e-3,
        exporter="dynamo",
        data="shapes32",
        one_cycle=True,
        dihedral=True,
        channels_last=True,
    ),
}


def dihedral_turns(images: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """Each image turned by its own random multiple of 90 degrees and mirrored or not (per image, so that
    BatchNorm's batch statistics do not swing with one shared orientation)."""
    quarter_turns, mirrored = rng.integers(4, size=len(images)), rng.random(len(images)) < 0.5
    turned = images.clone()
    for turns in range(4):
        for mirror in (False, True):
            chosen = torch.from_numpy(np.flatnonzero((quarter_turns == turns) & (mirrored == mirror)))
            variant = torch.rot90(images[chosen], turns, dims=(2, 3))
            turned[chosen] = torch.flip(variant, dims=(3,)) if mirror else variant
    return turned


def train(model: nn.Module, x: np.ndarray, y: np.ndarray, recipe: Recipe, rng: np.random.Generator) -> None:
    """Adam on cross-entropy; batch order (and the dihedral turns) come from rng so a seed fixes the run."""
    optimizer = torch.optim.Adam(model.parameters(), lr=recipe.learning_rate)
    steps = recipe.epochs * -(-len(x) // BATCH_SIZE)
    schedule = None
    if recipe.one_cycle:
        schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, recipe.learning_rate, total_steps=steps)
    if recipe.channels_last:
        model.to(memory_format=torch.channels_last)
    x_all, y_all = torch.from_numpy(x), torch.from_numpy(y)
    model.train()
    for _ in range(recipe.epochs):
        order = torch.from_numpy(rng.permutation(len(x)))
        for batch in order.split(BATCH_SIZE):
            inputs = x_all[batch]
            if recipe.dihedral:
                inputs = dihedral_turns(inputs, rng)
            if recipe.channels_last:
                inputs = inputs.contiguous(memory_format=torch.channels_last)
            optimizer.zero_grad()
            loss = nn.functional.cross_entropy(model(inputs), y_all[batch])
            loss.backward()
            optimizer.step()
            if schedule is not None:
                schedule.step()
    model.to(memory_format=torch.contiguous_format)
    model.eval()


def export(model: nn.Module, example: np.ndarray, recipe: Recipe, path: Path) -> None:
    """Export with input `x`, output `logits` and a symbolic batch dimension `batch`."""
    args = (torch.from_numpy(example[:2]),)
    if recipe.exporter == "dynamo":
        program = torch.onnx.export(
            model,
            args,
            dynamo=True,
            verbose=False,
            input_names=["x"],
            output_names=["logits"],
            dynamic_shapes=({0: torch.export.Dim("batch")},),
        )
        proto = program.model_proto
        for node in proto.graph.node:  # stack traces hold this machine's file paths; the rest of torch's metadata stays
            kept = [p for p in node.metadata_props if p.key != "pkg.torch.onnx.stack_trace"]
            del node.metadata_props[:]
            node.metadata_props.extend(kept)
        onnx.save(proto, path)
        return
    # In eval mode the TorchScript exporter fuses Conv+BatchNorm while constant folding; without folding the BN stays.
    torch.onnx.export(
        model,
        args,
        path,
        dynamo=False,
        opset_version=recipe.opset,
        input_names=["x"],
        output_names=["logits"],
        dynamic_axes={"x": {0: "batch"}, "logits": {0: "batch"}},
        do_constant_folding=not recipe.keep_batchnorm,
    )


def onnx_logits(path: Path, x: np.ndarray) -> np.ndarray:
    """Logits of an exported model, computed by onnxruntime on CPU."""
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(["logits"], {"x": x})[0]


def build(name: str, seed: int, out_dir: Path) -> dict:
    """Train, export and evaluate one model; returns its summary (weights, bytes, accuracy, torch/ORT max difference,
    training time)."""
    recipe = RECIPES[name]
    torch.manual_seed(seed)
    if recipe.data == "shapes32":
        split = shapes32.load_split(seed)
        x_train, x_test = split.x_train, split.x_test
    else:
        split = digits.load_split(seed)
        x_train, x_test = digits.as_layout(split.x_train, recipe.layout), digits.as_layout(split.x_test, recipe.layout)
    model = ARCHITECTURES[name]()
    start = time.perf_counter()
    train(model, x_train, split.y_train, recipe, np.random.default_rng(seed))
    train_seconds = time.perf_counter() - start

    path = out_dir / f"{name}.onnx"
    export(model, x_test, recipe, path)
    onnx.checker.check_model(onnx.load(path), full_check=True)
    np.savez_compressed(out_dir / f"{name}.train.npz", x=x_train, y=split.y_train)
    np.savez_compressed(out_dir / f"{name}.test.npz", x=x_test, y=split.y_test)

    logits = onnx_logits(path, x_test)
    with torch.no_grad():
        torch_logits = model(torch.from_numpy(x_test)).numpy()
    return {
        "weights": weight_count(model),
        "onnx_bytes": path.stat().st_size,
        "accuracy": float(np.mean(logits.argmax(axis=1) == split.y_test)),
        "max_abs_diff_torch_vs_ort": float(np.abs(logits - torch_logits).max()),
        "train_seconds": round(train_seconds, 1),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", choices=sorted(RECIPES), help="build one model, keep the others' accuracy entries")
    parser.add_argument("--out", type=Path, default=MODELS_DIR, help="output folder (default: the models/ package)")
    args = parser.parse_args(argv)

    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    accuracy_path = args.out / "accuracy.json"
    accuracy = json.loads(accuracy_path.read_text()) if args.only and accuracy_path.exists() else {}
    for name in [args.only] if args.only else RECIPES:
        summary = build(name, args.seed, args.out)
        accuracy[name] = summary["accuracy"]
        print(name, json.dumps(summary))
    accuracy_path.write_text(json.dumps(dict(sorted(accuracy.items())), indent=2) + "\n")


if __name__ == "__main__":
    main()

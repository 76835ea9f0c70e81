"""hetmap against the Mixed-Precision Supernetwork (bench/mps.py) and the headline's baselines, every mapping scored alike.

Per model on hermes (fine-tuning and mapping decisions at 1 day of drift,
as bench.headline): full precision, all-INT8 (the energy reference),
all-analog, all-analog after hardware-aware fine-tuning, LionHeart-style
layer-by-layer, the MPS baseline, hetmap without and with fine-tuning, and
hetmap given MPS's measured drop as its budget (the same accuracy, so the
analog shares compare). Every mapping, with the weights its method produced, is then scored by
hetmap's simulator on the model's test set at 1 hour, 1 day and 1 year
after programming, over the same `--seeds` Monte-Carlo draws (one chip
programmed per seed, read at each time). Beside each row: analog MAC and
weight share, energy per inference against all-INT8, tiles used and the
wall time the method needs to produce its mapping. MPS is given hetmap's
training budget in optimiser steps. The paper's published figures for the
same model families are quoted beside ours.

    python -m bench.compare [--models resnet8,resnet20,cnn,resnet] [--epochs N] [--seeds N] [--quick]

`--validation N` (shapes32 models): every method decides on N newly drawn
images instead of a quarter of the training file (which then trains whole);
hetmap verifies on half of them, so N sets what a budget can certify.

Writes bench/results/compare.json and compare.md (other --models:
compare.NAME-NAME.*; --quick: compare.quick.*, the digits MLP on a training
subset, one epoch, 2 seeds; --validation N adds .validationN to the stem,
--no-labels .nolabels: fine-tuning on the training images alone).
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx_ir as ir

from bench import headline
from bench.baselines import Calibrated, Setting, all_analog_finetuned, layer_by_layer, measure, outcome, prepare
from bench.compare_goals import goals
from bench.compare_tables import PAPER, PAPER_SOURCE, write_markdown
from bench.mps import MpsSetting, budget_steps, run_mps
from hetmap.graph.data import load_dataset
from hetmap.graph.shapes import graph_inputs
from hetmap.mapping.mapping import ANALOG
from hetmap.models import reference_path, shapes32
from hetmap.sim.drift import parse_drift
from hetmap.sim.scorer import Scorer
from hetmap.targets import Target, load_target

MODELS = ("resnet8", "resnet20")
QUICK_MODEL = "mlp"
QUICK_TRAIN_SAMPLES = 256
VALIDATION_SHARE = 0.25  # of the training file: the data every method decides on
FRESH_VALIDATION_SEED = 20261201  # --validation N: a shapes32 stream no bundled file was drawn from
SHAPES32_MODELS = ("resnet8", "resnet20")
TARGET = "hermes"
DRIFTS = ("1h", "1d", "1y")
SEEDS = 5
EPOCHS = 1  # fine-tuning epochs: the two shapes32 ResNets compare within 30 minutes on 2 cores
ROWS = (
    "full-precision",
    "all-int8",
    "all-analog",
    "all-analog+hwa",
    "layer-by-layer",
    "mps",
    "hetmap",
    "hetmap+finetune",
    "hetmap@mps-drop",
    "hetmap+finetune@mps-drop",
)
RESULTS = Path(__file__).resolve().parent / "results"


@dataclass
class Row:
    method: str
    mapping: dict[str, str]
    accuracy: dict[str, dict]  # drift -> {"mean", "std", "per_seed"}, percent
    analog_mac_share: float
    analog_weight_share: float
    energy_vs_int8: float | None  # None: full precision is no hardware mapping
    tiles_used: int
    seconds: float  # wall time to the mapping
    details: dict = field(default_factory=dict)


def score(base: Calibrated, test: Scorer, model: ir.Model, mapping: dict[str, str], seeds: int) -> dict[str, dict]:
    """hetmap's simulator on the test set at every drift time over `seeds` chips: the same draws for every method."""
    times = [parse_drift(d) for d in DRIFTS]
    per_time = base.measurer(model, test).measure(mapping, times, seeds)
    return {
        d: {"mean": 100 * float(np.mean(v)), "std": 100 * float(np.std(v)), "per_seed": [100 * x for x in v]}
        for d, v in zip(DRIFTS, per_time)
    }


def row(
    base: Calibrated,
    test: Scorer,
    method: str,
    model: ir.Model,
    mapping: dict[str, str],
    seconds: float,
    seeds: int,
    details: dict | None = None,
) -> Row:
    accuracy = score(base, test, model, mapping, seeds)
    scored = outcome(base, method, mapping, accuracy["1d"]["mean"], accuracy["1d"]["std"], seconds)
    analog = [layer for layer in base.layers if mapping[layer.name] == ANALOG]
    mac_share = sum(layer.macs for layer in analog) / max(sum(layer.macs for layer in base.layers), 1)
    return Row(
        method,
        dict(mapping),
        accuracy,
        mac_share,
        scored.analog_weight_share,
        scored.energy_vs_int8,
        sum(layer.tiles for layer in analog),
        seconds,
        details or {},
    )


def full_precision_row(test: Scorer) -> Row:
    value = {"mean": 100 * test.full_precision, "std": 0.0, "per_seed": [100 * test.full_precision]}
    return Row("full-precision", {}, {d: value for d in DRIFTS}, 0.0, 0.0, None, 0, 0.0)


def split_training(
    train_path: Path, folder: Path, train_samples: int | None, fresh: int = 0, labels: bool = True
) -> tuple[Path, Path]:
    """(training, validation) files: a seeded VALIDATION_SHARE of the training file decides, the rest (or `train_samples` of it) trains.

    With `fresh` (shapes32 models), `fresh` newly drawn images decide instead and the whole file trains.
    Without `labels` the training file holds the images alone (fine-tuning distils); the validation file keeps them.
    """
    with np.load(train_path) as archive:
        arrays = {key: archive[key] for key in archive.files}
    order = np.random.default_rng(0).permutation(len(arrays["x"]))
    held = 0 if fresh else round(VALIDATION_SHARE * len(order))
    trained = {key: array[np.sort(order[held:][:train_samples])] for key, array in arrays.items()}
    np.savez(folder / "train.npz", **{key: array for key, array in trained.items() if labels or key != "y"})
    if fresh:
        x, y = shapes32.generate(fresh, np.random.default_rng(FRESH_VALIDATION_SEED))
        np.savez(folder / "validation.npz", x=x, y=y)
    else:
        np.savez(folder / "validation.npz", **{key: array[np.sort(order[:held])] for key, array in arrays.items()})
    return folder / "train.npz", folder / "validation.npz"


def run_model(
    name: str,
    target: Target,
    setting: Setting,
    seeds: int,
    log,
    train_samples: int | None = None,
    fresh: int = 0,
    labels: bool = True,
) -> dict:
    with tempfile.TemporaryDirectory(prefix="hetmap-compare-") as tmp:
        train_path, validation_path = split_training(
            reference_path(f"{name}.train.npz"), Path(tmp), train_samples, fresh, labels
        )
        base = prepare(reference_path(f"{name}.onnx"), target, validation_path, train_path)
        dtypes = {value.name: value.dtype.numpy() for value in graph_inputs(base.model)}
        test = Scorer(base.model, load_dataset(reference_path(f"{name}.test.npz"), dtypes))
        rows = _rows(base, test, name, target, setting, seeds, log, (train_path, validation_path), Path(tmp), labels)
    by_method = {r.method: r for r in rows}
    return {
        "full_precision": 100 * test.full_precision,
        "layers": len(base.layers),
        "train_samples": base.train.size,
        "validation_samples": base.scorer.dataset.size,
        "test_samples": test.dataset.size,
        "steps": by_method["mps"].details["steps"],
        "rows": {m: dataclasses.asdict(by_method[m]) for m in ROWS if m in by_method},
    }


def _rows(
    base: Calibrated,
    test: Scorer,
    name: str,
    target: Target,
    setting: Setting,
    seeds: int,
    log,
    data: tuple[Path, Path],
    tmp: Path,
    labels: bool = True,
) -> list[Row]:
    """Every method decides on the validation split (hetmap compiles with it as --data) and is scored on the test set.

    Without labels, layer-by-layer (the costliest baseline, and no question of distillation's) is left out.
    """
    layers = [layer.name for layer in base.layers]
    rows = [full_precision_row(test)]
    for option in ("int8", ANALOG):
        rows.append(row(base, test, f"all-{option}", base.model, {n: option for n in layers}, 0.0, seeds))
    for method in (all_analog_finetuned, layer_by_layer) if labels else (all_analog_finetuned,):
        result = method(base, setting)
        rows.append(
            row(
                base,
                test,
                result.method,
                result.model,
                result.mapping,
                result.seconds,
                seeds,
                {"decision_accuracy_1d": result.accuracy},
            )
        )
        log(f"{name}: {result.method} in {result.seconds:.1f} s")
    steps = budget_steps(base.train.size, setting.epochs, setting.batch_size)
    hetmap_epochs = setting.hetmap_epochs or setting.epochs
    mps = run_mps(
        base, MpsSetting(steps=steps, batch_size=setting.batch_size, learning_rate=setting.learning_rate), setting.drift
    )
    fits = sum(l.tiles for l in base.layers if mps.hardware_mapping[l.name] == ANALOG) <= target.analog.count
    mps_row = row(
        base,
        test,
        "mps",
        mps.model,
        mps.hardware_mapping,
        mps.seconds,
        seeds,
        {
            "argmax_mapping": mps.mapping,
            "steps": steps,
            "phase_steps": list(mps.phase_steps),
            "logits": mps.logits,
            "initial_logits": mps.initial_logits,
            "rank_losses": mps.rank_losses,
            "phase_losses": mps.phase_losses,
            "phase_seconds": mps.phase_seconds,
            "fits_tiles": fits,
            "fp_scored_as": "int8",
        },
    )
    rows.append(mps_row)
    log(f"{name}: mps in {mps.seconds:.1f} s ({steps} steps, phases {mps.phase_steps})")
    hetmap_steps = budget_steps(base.train.size, hetmap_epochs, setting.batch_size)
    for epochs in (0, hetmap_epochs):
        result = headline.hetmap_outcome(base, name, target, setting, epochs, tmp / f"hetmap-e{epochs}", *data)
        rows.append(
            row(
                base,
                test,
                result.method,
                result.model,
                result.mapping,
                result.seconds,
                seeds,
                {**result.details, "steps": hetmap_steps if epochs else 0},
            )
        )
        log(f"{name}: {result.method} in {result.seconds:.1f} s")
    # The same accuracy as MPS, to compare shares: hetmap given MPS's drop on the validation split as its budget.
    mps_drop = base.full_precision - measure(mps.model, base, mps.hardware_mapping, setting)[0]
    # MPS's rule too: the mean drop on the validation split decides (hetmap's default asks 95 % confidence).
    matched = dataclasses.replace(setting, max_drop=round(max(mps_drop, setting.max_drop), 2), confidence=0.0)
    for method, epochs in (("hetmap@mps-drop", 0), ("hetmap+finetune@mps-drop", hetmap_epochs)):
        result = headline.hetmap_outcome(base, name, target, matched, epochs, tmp / f"{method}", *data)
        details = {**result.details, "max_drop": matched.max_drop, "steps": hetmap_steps if epochs else 0}
        rows.append(row(base, test, method, result.model, result.mapping, result.seconds, seeds, details))
        log(f"{name}: {method} ({matched.max_drop} points) in {result.seconds:.1f} s")
    return rows


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated reference models")
    parser.add_argument(
        "--epochs", type=int, default=EPOCHS, help="fine-tuning epochs (hetmap, all-analog HWA; MPS's step budget)"
    )
    parser.add_argument(
        "--hetmap-epochs",
        type=int,
        default=None,
        help="hetmap's own fine-tuning epochs (default: --epochs); its step costs less than MPS's, so more fit its time",
    )
    parser.add_argument("--seeds", type=int, default=SEEDS, help="noise seeds of the final scoring")
    parser.add_argument(
        "--validation",
        type=int,
        default=0,
        metavar="N",
        help="shapes32 models: decide on N newly drawn images (the whole training file trains) instead of a quarter"
        " of the training file; hetmap verifies on half of them, so N sets what a budget can certify",
    )
    parser.add_argument(
        "--no-labels", action="store_true", help="fine-tune on the training images alone (distillation)"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"{QUICK_MODEL} on {QUICK_TRAIN_SAMPLES} training samples, one epoch, 2 seeds",
    )
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder for compare.json and compare.md")
    args = parser.parse_args(argv)
    names = [QUICK_MODEL] if args.quick else [n for n in args.models.split(",") if n]
    if args.validation and (args.quick or any(n not in SHAPES32_MODELS for n in names)):
        parser.error(f"--validation draws shapes32 images: models {', '.join(SHAPES32_MODELS)} only")
    try:  # every model bundled with its training and test files
        for name, suffix in itertools.product(names, (".onnx", ".train.npz", ".test.npz")):
            reference_path(f"{name}{suffix}")
    except FileNotFoundError as error:
        parser.error(str(error))
    setting = Setting(
        epochs=1 if args.quick else args.epochs,
        hetmap_epochs=None if args.quick else args.hetmap_epochs,
        seeds=2 if args.quick else Setting.seeds,
        layer_steps=5 if args.quick else Setting.layer_steps,
    )
    seeds = 2 if args.quick else args.seeds
    target = load_target(TARGET)
    log = lambda text: print(text, file=sys.stderr, flush=True)  # noqa: E731
    train_samples = QUICK_TRAIN_SAMPLES if args.quick else None
    models = {
        n: run_model(n, target, setting, seeds, log, train_samples, args.validation, not args.no_labels) for n in names
    }
    goal_rows, notes = goals(models, setting)
    given = "--quick" if args.quick else f"--models {','.join(names)} --epochs {args.epochs} --seeds {args.seeds}"
    if args.hetmap_epochs and not args.quick:
        given += f" --hetmap-epochs {args.hetmap_epochs}"
    if args.validation:
        given += f" --validation {args.validation}"
    if args.no_labels:
        given += " --no-labels"
    command = f"python -m bench.compare {given}"  # --out only says where the files go
    payload = {
        "command": command.strip(),
        "target": TARGET,
        "drifts": list(DRIFTS),
        "validation_share": VALIDATION_SHARE,
        "fresh_validation": args.validation,
        "no_labels": args.no_labels,
        "seeds": seeds,
        "setting": dataclasses.asdict(setting),
        "paper": {"source": PAPER_SOURCE, "models": PAPER},
        "models": models,
        "goals": goal_rows,
        "notes": notes,
    }
    stem = "compare.quick" if args.quick else "compare" if names == list(MODELS) else "compare." + "-".join(names)
    stem += f".validation{args.validation}" if args.validation else ""
    stem += ".nolabels" if args.no_labels else ""
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{stem}.json").write_text(json.dumps(payload, indent=2) + "\n")
    write_markdown(args.out / f"{stem}.md", payload)
    print((args.out / f"{stem}.md").read_text())
    return payload


if __name__ == "__main__":
    main()

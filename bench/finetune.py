"""What mapping-aware fine-tuning buys, per reference model on hermes at 1 day of drift.

For each model: one compile without fine-tuning and one with `--finetune
EPOCHS` (same data, target, seeds, budget, objective analog-share); from
the second compile's finetune report the all-analog and all-INT8 accuracy
before and after adaptation, from both the analog weight share the solver
reaches within the 0.5-point budget and the measured drop of that mapping.
Scored on each model's test set (which compile also uses to choose), so the
numbers say what adaptation changes, not how well a mapping generalises.
Reference: the Mixed-Precision Supernetwork paper reports up to 80 % of
weights on analog at full-precision accuracy and +3.4 points over
all-analog.

    python -m bench.finetune [--epochs N] [--models cnn,mlp]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from hetmap.driver import Adaptation, Decision, compile_model
from hetmap.models import reference_path
from hetmap.targets import load_target

MODELS = ("cnn", "mlp", "resnet", "transformer")
BUDGET_POINTS = 0.5
SEEDS = 3
PAPER_ANALOG_SHARE = 0.80
PAPER_GAIN_POINTS = 3.4


def _compile(model: str, folder: Path, epochs: int) -> tuple[dict, float]:
    start = time.perf_counter()
    result = compile_model(
        reference_path(f"{model}.onnx"),
        load_target("hermes"),
        folder,
        reference_path(f"{model}.test.npz"),
        decision=Decision(None, BUDGET_POINTS, "analog-share", "1d", SEEDS),
        train_path=reference_path(f"{model}.train.npz"),
        adaptation=Adaptation(epochs),
    )
    return result.reports, time.perf_counter() - start


def _chosen(reports: dict) -> dict:
    assign = reports["assign"]
    chosen = next(a for a in assign["attempts"] if a["mapping"] == assign["mapping"]["layers"])
    return {
        "analog_weight_share": reports["emit"]["analog_weight_share"],
        "drop_points": chosen["measured_drop_points"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--models", default=",".join(MODELS))
    args = parser.parse_args()
    results = {}
    print(f"hermes, budget {BUDGET_POINTS} points at 1 day, {SEEDS} seeds, {args.epochs} fine-tuning epochs, test sets")
    header = f"{'model':12s} {'FP':>6s} {'analog before':>13s} {'analog after':>12s} {'gain':>6s} {'share before':>12s} {'share after':>11s} {'drop after':>10s} {'tune s':>7s}"
    print(header)
    with tempfile.TemporaryDirectory() as tmp:
        for model in args.models.split(","):
            plain, plain_s = _compile(model, Path(tmp) / f"{model}-plain", 0)
            tuned, tuned_s = _compile(model, Path(tmp) / f"{model}-tuned", args.epochs)
            finetune = tuned["finetune"]
            before = {s["mapping"]: s for s in finetune["before"]}
            after = {s["mapping"]: s for s in finetune["after"]}
            row = {
                "full_precision": before["full-precision"]["mean"],
                "before": before,
                "after": after,
                "all_analog_gain_points": after["all-analog"]["mean"] - before["all-analog"]["mean"],
                "solver_before": _chosen(plain),
                "solver_after": _chosen(tuned),
                "finetune_seconds": finetune["seconds"],
                "compile_seconds": {"plain": plain_s, "finetuned": tuned_s},
            }
            results[model] = row
            print(
                f"{model:12s} {row['full_precision']:6.2f} {before['all-analog']['mean']:13.2f} {after['all-analog']['mean']:12.2f} "
                f"{row['all_analog_gain_points']:+6.2f} {row['solver_before']['analog_weight_share']:12.1%} "
                f"{row['solver_after']['analog_weight_share']:11.1%} {row['solver_after']['drop_points']:10.2f} {finetune['seconds']:7.1f}"
            )
    out = Path(__file__).parent / "results" / "finetune.json"
    command = f"python -m bench.finetune --epochs {args.epochs} --models {args.models}"
    reference = {
        "paper_analog_weight_share": PAPER_ANALOG_SHARE,
        "paper_gain_over_all_analog_points": PAPER_GAIN_POINTS,
    }
    out.write_text(json.dumps({"command": command, "reference": reference, "models": results}, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()

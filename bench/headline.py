"""The headline: hetmap against the baselines on the bundled reference models, in one table.

For each reference model on hermes, scored on its test set as bench.quality
does: hetmap's solver (objective analog-share, 0.5-point budget at 1 day of
drift) with and without --finetune, and every baseline of bench/baselines.py
(all-analog with and without hardware-aware fine-tuning, all-INT8,
all-INT4, LionHeart's layer-by-layer search, HAWQ-style Hessian greedy) on
the same data, target, drift time and noise seeds. Mapping times are
measured in this run: hetmap's is its compile's sensitivity, finetune,
assign and refine passes; a baseline's runs from the calibrated model to its mapping.
The simulator's speed against aihwkit is bench.fidelity's measurement. The
goals are issue 6's (the Mixed-Precision Supernetwork paper's headline).

    python -m bench.headline [--models cnn,mlp,resnet,transformer] [--epochs N] [--quick]

Writes bench/results/headline.json and headline.md (with --quick:
headline.quick.json and headline.quick.md, one small model, one epoch, 2 seeds).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
from pathlib import Path

import onnx_ir as ir
from rich.console import Console
from rich.table import Table

from bench import fidelity
from bench.baselines import Calibrated, Outcome, Setting, outcome, prepare, run_baselines
from hetmap.driver import Adaptation, Decision, compile_model
from hetmap.models import reference_path
from hetmap.targets import Target, load_target

MODELS = ("cnn", "mlp", "resnet", "transformer")
QUICK_MODEL = "mlp"
TARGET = "hermes"
MAPPING_PASSES = ("sensitivity_before", "finetune", "sensitivity", "assign", "refine")
GOAL_ANALOG_SHARE = 0.80
GOAL_GAIN_POINTS = 3.4
GOAL_MAPPING_SPEEDUP = 2.2
AIM_MAPPING_SPEEDUP = 10.0
RESULTS = Path(__file__).resolve().parent / "results"


def hetmap_outcome(
    base: Calibrated,
    name: str,
    target: Target,
    setting: Setting,
    epochs: int,
    folder: Path,
    train_path: Path | None = None,
    data_path: Path | None = None,
) -> Outcome:
    """hetmap compile on the reference model; the mapping it ships, as its assign pass measured it.

    It fine-tunes on `train_path` and decides on `data_path` (default: the bundled training and test sets).
    """
    adaptation = Adaptation(epochs, batch_size=setting.batch_size)  # hetmap's recipe and default rate
    result = compile_model(
        reference_path(f"{name}.onnx"),
        target,
        folder,
        data_path or reference_path(f"{name}.test.npz"),
        decision=Decision(
            None, setting.max_drop, "analog-share", setting.drift, setting.seeds, False, setting.confidence
        ),
        train_path=train_path or reference_path(f"{name}.train.npz"),
        adaptation=adaptation,
    )
    reports = result.reports
    pass_seconds = {p["name"]: p["seconds"] for p in reports["pipeline"]["passes"] if p["name"] in MAPPING_PASSES}
    assign = reports["assign"]
    chosen = next(a for a in assign["attempts"] if a["mapping"] == assign["mapping"]["layers"])
    method = "hetmap+finetune" if epochs else "hetmap"
    details = {"within_budget": assign["within_budget"], "epochs": epochs, "pass_seconds": pass_seconds}
    if "finetune" in reports:
        details["learning_rate"] = reports["finetune"]["learning_rate"]
        details["weights"] = assign["weights"]
        details["refine"] = reports["refine"]["shipped"]
    return outcome(
        base,
        method,
        chosen["mapping"],
        base.full_precision - chosen["measured_drop_points"],
        chosen["measured_std_points"],
        sum(pass_seconds.values()),
        details,
        ir.load(folder / "model.mapped.onnx"),
    )


def simulator_speedup(name: str, target: Target, folder: Path) -> float:
    """aihwkit's analog forward time over hetmap's simulation, all-analog (bench.fidelity.speed)."""
    compile_model(
        reference_path(f"{name}.onnx"),
        target,
        folder,
        reference_path(f"{name}.test.npz"),
        decision=Decision("all-analog"),
    )
    return fidelity.speed(name, ir.load(folder / "model.mapped.onnx"), target, folder)["aihwkit_over_simulation"]


def run_model(name: str, target: Target, setting: Setting, console: Console) -> dict:
    base = prepare(
        reference_path(f"{name}.onnx"), target, reference_path(f"{name}.test.npz"), reference_path(f"{name}.train.npz")
    )
    with tempfile.TemporaryDirectory(prefix="hetmap-headline-") as tmp:
        outcomes = [
            hetmap_outcome(base, name, target, setting, epochs, Path(tmp) / f"e{epochs}")
            for epochs in (0, setting.epochs)
        ]
        outcomes += run_baselines(base, setting)
        for item in outcomes:
            console.log(f"{name}: {item.method} {item.accuracy:.2f} % in {item.seconds:.1f} s")
        speedup = simulator_speedup(name, target, Path(tmp) / "all-analog")
    return {
        "full_precision": base.full_precision,
        "layers": len(base.layers),
        "outcomes": {item.method: item.as_json() for item in outcomes},
        "simulator_speedup_over_aihwkit": speedup,
    }


def headline_table(models: dict) -> tuple[list[str], list[list[str]]]:
    headers = [
        "model",
        "FP %",
        "all-analog %",
        "hetmap %",
        "hetmap analog share",
        "energy vs INT8",
        "hetmap mapping s",
        "layer-by-layer s",
        "speed-up",
    ]
    rows = []
    for name, result in models.items():
        ours, analog, lionheart = (result["outcomes"][m] for m in ("hetmap+finetune", "all-analog", "layer-by-layer"))
        rows.append(
            [
                name,
                f"{result['full_precision']:.2f}",
                f"{analog['accuracy']:.2f}",
                f"{ours['accuracy']:.2f}",
                f"{ours['analog_weight_share']:.1%}",
                f"{ours['energy_vs_int8']:.2f}x",
                f"{ours['seconds']:.1f}",
                f"{lionheart['seconds']:.1f}",
                f"{lionheart['seconds'] / ours['seconds']:.2f}x",
            ]
        )
    return headers, rows


def methods_table(models: dict) -> tuple[list[str], list[list[str]]]:
    headers = ["model", "method", "accuracy %", "drop pts", "analog share", "energy vs INT8", "mapping s"]
    rows = [
        [
            name,
            method,
            f"{o['accuracy']:.2f} ± {o['accuracy_std']:.2f}",
            f"{o['drop_points']:+.2f}",
            f"{o['analog_weight_share']:.1%}",
            f"{o['energy_vs_int8']:.2f}x",
            f"{o['seconds']:.1f}",
        ]
        for name, result in models.items()
        for method, o in result["outcomes"].items()
    ]
    return headers, rows


def goals(models: dict, setting: Setting) -> list[dict]:
    """Each goal with its measured value per model; met when every model meets it."""
    ours = {name: r["outcomes"]["hetmap+finetune"] for name, r in models.items()}
    share = {n: o["analog_weight_share"] if o["drop_points"] <= setting.max_drop else 0.0 for n, o in ours.items()}
    gain = {n: o["accuracy"] - models[n]["outcomes"]["all-analog"]["accuracy"] for n, o in ours.items()}
    gain_hwa = {n: o["accuracy"] - models[n]["outcomes"]["all-analog+hwa"]["accuracy"] for n, o in ours.items()}
    speedup = {n: models[n]["outcomes"]["layer-by-layer"]["seconds"] / o["seconds"] for n, o in ours.items()}
    simulator = {n: r["simulator_speedup_over_aihwkit"] for n, r in models.items()}
    rows = [
        (
            f"analog weight share within {setting.max_drop} points of full precision > {GOAL_ANALOG_SHARE:.0%}",
            share,
            lambda v: v > GOAL_ANALOG_SHARE,
            "{:.1%}",
        ),
        (f"accuracy over all-analog > +{GOAL_GAIN_POINTS} points", gain, lambda v: v > GOAL_GAIN_POINTS, "{:+.2f}"),
        (
            f"accuracy over all-analog with HWA fine-tuning > +{GOAL_GAIN_POINTS} points",
            gain_hwa,
            lambda v: v > GOAL_GAIN_POINTS,
            "{:+.2f}",
        ),
        (
            f"mapping >= {GOAL_MAPPING_SPEEDUP}x faster than layer-by-layer (aim {AIM_MAPPING_SPEEDUP:.0f}x)",
            speedup,
            lambda v: v >= GOAL_MAPPING_SPEEDUP,
            "{:.2f}x",
        ),
        (
            f"simulator >= {fidelity.GOAL_AIHWKIT_OVER_SIM}x faster than aihwkit",
            simulator,
            lambda v: v >= fidelity.GOAL_AIHWKIT_OVER_SIM,
            "{:.1f}x",
        ),
    ]
    result = []
    for goal, values, meets, form in rows:
        passed = sum(map(meets, values.values()))
        status = "met" if passed == len(values) else f"not met ({passed} of {len(values)} models)"
        measured = ", ".join(f"{n} {form.format(v)}" for n, v in values.items())
        result.append({"goal": goal, "values": values, "measured": measured, "status": status})
    return result


def _rich(title: str, headers: list[str], rows: list[list[str]]) -> Table:
    table = Table(title=title, title_justify="left")
    for index, header in enumerate(headers):
        table.add_column(header, justify="left" if index < 2 else "right")
    for row in rows:
        table.add_row(*row)
    return table


def _markdown(headers: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + " --- |" * len(headers)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def write_markdown(
    path: Path, command: str, setting: Setting, machine: dict, models: dict, goal_rows: list[dict]
) -> None:
    text = [
        "# hetmap headline",
        "",
        f"    {command}",
        "",
        f"Target {TARGET}; budget {setting.max_drop} points at {setting.drift} of drift; {setting.seeds} noise seeds; "
        f"{setting.epochs} fine-tuning epochs at learning rate {setting.learning_rate:g} (all-analog HWA; hetmap --finetune sweeps its own); layer-by-layer fine-tunes "
        f"{setting.layer_steps} steps per move. Accuracy on each model's test set, mean ± std over seeds. Mapping times are "
        f"wall times on {machine['cores']} cores, shared: 1-minute load average {machine['load_average_before']:.1f} "
        f"before the run, {machine['load_average_after']:.1f} after.",
        "",
        _markdown(*headline_table(models)),
        "",
        "## Every method",
        "",
        _markdown(*methods_table(models)),
        "",
        "## Goals",
        "",
        _markdown(["goal", "measured", "status"], [[g["goal"], g["measured"], g["status"]] for g in goal_rows]),
        "",
    ]
    path.write_text("\n".join(text))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated reference models")
    parser.add_argument(
        "--epochs", type=int, default=Setting.epochs, help="fine-tuning epochs (hetmap and all-analog HWA)"
    )
    parser.add_argument("--lr", type=float, default=Setting.learning_rate, help="learning rate of every fine-tune")
    parser.add_argument(
        "--layer-steps", type=int, default=Setting.layer_steps, help="layer-by-layer's fine-tuning steps per move"
    )
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_MODEL} only, one epoch, 2 seeds")
    args = parser.parse_args()
    if args.epochs < 1:
        parser.error("--epochs must be at least 1")
    names = [QUICK_MODEL] if args.quick else [n for n in args.models.split(",") if n]
    setting = Setting(
        epochs=1 if args.quick else args.epochs,
        seeds=2 if args.quick else Setting.seeds,
        learning_rate=args.lr,
        layer_steps=args.layer_steps,
    )
    command = "python -m bench.headline " + " ".join(sys.argv[1:])
    console = Console()
    console.width = max(console.width, 120)  # the tables' columns, also when piped
    target = load_target(TARGET)
    load_before = os.getloadavg()[0]
    models = {name: run_model(name, target, setting, console) for name in names}
    machine = {"cores": os.cpu_count(), "load_average_before": load_before, "load_average_after": os.getloadavg()[0]}
    goal_rows = goals(models, setting)
    console.print(_rich("hetmap vs all-analog and layer-by-layer search", *headline_table(models)))
    console.print(_rich("Every method", *methods_table(models)))
    console.print(
        _rich("Goals", ["goal", "measured", "status"], [[g["goal"], g["measured"], g["status"]] for g in goal_rows])
    )
    stem = "headline.quick" if args.quick else "headline"
    RESULTS.mkdir(exist_ok=True)
    payload = {
        "command": command.strip(),
        "target": TARGET,
        "setting": dataclasses.asdict(setting),
        "machine": machine,
        "models": models,
        "goals": goal_rows,
    }
    (RESULTS / f"{stem}.json").write_text(json.dumps(payload, indent=2) + "\n")
    write_markdown(RESULTS / f"{stem}.md", command.strip(), setting, machine, models, goal_rows)
    console.print(f"wrote bench/results/{stem}.json and {stem}.md")


if __name__ == "__main__":
    main()

"""bench.compare's results as Markdown, and the paper's published figures they are set beside."""

from __future__ import annotations

from pathlib import Path


def at_drift(row: dict, drift: str = "1d") -> float:
    """A method's mean accuracy at one drift time."""
    return row["accuracy"][drift]["mean"]


PAPER_SOURCE = (
    'Benmeziane, Lammie, Boybat et al., "Supernetwork-based efficient mapping of deep learning applications to '
    "mixed-precision hardware using model adaptation\", Nature Communications (2026); figures from the paper's raw "
    "data, MPS/raw_data/cifar10_performance.csv in the IBM/analog-nas repository on GitHub"
)

# CIFAR-10 test accuracy (percent) and analog MAC ratio as published; simulated PCM hardware as in the paper.
PAPER = {
    "resnet8": {
        "task": "CIFAR-10",
        "full_precision": 88.65,
        "all_analog": 85.1,
        "all_analog_mac_share": 0.986,
        "mps": 88.5,
        "mps_mac_share": 0.70,
        "lionheart": 87.85,
        "lionheart_mac_share": 0.6005,
    },
    "resnet20": {
        "task": "CIFAR-10",
        "full_precision": 92.0,
        "all_analog": 83.6,
        "all_analog_mac_share": 0.989,
        "mps": 90.8,
        "mps_mac_share": 0.88,
        "lionheart": 84.25,
        "lionheart_mac_share": 0.88,
    },
}


def markdown_table(headers: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + " --- |" * len(headers)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def methods_table(models: dict, drifts: list[str]) -> tuple[list[str], list[list[str]]]:
    headers = [
        "model",
        "method",
        *(f"acc % {d}" for d in drifts),
        "analog MACs",
        "analog weights",
        "energy vs INT8",
        "tiles",
        "mapping s",
    ]
    rows = []
    for name, result in models.items():
        for method, r in result["rows"].items():
            accuracy = [f"{r['accuracy'][d]['mean']:.2f} ± {r['accuracy'][d]['std']:.2f}" for d in drifts]
            energy = "—" if r["energy_vs_int8"] is None else f"{r['energy_vs_int8']:.2f}x"
            rows.append(
                [
                    name,
                    method,
                    *accuracy,
                    f"{r['analog_mac_share']:.1%}",
                    f"{r['analog_weight_share']:.1%}",
                    energy,
                    str(r["tiles_used"]),
                    f"{r['seconds']:.1f}",
                ]
            )
    return headers, rows


def paper_table(models: dict) -> tuple[list[str], list[list[str]]]:
    headers = [
        "model",
        "source",
        "FP %",
        "all-analog %",
        *(f"{m} % (analog MACs)" for m in ("LionHeart", "MPS", "hetmap+finetune", "hetmap@mps-drop")),
    ]
    rows = []
    for name, paper in PAPER.items():
        rows.append(
            [
                name,
                f"paper, {paper['task']}",
                f"{paper['full_precision']:.2f}",
                f"{paper['all_analog']:.2f}",
                f"{paper['lionheart']:.2f} ({paper['lionheart_mac_share']:.0%})",
                f"{paper['mps']:.2f} ({paper['mps_mac_share']:.0%})",
                "—",
                "—",
            ]
        )
        if name in models:
            r = models[name]["rows"]
            rows.append(
                [
                    name,
                    "ours, shapes32, 1 day",
                    f"{models[name]['full_precision']:.2f}",
                    f"{at_drift(r['all-analog']):.2f}",
                    f"{at_drift(r['layer-by-layer']):.2f} ({r['layer-by-layer']['analog_mac_share']:.0%})"
                    if "layer-by-layer" in r
                    else "—",
                    f"{at_drift(r['mps']):.2f} ({r['mps']['analog_mac_share']:.0%})",
                    *(
                        f"{at_drift(r[m]):.2f} ({r[m]['analog_mac_share']:.0%})"
                        for m in ("hetmap+finetune", "hetmap@mps-drop")
                    ),
                ]
            )
    return headers, rows


def write_markdown(path: Path, payload: dict) -> None:
    setting, models = payload["setting"], payload["models"]
    text = [
        "# hetmap vs the Mixed-Precision Supernetwork",
        "",
        f"    {payload['command']}",
        "",
        f"Target {payload['target']}. Mapping decisions and fine-tuning at {setting['drift']} of drift, hetmap's budget "
        f"{setting['max_drop']} points at {setting.get('confidence', 0.95):.0%} confidence on held-out data, "
        f"{setting['seeds']} seeds while deciding. MPS: {setting['epochs']} fine-tuning epochs of optimiser steps at rate "
        f"{setting['learning_rate']:g}, split 40/40/20 % over its three phases. hetmap: --finetune "
        f"{setting.get('hetmap_epochs') or setting['epochs']} epochs of its supernetwork at its default rate, then "
        "--refine (the chosen mapping alone, at its one-mapping rate) at its default epochs. `all-analog+hwa`: hetmap's "
        "one-mapping fine-tune of the all-analog mapping for as many epochs as hetmap trains in all. "
        f"Training data: {'images only (distillation from full precision)' if payload.get('no_labels') else 'images and labels'}. "
        "Every mapping is then scored by hetmap's simulator on the test set at "
        f"{', '.join(payload['drifts'])} over the same {payload['seeds']} noise seeds: mean ± std. Every method decides on a validation split "
        f"({_validation_text(payload)}); the test set only scores. MPS's `fp` layers run at INT8 when "
        "scored (the target has no full-precision unit). `hetmap@mps-drop` is hetmap without fine-tuning given MPS's measured "
        "drop at the drift time on the validation split as its budget, decided by MPS's rule (the mean drop on the validation "
        "split, `--confidence 0`): the two at the same accuracy, to compare analog shares; `hetmap+finetune@mps-drop` the same "
        "with fine-tuning. Mapping time: wall time from the calibrated model to the mapping, "
        "fine-tuning (and hetmap's refine) included, on this machine, all in this one run.",
        "",
        markdown_table(*methods_table(models, payload["drifts"])),
        "",
        "## Against the paper's figures",
        "",
        f"Source: {PAPER_SOURCE}. The paper's models are trained on CIFAR-10; ours on the procedural shapes32 task, "
        "so absolute accuracies differ: compare gaps (all-analog, LionHeart and MPS against full precision) and analog shares.",
        "",
        markdown_table(*paper_table(models)),
        "",
        "## Goals (hetmap against MPS)",
        "",
        markdown_table(
            ["goal", "measured", "status"], [[g["goal"], g["measured"], g["status"]] for g in payload["goals"]]
        ),
        "",
        *(f"- {note}" for note in payload["notes"]),
        "",
    ]
    path.write_text("\n".join(text))


def _validation_text(payload: dict) -> str:
    fresh = payload.get("fresh_validation")
    if fresh:
        return f"{fresh} newly drawn shapes32 images; the whole training file trains"
    return f"{payload['validation_share']:.0%} of the training file, held out from training"

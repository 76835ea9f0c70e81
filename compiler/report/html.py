"""report.html: one self-contained page of a compile, rendered from its JSON reports.

Pictures are embedded as base64 PNG data: URIs and the style is inline, so
the file opens anywhere (mail it, archive it) with no network and no
JavaScript. Every piece of text from a report is escaped. A report that is
missing (a compile with --mapping has no sensitivity) gives its section a
note instead of failing.
"""

from __future__ import annotations

import base64
from pathlib import Path

from hetmap import __version__
from hetmap.graph.modelio import write_bytes_atomic
from hetmap.report.facts import (
    assign_outcome,
    breakdown_text,
    chosen_attempt,
    count_text,
    drop_text,
    energy_text,
    finetune_tables,
    mapping_mix,
    summary,
    time_text,
    unique_attempts,
    verdict_text,
    verified_text,
    weights_clause,
)
from hetmap.report.html_markup import CSS, Html, badge, card, escape, fact_list, note, table

PICTURE_CAPTIONS = {
    "sensitivity.png": (
        "Sensitivity",
        "Metric drop when one layer alone takes each option (the others at full "
        "precision); error bars: std over Monte-Carlo seeds; dark edge: the option chosen.",
    ),
    "pareto.png": (
        "Pareto front",
        "Each point is a mapping the budget sweep chose, measured by simulation: "
        "energy per inference, accuracy drop, analog weight share (colour); the star is the mapping that ships.",
    ),
    "tiles.png": ("Tile map", "The target's analog tiles; each weight block on its tile, coloured by layer."),
    "schedule.png": (
        "Timeline",
        "One inference: analog layers on their tile groups, digital layers on their "
        "units; red edge: the critical path.",
    ),
    "energy.png": (
        "Energy by layer",
        "Energy per inference of each layer under its option, stacked by term: "
        "compute, converters, weight movement, activation movement, digital periphery.",
    ),
}


def _summary_section(reports: dict[str, dict]) -> str:
    facts = summary(reports)
    cards = []
    if facts["analog_weight_share"] is not None:
        cards.append(
            card(
                "analog weight share",
                f"{facts['analog_weight_share']:.1%}",
                f"{facts['analog_mac_share']:.1%} of MACs; {facts['mapping']}",
            )
        )
    accuracy = facts["accuracy"]
    if accuracy is not None:
        style = {"within": "good", "over": "bad"}.get(accuracy["verdict"], "unsure")
        detail = Html(
            f"{escape(accuracy['metric'])} {accuracy['full_precision']:.2%} at full precision; "
            f"{escape(accuracy['evidence'])} at {escape(accuracy['drift'])}: "
            f'<span class="{style}">{escape(verdict_text(accuracy))}</span>'
        )
        cards.append(card(f"{accuracy['metric']} mapped", f"{accuracy['mapped']:.2%}", detail))
    elif "assign" in reports:
        cards.append(
            card(
                "accuracy",
                "not measured",
                f"the mapping was given ({reports['assign']['source']}); measure it with hetmap run",
            )
        )
    energy = facts["energy"]
    if energy is not None:
        option = energy["baseline_option"].upper()
        ratio = f"{energy['ratio']:.2f}x all-{option}" if energy["ratio"] is not None else "n/a"
        cards.append(
            card(
                "energy per inference",
                energy_text(energy["energy_pj"]),
                f"{ratio} ({energy_text(energy['baseline_energy_pj'])})",
            )
        )
        cards.append(
            card(
                "energy by term",
                breakdown_text(energy["breakdown_pj"]),
                f"all-{option}: {breakdown_text(energy['baseline_breakdown_pj'])}",
            )
        )
        cards.append(
            card(
                "latency per inference",
                time_text(energy["makespan_ns"]),
                f"all-{option}: {time_text(energy['baseline_latency_ns'])} (batch 1); pipelined stream "
                f"{energy['throughput_per_s']:,.0f} inferences/s",
            )
        )
    if facts["tiles_used"] is not None:
        share = facts["tiles_used"] / facts["tile_count"] if facts["tile_count"] else 0
        cards.append(
            card("tiles used", f"{facts['tiles_used']} of {facts['tile_count']}", f"{share:.0%} of the analog tiles")
        )
    if not cards:
        return note("No emit or schedule report: nothing to summarise.")
    return f'<div class="cards">{"".join(cards)}</div>'


def _mapping_section(reports: dict[str, dict]) -> str:
    partition = reports.get("partition")
    if partition is None:
        return note("No partition report: the layers are unknown.")
    mapping = reports["assign"]["mapping"]["layers"] if "assign" in reports else {}
    scheduled = {layer["name"]: layer for layer in reports.get("schedule", {}).get("layers", [])}
    sensitivity = reports.get("sensitivity")
    options = list(dict.fromkeys(o for drops in (sensitivity or {}).get("layers", {}).values() for o in drops))
    headers = ["layer", "op", "option", "matrix", "weights", "MACs", "tile ids", "tile use", "energy", "latency"]
    headers += [f"drop {o}" for o in options]
    rows = []
    for layer in partition["layers"]:
        name, timed = layer["name"], scheduled.get(layer["name"])
        tiles = ",".join(str(block["tile"]) for block in timed["tiles"]) if timed and timed["tiles"] else ""
        row = [
            (name, "name"),
            layer["op_type"],
            badge(mapping[name]) if name in mapping else "",
            f"{layer['rows']} x {layer['cols']}",
            count_text(layer["weight_count"]),
            count_text(layer["macs"]),
            tiles or ("-" if timed else ""),
            f"{timed['tile_utilisation']:.0%}" if timed and timed["tile_utilisation"] is not None else "",
            energy_text(timed["energy_pj"]) if timed else "",
            time_text(timed["latency_ns"]) if timed else "",
        ]
        for option in options:
            drop = sensitivity["layers"].get(name, {}).get(option)
            row.append((drop_text(drop, " ± "), "chosen" if mapping.get(name) == option else ""))
        rows.append(row)
    parts = [table(headers, rows, numeric={3, 4, 5, 6, 7, 8, 9, *range(10, 10 + len(options))})]
    if sensitivity is not None:
        parts.append(
            Html(
                f"<p>Sensitivity columns: {escape(sensitivity['metric'])} drop in percentage points when that layer alone "
                f"takes the option (analog read {escape(sensitivity['drift'])} after programming, ± std over "
                f"{sensitivity['seeds']} seeds, {sensitivity['samples']} samples of {escape(sensitivity['data'])}); "
                f"≥: measuring stopped once the drop was sure to exceed every budget the solver tried; "
                f"{sensitivity.get('screened_share', 0):.0%} of the sample runs skipped as unable to flip or predicted "
                f"to first order ({sum(map(len, sensitivity.get('predicted', {}).values()))} options); "
                f"highlighted: the option chosen. MACs per inference; tiles: physical tile ids; tile use: crossbar cells holding weights over the cells of the layer's tiles.</p>"
            )
        )
    else:
        parts.append(
            note(
                "No sensitivity report: this compile took its mapping as given (--mapping), so no "
                "per-layer sensitivity was measured."
            )
        )
    return "".join(parts)


def _pictures_section(pictures: dict[str, bytes], reports: dict[str, dict]) -> str:
    parts = []
    for name, (title, caption) in PICTURE_CAPTIONS.items():
        parts.append(f"<h3>{escape(title)}</h3>")
        if name not in pictures:
            reason = {
                "sensitivity.png": "no sensitivity report (the mapping was given with --mapping)",
                "pareto.png": "no budget sweep (compile with --pareto)"
                if "sensitivity" in reports
                else "no budget sweep (the mapping was given with --mapping)",
            }.get(name, "no schedule report")
            parts.append(note(f"No {title.lower()} picture: {reason}."))
            continue
        data = base64.b64encode(pictures[name]).decode("ascii")
        parts.append(
            f'<figure><img src="data:image/png;base64,{data}" alt="{escape(title)}">'
            f"<figcaption>{escape(caption)}</figcaption></figure>"
        )
    return "".join(parts)


def _attempts_table(attempts: list[dict], chosen: dict | None, max_drop: float | None) -> Html:
    """One row per measured mapping; a 'within budget' column when there is one budget."""
    headers = ["#", "mapping", "analog share", "energy", "predicted drop", "measured drop", "verified drop"]
    headers += ["within budget"] if max_drop is not None else []
    rows, classes = [], []
    for index, attempt in enumerate(attempts, start=1):
        is_chosen = chosen is not None and attempt["mapping"] == chosen["mapping"]
        detail = ", ".join(f"{k}: {v}" for k, v in attempt["mapping"].items())
        row = [
            f"{index}{' (chosen)' if is_chosen else ''}",
            Html(f'<span title="{escape(detail)}">{escape(mapping_mix(attempt["mapping"].values()))}</span>'),
            f"{attempt['analog_weight_share']:.1%}",
            energy_text(attempt["energy_pj"]),
            f"{attempt['predicted_drop_points']:+.2f}",
            f"{attempt['measured_drop_points']:+.2f} ± {attempt['measured_std_points']:.2f}",
            verified_text(attempt),
        ]
        if max_drop is not None:
            row.append("yes" if attempt["measured_drop_points"] <= max_drop else "no")
        rows.append(row)
        classes.append("chosen" if is_chosen else "")
    return table(headers, rows, numeric={2, 3, 4, 5, 6}, row_classes=classes)


def _solver_section(reports: dict[str, dict]) -> str:
    assign = reports.get("assign")
    if assign is None:
        return note("No assign report.")
    if assign["source"] != "solver":
        return note(f"The mapping was given ({assign['source']}); the solver did not run.")
    chosen = chosen_attempt(assign)
    verdict = assign_outcome(assign)
    if weights_clause(assign):
        verdict += f"; {weights_clause(assign)}"
    held_out = (assign.get("verification") or {}).get("held_out", True)
    where = "held-out data" if held_out else "data that was not held out of the decisions"
    parts = [
        Html(
            f"<p>Objective <b>{escape(assign['objective'])}</b> under a budget of {assign['max_drop_points']:g} points of "
            f"drop at {escape(assign['drift'])}: the MILP on the additive sensitivity model proposes, simulation measures, "
            f"the model is corrected and solved again, on the decision part of the data; the best candidates are then "
            f"verified once on {where}; {escape(verdict)}. Drops in percentage points; hover a mapping for "
            f"its layers.</p>"
        ),
        _attempts_table(assign["attempts"], chosen, assign["max_drop_points"]),
    ]
    if assign.get("pareto"):
        sweep = sorted(unique_attempts(assign["pareto"]), key=lambda a: a["energy_pj"])
        parts.append("<h3>Budget sweep (Pareto)</h3>")
        parts.append(
            Html(
                f"<p>{len(assign['pareto'])} budgets gave {len(sweep)} distinct mappings, "
                "each measured by simulation; by energy.</p>"
            )
        )
        parts.append(_attempts_table(sweep, chosen, None))
    return "".join(parts)


def _finetune_section(reports: dict[str, dict]) -> str:
    report = reports.get("finetune")
    if report is None:
        return note("No fine-tuning: compile with --finetune EPOCHS --train train.npz to adapt the weights.")
    scores, layers = finetune_tables(reports)
    epochs = "; ".join(f"epoch {r['epoch']}: loss {r['loss']:.3f}" for r in report["history"])
    parts = [
        Html(
            f"<p>The weights were fine-tuned for {report['epochs']} epochs on {escape(report['train_data'])} "
            f"({report['train_samples']} samples; {escape(report['scope'])} weights, {count_text(report['trainable_parameters'])} "
            f"parameters; paths per step: {escape(', '.join(report['paths']))}; {report['seconds']:.0f} s on {escape(report['device'])}). "
            f"Metric in percent, simulated on the scoring data before and after. {escape(epochs)}.</p>"
        ),
        table(["mapping", "before", "after", "change"], scores, numeric={1, 2, 3}),
    ]
    if report["analog_trained_in_full_precision"]:
        reasons = ", ".join(f"{k} ({v})" for k, v in report["analog_trained_in_full_precision"].items())
        parts.append(
            note(f"Trained in full precision where analog was sampled (no training tile for them): {reasons}.")
        )
    if layers:
        parts.append("<h3>Analog drop per layer, before and after</h3>")
        parts.append(table(["layer", "before", "after"], layers, numeric={1, 2}))
    return "".join(parts)


def _model_section(reports: dict[str, dict]) -> str:
    parts = []
    canonical = reports.get("canonicalize")
    if canonical is not None:
        parts.append("<h3>Import and canonicalize</h3>")
        parts.append(
            fact_list(
                [
                    ("producer", canonical["producer"] or "unknown"),
                    (
                        "opset",
                        f"{canonical['opset_in']} -> {canonical['opset_out']} (IR {canonical['ir_version_in']} in)",
                    ),
                    ("nodes", f"{canonical['nodes_in']} -> {canonical['nodes_out']}"),
                    ("BatchNorm", f"{canonical['batchnorms_folded']} folded, {canonical['batchnorms_left']} left"),
                    (
                        "weights",
                        f"{count_text(canonical['weight_count'])} in {canonical['initializers_out']} initializers",
                    ),
                ]
            )
        )
    else:
        parts.append(note("No canonicalize report."))
    partition = reports.get("partition")
    if partition is not None:
        parts.append("<h3>Partition</h3>")
        parts.append(
            fact_list(
                [
                    (
                        "mappable layers",
                        f"{len(partition['layers'])}: {count_text(partition['mappable_weights'])} weights, "
                        f"{count_text(partition['mappable_macs'])} MACs per inference",
                    ),
                    (
                        "tiles",
                        f"all-analog needs {partition['tiles_needed']} of {partition['tile_count']} tiles "
                        f"({partition['tile_rows']}x{partition['tile_cols']}): "
                        + ("fits" if partition["fits_on_chip"] else "does not fit"),
                    ),
                ]
            )
        )
        if partition["unmappable"]:
            parts.append("<p>Not mapped (they run as in the model, outside the cost model):</p>")
            rows = [[(u["name"], "name"), u["op_type"], u["reason"]] for u in partition["unmappable"]]
            parts.append(table(["layer", "op", "reason"], rows))
        else:
            parts.append("<p>Every layer that carries MACs is mappable.</p>")
    calibrate = reports.get("calibrate")
    if calibrate is not None:
        samples = f"{calibrate['samples']} sample{'s' * (calibrate['samples'] != 1)}"
        parts.append(fact_list([("calibration", f"{calibrate['source']}, {samples}")]))
    pipeline = reports.get("pipeline")
    if pipeline is not None:
        parts.append("<h3>Pipeline</h3>")
        shapes = ", ".join(f"{k}={'x'.join(map(str, v))}" for k, v in pipeline["input_shapes"].items())
        parts.append(fact_list([("inputs", shapes or "none"), ("seed", str(pipeline["seed"]))]))
        rows = [
            [
                p["name"],
                f"{p['seconds']:.2f} s",
                "" if p["parity_relative_error"] is None else f"{p['parity_relative_error']:.1e}",
            ]
            for p in pipeline["passes"]
        ]
        parts.append(table(["pass", "time", "ORT parity (relative error)"], rows, numeric={1, 2}))
    return "".join(parts)


SECTIONS = (
    ("summary", "Summary"),
    ("mapping", "Mapping per layer"),
    ("pictures", "Pictures"),
    ("solver", "Solver"),
    ("finetune", "Fine-tuning"),
    ("model", "Model and partition"),
)


def render_report_html(
    reports: dict[str, dict], pictures: dict[str, bytes], model_name: str = "", files: list[str] = ()
) -> str:
    """The page, from the JSON reports and the PNG bytes of their pictures (by file name)."""
    target = summary(reports)["target"] or "unknown target"
    title = f"hetmap report: {model_name or 'model'} on {target}"
    bodies = {
        "summary": _summary_section(reports),
        "mapping": _mapping_section(reports),
        "pictures": _pictures_section(pictures, reports),
        "solver": _solver_section(reports),
        "finetune": _finetune_section(reports),
        "model": _model_section(reports),
    }
    nav = "".join(f'<a href="#{key}">{escape(heading)}</a>' for key, heading in SECTIONS)
    sections = "".join(
        f'<section id="{key}"><h2>{escape(heading)}</h2>{bodies[key]}</section>' for key, heading in SECTIONS
    )
    written = f"<p>Files: {', '.join(f'<code>{escape(f)}</code>' for f in files)}</p>" if files else ""
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(title)}</title><style>{CSS}</style></head><body><main>"
        f'<h1>{escape(title)}</h1><p class="subtitle">compiled by hetmap {escape(__version__)}</p>'
        f"<nav>{nav}</nav>{sections}<footer>{written}</footer></main></body></html>\n"
    )


def write_report_html(
    path: Path, reports: dict[str, dict], pictures: dict[str, bytes], model_name: str = "", files: list[str] = ()
) -> None:
    """Write the page to `path` atomically."""
    write_bytes_atomic(Path(path), render_report_html(reports, pictures, model_name, files).encode("utf-8"))

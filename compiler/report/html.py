"""report.html: one self-contained page of a compile, rendered from its JSON reports.

Pictures are embedded as base64 PNG data: URIs and the style is inline, so
the file opens anywhere (mail it, archive it) with no network and no
JavaScript. Every piece of text from a report is escaped. A report that is
missing (a compile with --mapping has no sensitivity) gives its section a
note instead of failing.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path

from hetmap import __version__
from hetmap.graph.modelio import write_bytes_atomic
from hetmap.report.plots import OPTION_COLOURS
from hetmap.report.views import (
    breakdown_text,
    chosen_attempt,
    energy_text,
    finetune_tables,
    mapping_mix,
    summary,
    time_text,
    unique_attempts,
)

CSS = """
body { margin: 0; background: #f4f5f7; color: #1f2328;
       font: 14px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
main { max-width: 1160px; margin: 0 auto; padding: 28px 36px 56px; background: #fff; min-height: 100vh; }
h1 { font-size: 25px; margin: 0 0 2px; }
h2 { font-size: 19px; margin: 38px 0 10px; padding-bottom: 5px; border-bottom: 2px solid #e6e8eb; }
h3 { font-size: 15px; margin: 22px 0 6px; }
.subtitle { color: #59636e; margin: 0 0 14px; }
nav { margin: 6px 0 18px; font-size: 13px; }
nav a { color: #0b5cad; text-decoration: none; margin-right: 14px; }
nav a:hover { text-decoration: underline; }
.cards { display: grid; grid-template-columns: repeat(auto-fit, minmax(205px, 1fr)); gap: 12px; }
.card { border: 1px solid #e1e4e8; border-radius: 8px; padding: 12px 14px; background: #fbfbfc; }
.card .label { font-size: 11.5px; text-transform: uppercase; letter-spacing: .05em; color: #59636e; }
.card .value { font-size: 23px; font-weight: 650; margin: 2px 0; }
.card .detail { font-size: 12.5px; color: #4b535c; }
table { border-collapse: collapse; min-width: 50%; font-size: 13px; margin: 6px 0 4px; }
th, td { padding: 4px 9px; border-bottom: 1px solid #eceef1; text-align: left; vertical-align: top; }
th { background: #f3f4f6; font-weight: 600; white-space: nowrap; }
tbody tr:hover { background: #fafbfc; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
.scroll { overflow-x: auto; }
td.name { max-width: 320px; overflow-wrap: anywhere; }
td.name, code { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: 12.5px; }
td.chosen { background: #fff3cd; font-weight: 650; }
tr.chosen td { background: #fff3cd; }
.badge { display: inline-block; padding: 0 7px; border-radius: 4px; font-size: 12px; font-weight: 600; color: #fff; }
figure { margin: 18px 0 26px; }
figure img { max-width: 100%; height: auto; border: 1px solid #eceef1; border-radius: 4px; }
figcaption { color: #4b535c; font-size: 13px; margin-top: 4px; }
.note { color: #6b5200; background: #fff8e1; border: 1px solid #f5e1a4; padding: 8px 12px; border-radius: 6px; }
.good { color: #1a7f37; font-weight: 600; }
.bad { color: #cf222e; font-weight: 600; }
dl.facts { display: grid; grid-template-columns: max-content 1fr; gap: 3px 18px; margin: 6px 0; }
dl.facts dt { color: #59636e; }
dl.facts dd { margin: 0; }
footer { margin-top: 40px; color: #8c959f; font-size: 12px; }
"""

PICTURE_CAPTIONS = {
    "sensitivity.png": ("Sensitivity", "Metric drop when one layer alone takes each option (the others at full "
                        "precision); error bars: std over Monte-Carlo seeds; dark edge: the option chosen."),
    "pareto.png": ("Pareto front", "Each point is a mapping the budget sweep chose, measured by simulation: "
                   "energy per inference, accuracy drop, analog weight share (colour); the star is the mapping that ships."),
    "tiles.png": ("Tile map", "The target's analog tiles; each weight block on its tile, coloured by layer."),
    "schedule.png": ("Timeline", "One inference: analog layers on their tile groups, digital layers on their "
                     "units; red edge: the critical path."),
    "energy.png": ("Energy by layer", "Energy per inference of each layer under its option, stacked by term: "
                   "compute, converters, weight movement, activation movement, digital periphery."),
}  # fmt: skip


class Html(str):
    """Markup that is already safe; any other str is escaped where it is placed."""


def _e(value) -> str:
    return value if isinstance(value, Html) else html.escape(str(value))


def _table(headers: list[str], rows: list[list], numeric: set[int] = frozenset(), row_classes: list[str] | None = None) -> Html:
    """A table; a cell is text, Html, or (content, class) for a cell of its own class."""
    head = "".join(f'<th class="num">{_e(h)}</th>' if i in numeric else f"<th>{_e(h)}</th>" for i, h in enumerate(headers))
    body = []
    for r, row in enumerate(rows):
        cells = []
        for i, cell in enumerate(row):
            content, extra = cell if isinstance(cell, tuple) else (cell, "")
            classes = " ".join(c for c in ("num" if i in numeric else "", extra) if c)
            cells.append(f'<td class="{classes}">{_e(content)}</td>' if classes else f"<td>{_e(content)}</td>")
        row_class = row_classes[r] if row_classes and row_classes[r] else ""
        body.append(f'<tr class="{row_class}">' if row_class else "<tr>")
        body.append("".join(cells) + "</tr>")
    return Html(f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table></div>')


def _note(text: str) -> Html:
    return Html(f'<p class="note">{_e(text)}</p>')


def _badge(option: str) -> Html:
    colour = OPTION_COLOURS.get(option, "#6e7781")
    text = "#1f2328" if option == "int4" else "#fff"
    return Html(f'<span class="badge" style="background:{colour};color:{text}">{_e(option)}</span>')


def _count(n: int) -> str:
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= size:
            return f"{n / size:.2f}{unit}"
    return str(n)


def _card(label: str, value: str, detail: str | Html) -> str:
    return (f'<div class="card"><div class="label">{_e(label)}</div><div class="value">{_e(value)}</div>'
            f'<div class="detail">{_e(detail)}</div></div>')  # fmt: skip


def _summary_section(reports: dict[str, dict]) -> str:
    facts = summary(reports)
    cards = []
    if facts["analog_weight_share"] is not None:
        cards.append(_card("analog weight share", f"{facts['analog_weight_share']:.1%}",
                           f"{facts['analog_mac_share']:.1%} of MACs; {facts['mapping']}"))  # fmt: skip
    accuracy = facts["accuracy"]
    if accuracy is not None:
        verdict = (Html('<span class="good">within</span>') if accuracy["within_budget"]
                   else Html('<span class="bad">over</span>'))  # fmt: skip
        detail = Html(
            f"{_e(accuracy['metric'])} {accuracy['full_precision']:.2%} at full precision; drop "
            f"{accuracy['drop_points']:+.2f} ± {accuracy['std_points']:.2f} points at {_e(accuracy['drift'])} "
            f"({accuracy['seeds']} seeds), {verdict} the {accuracy['max_drop_points']:g}-point budget"
        )
        cards.append(_card(f"{accuracy['metric']} mapped", f"{accuracy['mapped']:.2%}", detail))
    elif "assign" in reports:
        cards.append(_card("accuracy", "not measured",
                           f"the mapping was given ({reports['assign']['source']}); measure it with hetmap run"))  # fmt: skip
    energy = facts["energy"]
    if energy is not None:
        option = energy["baseline_option"].upper()
        ratio = f"{energy['ratio']:.2f}x all-{option}" if energy["ratio"] is not None else "n/a"
        cards.append(_card("energy per inference", energy_text(energy["energy_pj"]),
                           f"{ratio} ({energy_text(energy['baseline_energy_pj'])})"))  # fmt: skip
        cards.append(_card("energy by term", breakdown_text(energy["breakdown_pj"]),
                           f"all-{option}: {breakdown_text(energy['baseline_breakdown_pj'])}"))  # fmt: skip
        cards.append(_card("latency per inference", time_text(energy["makespan_ns"]),
                           f"all-{option}: {time_text(energy['baseline_latency_ns'])} (batch 1); pipelined stream "
                           f"{energy['throughput_per_s']:,.0f} inferences/s"))  # fmt: skip
    if facts["tiles_used"] is not None:
        share = facts["tiles_used"] / facts["tile_count"] if facts["tile_count"] else 0
        cards.append(_card("tiles used", f"{facts['tiles_used']} of {facts['tile_count']}", f"{share:.0%} of the analog tiles"))
    if not cards:
        return _note("No emit or schedule report: nothing to summarise.")
    return f'<div class="cards">{"".join(cards)}</div>'


def _mapping_section(reports: dict[str, dict]) -> str:
    partition = reports.get("partition")
    if partition is None:
        return _note("No partition report: the layers are unknown.")
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
            (name, "name"), layer["op_type"], _badge(mapping[name]) if name in mapping else "",
            f"{layer['rows']} x {layer['cols']}", _count(layer["weight_count"]), _count(layer["macs"]),
            tiles or ("-" if timed else ""),
            f"{timed['tile_utilisation']:.0%}" if timed and timed["tile_utilisation"] is not None else "",
            energy_text(timed["energy_pj"]) if timed else "", time_text(timed["latency_ns"]) if timed else "",
        ]  # fmt: skip
        for option in options:
            drop = sensitivity["layers"].get(name, {}).get(option)
            text = "" if drop is None else f"{drop['drop_points']:+.2f}" + (f" ± {drop['std_points']:.2f}" if drop["std_points"] else "")
            row.append((text, "chosen" if mapping.get(name) == option else ""))
        rows.append(row)
    parts = [_table(headers, rows, numeric={3, 4, 5, 6, 7, 8, 9, *range(10, 10 + len(options))})]
    if sensitivity is not None:
        parts.append(Html(
            f"<p>Sensitivity columns: {_e(sensitivity['metric'])} drop in percentage points when that layer alone "
            f"takes the option (analog read {_e(sensitivity['drift'])} after programming, ± std over "
            f"{sensitivity['seeds']} seeds, {sensitivity['samples']} samples of {_e(sensitivity['data'])}); "
            f"highlighted: the option chosen. MACs per inference; tiles: physical tile ids; tile use: crossbar cells holding weights over the cells of the layer's tiles.</p>"
        ))  # fmt: skip
    else:
        parts.append(_note("No sensitivity report: this compile took its mapping as given (--mapping), so no "
                           "per-layer sensitivity was measured."))  # fmt: skip
    return "".join(parts)


def _pictures_section(pictures: dict[str, bytes], reports: dict[str, dict]) -> str:
    parts = []
    for name, (title, caption) in PICTURE_CAPTIONS.items():
        parts.append(f"<h3>{_e(title)}</h3>")
        if name not in pictures:
            reason = {
                "sensitivity.png": "no sensitivity report (the mapping was given with --mapping)",
                "pareto.png": "no budget sweep (compile with --pareto)" if "sensitivity" in reports
                else "no budget sweep (the mapping was given with --mapping)",
            }.get(name, "no schedule report")  # fmt: skip
            parts.append(_note(f"No {title.lower()} picture: {reason}."))
            continue
        data = base64.b64encode(pictures[name]).decode("ascii")
        parts.append(f'<figure><img src="data:image/png;base64,{data}" alt="{_e(title)}">'
                     f"<figcaption>{_e(caption)}</figcaption></figure>")  # fmt: skip
    return "".join(parts)


def _attempts_table(attempts: list[dict], chosen: dict | None, max_drop: float | None) -> Html:
    """One row per measured mapping; a 'within budget' column when there is one budget."""
    headers = ["#", "mapping", "analog share", "energy", "predicted drop", "measured drop"]
    headers += ["within budget"] if max_drop is not None else []
    rows, classes = [], []
    for index, attempt in enumerate(attempts, start=1):
        is_chosen = chosen is not None and attempt["mapping"] == chosen["mapping"]
        detail = ", ".join(f"{k}: {v}" for k, v in attempt["mapping"].items())
        row = [
            f"{index}{' (chosen)' if is_chosen else ''}",
            Html(f'<span title="{_e(detail)}">{_e(mapping_mix(attempt["mapping"].values()))}</span>'),
            f"{attempt['analog_weight_share']:.1%}", energy_text(attempt["energy_pj"]),
            f"{attempt['predicted_drop_points']:+.2f}",
            f"{attempt['measured_drop_points']:+.2f} ± {attempt['measured_std_points']:.2f}",
        ]  # fmt: skip
        if max_drop is not None:
            row.append("yes" if attempt["measured_drop_points"] <= max_drop else "no")
        rows.append(row)
        classes.append("chosen" if is_chosen else "")
    return _table(headers, rows, numeric={2, 3, 4, 5}, row_classes=classes)


def _solver_section(reports: dict[str, dict]) -> str:
    assign = reports.get("assign")
    if assign is None:
        return _note("No assign report.")
    if assign["source"] != "solver":
        return _note(f"The mapping was given ({assign['source']}); the solver did not run.")
    chosen = chosen_attempt(assign)
    verdict = ("a measured mapping within the budget ships" if assign["within_budget"]
               else "no attempt met the budget: the one with the least measured drop ships")  # fmt: skip
    if assign.get("weights") == "before fine-tuning":
        verdict += ", on the weights from before fine-tuning (the fine-tuned ones mapped worse)"
    parts = [Html(
        f"<p>Objective <b>{_e(assign['objective'])}</b> under a budget of {assign['max_drop_points']:g} points of "
        f"drop at {_e(assign['drift'])}: the MILP on the additive sensitivity model proposes, simulation measures, "
        f"the model is corrected and solved again; {_e(verdict)}. Drops in percentage points; hover a mapping for "
        f"its layers.</p>"
    ), _attempts_table(assign["attempts"], chosen, assign["max_drop_points"])]  # fmt: skip
    if assign.get("pareto"):
        sweep = sorted(unique_attempts(assign["pareto"]), key=lambda a: a["energy_pj"])
        parts.append("<h3>Budget sweep (Pareto)</h3>")
        parts.append(Html(f"<p>{len(assign['pareto'])} budgets gave {len(sweep)} distinct mappings, "
                          "each measured by simulation; by energy.</p>"))  # fmt: skip
        parts.append(_attempts_table(sweep, chosen, None))
    return "".join(parts)


def _finetune_section(reports: dict[str, dict]) -> str:
    report = reports.get("finetune")
    if report is None:
        return _note("No fine-tuning: compile with --finetune EPOCHS --train train.npz to adapt the weights.")
    scores, layers = finetune_tables(reports)
    epochs = "; ".join(f"epoch {r['epoch']}: loss {r['loss']:.3f}" for r in report["history"])
    parts = [Html(
        f"<p>The weights were fine-tuned for {report['epochs']} epochs on {_e(report['train_data'])} "
        f"({report['train_samples']} samples; {_e(report['scope'])} weights, {_count(report['trainable_parameters'])} "
        f"parameters; paths per step: {_e(', '.join(report['paths']))}; {report['seconds']:.0f} s on {_e(report['device'])}). "
        f"Metric in percent, simulated on the scoring data before and after. {_e(epochs)}.</p>"
    ), _table(["mapping", "before", "after", "change"], scores, numeric={1, 2, 3})]  # fmt: skip
    if report["analog_trained_in_full_precision"]:
        reasons = ", ".join(f"{k} ({v})" for k, v in report["analog_trained_in_full_precision"].items())
        parts.append(_note(f"Trained in full precision where analog was sampled (no training tile for them): {reasons}."))
    if layers:
        parts.append("<h3>Analog drop per layer, before and after</h3>")
        parts.append(_table(["layer", "before", "after"], layers, numeric={1, 2}))
    return "".join(parts)


def _facts(pairs: list[tuple[str, str]]) -> str:
    return '<dl class="facts">' + "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in pairs) + "</dl>"


def _model_section(reports: dict[str, dict]) -> str:
    parts = []
    canonical = reports.get("canonicalize")
    if canonical is not None:
        parts.append("<h3>Import and canonicalize</h3>")
        parts.append(_facts([
            ("producer", canonical["producer"] or "unknown"),
            ("opset", f"{canonical['opset_in']} -> {canonical['opset_out']} (IR {canonical['ir_version_in']} in)"),
            ("nodes", f"{canonical['nodes_in']} -> {canonical['nodes_out']}"),
            ("BatchNorm", f"{canonical['batchnorms_folded']} folded, {canonical['batchnorms_left']} left"),
            ("weights", f"{_count(canonical['weight_count'])} in {canonical['initializers_out']} initializers"),
        ]))  # fmt: skip
    else:
        parts.append(_note("No canonicalize report."))
    partition = reports.get("partition")
    if partition is not None:
        parts.append("<h3>Partition</h3>")
        parts.append(_facts([
            ("mappable layers", f"{len(partition['layers'])}: {_count(partition['mappable_weights'])} weights, "
                                f"{_count(partition['mappable_macs'])} MACs per inference"),
            ("tiles", f"all-analog needs {partition['tiles_needed']} of {partition['tile_count']} tiles "
                      f"({partition['tile_rows']}x{partition['tile_cols']}): "
                      + ("fits" if partition["fits_on_chip"] else "does not fit")),
        ]))  # fmt: skip
        if partition["unmappable"]:
            parts.append("<p>Not mapped to analog (stay digital):</p>")
            rows = [[(u["name"], "name"), u["op_type"], u["reason"]] for u in partition["unmappable"]]
            parts.append(_table(["layer", "op", "reason"], rows))
        else:
            parts.append("<p>Every layer that carries MACs is mappable.</p>")
    calibrate = reports.get("calibrate")
    if calibrate is not None:
        samples = f"{calibrate['samples']} sample{'s' * (calibrate['samples'] != 1)}"
        parts.append(_facts([("calibration", f"{calibrate['source']}, {samples}")]))
    pipeline = reports.get("pipeline")
    if pipeline is not None:
        parts.append("<h3>Pipeline</h3>")
        shapes = ", ".join(f"{k}={'x'.join(map(str, v))}" for k, v in pipeline["input_shapes"].items())
        parts.append(_facts([("inputs", shapes or "none"), ("seed", str(pipeline["seed"]))]))
        rows = [
            [p["name"], f"{p['seconds']:.2f} s", "" if p["parity_relative_error"] is None else f"{p['parity_relative_error']:.1e}"]
            for p in pipeline["passes"]
        ]
        parts.append(_table(["pass", "time", "ORT parity (relative error)"], rows, numeric={1, 2}))
    return "".join(parts)


SECTIONS = (
    ("summary", "Summary"),
    ("mapping", "Mapping per layer"),
    ("pictures", "Pictures"),
    ("solver", "Solver"),
    ("finetune", "Fine-tuning"),
    ("model", "Model and partition"),
)


def render_report_html(reports: dict[str, dict], pictures: dict[str, bytes], model_name: str = "", files: list[str] = ()) -> str:
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
    nav = "".join(f'<a href="#{key}">{_e(heading)}</a>' for key, heading in SECTIONS)
    sections = "".join(f'<section id="{key}"><h2>{_e(heading)}</h2>{bodies[key]}</section>' for key, heading in SECTIONS)
    written = f"<p>Files: {', '.join(f'<code>{_e(f)}</code>' for f in files)}</p>" if files else ""
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(title)}</title><style>{CSS}</style></head><body><main>"
        f"<h1>{_e(title)}</h1><p class=\"subtitle\">compiled by hetmap {_e(__version__)}</p>"
        f"<nav>{nav}</nav>{sections}<footer>{written}</footer></main></body></html>\n"
    )


def write_report_html(path: Path, reports: dict[str, dict], pictures: dict[str, bytes], model_name: str = "",
                      files: list[str] = ()) -> None:  # fmt: skip
    """Write the page to `path` atomically."""
    write_bytes_atomic(Path(path), render_report_html(reports, pictures, model_name, files).encode("utf-8"))

"""Terminal views of the JSON reports (rich tables); the JSON is the data, hetmap.report.facts its figures."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from hetmap.report.facts import (
    ENERGY_TERM_LABELS,
    assign_outcome,
    breakdown_text,
    chosen_attempt,
    count_text,
    drop_text,
    energy_text,
    finetune_tables,
    mapping_mix,
    plural,
    summary,
    time_text,
    unique_attempts,
    verdict_text,
    verified_text,
    weights_clause,
)
from hetmap.targets import Target


def show_summary(console: Console, reports: dict[str, dict], title: str = "Summary") -> None:
    """The headline: analog share, accuracy vs full precision, energy vs all-digital, tiles."""
    facts = summary(reports)
    table = Table(
        title=f"{title} ({facts['target']})" if facts["target"] else title, show_header=False, title_justify="left"
    )
    table.add_column("figure", style="bold")
    table.add_column("value")
    if facts["analog_weight_share"] is not None:
        table.add_row(
            "analog weight share",
            f"{facts['analog_weight_share']:.1%} of weights, {facts['analog_mac_share']:.1%} of MACs ({facts['mapping']})",
        )
    accuracy = facts["accuracy"]
    if accuracy is not None:
        colour = {"within": "green", "over": "red"}.get(accuracy["verdict"], "yellow")
        table.add_row(
            f"{accuracy['metric']}",
            f"{accuracy['full_precision']:.2%} full precision -> {accuracy['mapped']:.2%} mapped at "
            f"{accuracy['drift']} ({accuracy['evidence']}; [{colour}]{verdict_text(accuracy)}[/])",
        )
    elif "assign" in reports:
        table.add_row(
            "accuracy", f"not measured: mapping given ({reports['assign']['source']}); measure it with hetmap run"
        )
    energy = facts["energy"]
    if energy is not None:
        ratio = f" = {energy['ratio']:.2f}x" if energy["ratio"] is not None else " vs"
        option = energy["baseline_option"].upper()
        table.add_row(
            "energy",
            f"{energy_text(energy['energy_pj'])} per inference{ratio} all-{option} "
            f"({energy_text(energy['baseline_energy_pj'])})",
        )
        table.add_row("energy by term", f"{breakdown_text(energy['breakdown_pj'])}")
        table.add_row(f"all-{option} by term", f"{breakdown_text(energy['baseline_breakdown_pj'])}")
        table.add_row(
            "latency",
            f"{time_text(energy['makespan_ns'])} (all-{option} {time_text(energy['baseline_latency_ns'])}); "
            f"pipelined stream {energy['throughput_per_s']:,.0f} inferences/s",
        )
    if facts["tiles_used"] is not None:
        table.add_row("tiles used", f"{facts['tiles_used']} of {facts['tile_count']}")
    console.print(table)


def show_canonicalize(console: Console, report: dict) -> None:
    console.print(
        f"[bold]canonicalize[/]: {report['producer'] or 'unknown producer'}, opset "
        f"{report['opset_in']} -> {report['opset_out']}, nodes {report['nodes_in']} -> "
        f"{report['nodes_out']}, BatchNorm folded {report['batchnorms_folded']} "
        f"(left {report['batchnorms_left']}), {count_text(report['weight_count'])} weights"
    )
    if report.get("earlier_mapping_cleared"):
        console.print(
            f"  the model carried an earlier compile's mapping ({report['earlier_mapping_cleared']} layers): "
            "compiled afresh (give --mapping to keep one)"
        )


def show_partition(console: Console, report: dict) -> None:
    table = Table(title=f"Mappable layers on {report['target']} ({report['tile_rows']}x{report['tile_cols']} tiles)")
    for column in ("layer", "op", "matrix (rows x cols)", "groups", "weights", "MACs", "tiles"):
        table.add_column(column, justify="left" if column in ("layer", "op") else "right")
    for layer in report["layers"]:
        table.add_row(
            layer["name"],
            layer["op_type"],
            f"{layer['rows']} x {layer['cols']}",
            str(layer["groups"]),
            count_text(layer["weight_count"]),
            count_text(layer["macs"]),
            f"{layer['tiles']} ({layer['row_blocks']}x{layer['col_blocks']})",
        )
    console.print(table)
    if report["unmappable"]:
        skipped = Table(title="Not mapped: they run as in the model, outside the cost model")
        for column in ("layer", "op", "reason"):
            skipped.add_column(column)
        for layer in report["unmappable"]:
            skipped.add_row(layer["name"], layer["op_type"], layer["reason"])
        console.print(skipped)
    fits = "fits" if report["fits_on_chip"] else "[red]does not fit[/]"
    console.print(
        f"{len(report['layers'])} mappable layers, {count_text(report['mappable_weights'])} weights, "
        f"{count_text(report['mappable_macs'])} MACs per inference; all-analog needs "
        f"{report['tiles_needed']} of {report['tile_count']} tiles ({fits})"
    )


def show_pipeline(console: Console, report: dict) -> None:
    steps = ", ".join(
        f"{p['name']} {p['seconds']:.2f}s"
        + (f" (parity {p['parity_relative_error']:.1e})" if p["parity_relative_error"] is not None else "")
        for p in report["passes"]
    )
    shapes = ", ".join(f"{k}={'x'.join(map(str, v))}" for k, v in report["input_shapes"].items())
    console.print(f"[bold]pipeline[/]: {steps}; inputs {shapes}; seed {report['seed']}")


def show_emit(console: Console, report: dict) -> None:
    options = {}
    for option in report["layers"].values():
        options[option] = options.get(option, 0) + 1
    mix = ", ".join(f"{count} {option}" for option, count in sorted(options.items()))
    console.print(
        f"[bold]mapping[/]: {mix}; analog share {report['analog_weight_share']:.1%} of weights, "
        f"{report['analog_mac_share']:.1%} of MACs; {report['tiles_used']} of {report['tile_count']} tiles"
    )


def _drop(option: dict | None, chosen: bool, predicted: bool = False) -> str:
    text = ("~" if predicted else "") + drop_text(option)
    return f"[bold]{text}*[/]" if chosen and text else text


def show_sensitivity(console: Console, report: dict, mapping: dict[str, str] | None = None) -> None:
    options = list(dict.fromkeys(option for drops in report["layers"].values() for option in drops))
    predicted = report.get("predicted", {})
    notes = ["* the option the mapping chose"] if mapping else []
    notes += ["~ predicted to first order (--sensitivity)"] if predicted else []
    simulated_on = report.get("simulated_on", "onnxruntime (cpu)")
    notes += [f"simulated on {simulated_on}"] if not simulated_on.startswith("onnxruntime") else []
    table = Table(
        title=f"Sensitivity: {report['metric']} drop in points, one layer at a time "
        f"(analog at {report['drift']}, ± std over {report['seeds']} seeds)",
        caption="; ".join(notes) or None,
    )
    table.add_column("layer")
    for option in options:
        table.add_column(option, justify="right")
    for name, drops in report["layers"].items():
        chosen = mapping.get(name) if mapping is not None else None
        table.add_row(name, *(_drop(drops.get(o), chosen == o, o in predicted.get(name, ())) for o in options))
    console.print(table)


def _text_table(title: str, columns: tuple[str, ...], rows: list[list[str]], caption: str | None = None) -> Table:
    """The first column a label, the others numbers."""
    table = Table(title=title, caption=caption)
    for index, column in enumerate(columns):
        table.add_column(column, justify="right" if index else "left")
    for row in rows:
        table.add_row(*row)
    return table


def show_finetune(console: Console, report: dict, reports: dict[str, dict]) -> None:
    scores, layers = finetune_tables(reports)
    last = report["history"][-1] if report["history"] else None
    title = (
        f"Fine-tuning: {report['epochs']} epochs ({report['scope']} weights, {count_text(report['trainable_parameters'])} "
        f"parameters, paths {', '.join(report['paths'])}) on {report['device']}, {report['seconds']:.0f} s"
    )
    if report.get("resumed_from_epoch"):
        title += f", resumed after epoch {report['resumed_from_epoch']} from the checkpoint in the output folder"
    caption = f"metric in percent; final training loss {last['loss']:.3f}" if last else None
    console.print(_text_table(title, ("mapping", "before", "after", "change"), scores, caption))
    if layers:
        console.print(
            _text_table(
                "Analog drop per layer (points) before and after fine-tuning", ("layer", "before", "after"), layers
            )
        )


def _attempt_rows(table: Table, attempts: list[dict], chosen: dict | None) -> None:
    for index, attempt in enumerate(attempts, start=1):
        mark = "*" if chosen is not None and attempt["mapping"] == chosen["mapping"] else ""
        table.add_row(
            f"{index}{mark}",
            mapping_mix(attempt["mapping"].values()),
            f"{attempt['analog_weight_share']:.1%}",
            energy_text(attempt["energy_pj"]),
            f"{attempt['predicted_drop_points']:+.2f}",
            f"{attempt['measured_drop_points']:+.2f}±{attempt['measured_std_points']:.2f}",
            verified_text(attempt),
        )


def _attempt_table(title: str) -> Table:
    table = Table(title=title)
    for column in ("#", "mapping", "analog", "energy", "predicted", "measured", "verified"):
        table.add_column(column, justify="left" if column == "mapping" else "right")
    return table


def show_assign(console: Console, report: dict) -> None:
    if report["source"] != "solver":
        console.print(f"[bold]assign[/]: mapping given ({report['source']})")
        return
    chosen = chosen_attempt(report)
    verdict = assign_outcome(report)
    weights = weights_clause(report)
    colour = "yellow" if report.get("weights") == "before fine-tuning" else "dim"
    console.print(
        f"[bold]assign[/]: objective {report['objective']}, budget {report['max_drop_points']:g} points at {report['drift']}; "
        f"{len(report['attempts'])} measured attempts, {verdict}{f'; [{colour}]{weights}[/]' if weights else ''}"
    )
    table = _attempt_table(
        "Solver attempts (drops in points: measured on the decision data, then verified; * = chosen)"
    )
    _attempt_rows(table, report["attempts"], chosen)
    console.print(table)
    if report["pareto"]:
        sweep = sorted(unique_attempts(report["pareto"]), key=lambda a: a["energy_pj"])
        table = _attempt_table(f"Pareto sweep: {len(report['pareto'])} budgets, {len(sweep)} distinct mappings")
        _attempt_rows(table, sweep, chosen)
        console.print(table)


def show_schedule(console: Console, report: dict) -> None:
    table = Table(title=f"Schedule on {report['target']}: one inference, batch 1 (energy by term)")
    columns = ("layer", "unit", "tiles", "use", "start", "latency", "energy", *ENERGY_TERM_LABELS.values())
    for column in columns:
        table.add_column(column, justify="left" if column in ("layer", "unit") else "right")
    for layer in report["layers"]:
        name = f"[bold]{layer['name']}[/]" if layer["critical"] else layer["name"]
        use = layer["tile_utilisation"]
        table.add_row(
            name,
            layer["unit"],
            str(len(layer["tiles"])) if layer["tiles"] else "",
            f"{use:.0%}" if use is not None else "",
            time_text(layer["start_ns"]),
            time_text(layer["latency_ns"]),
            energy_text(layer["energy_pj"]),
            *(energy_text(layer["energy_breakdown_pj"][term]) for term in ENERGY_TERM_LABELS),
        )
    console.print(table)
    path = " -> ".join(report["critical_path"]) or "none"
    console.print(
        f"[bold]schedule[/]: makespan {time_text(report['makespan_ns'])}, pipelined "
        f"{report['throughput_per_s']:,.0f} inferences/s, {energy_text(report['total_energy_pj'])}; "
        f"critical path ({plural(len(report['critical_path']), 'layer')}, bold): {path}; "
        f"{report['zero_cost_nodes']} other nodes costed at 0"
    )


def show_run(console: Console, report: dict) -> None:
    metric = report["metric"]
    table = Table(
        title=f"{metric} on {report['data']} ({report['samples']} samples, {report['seeds']} seeds)",
        caption=f"simulated on {report.get('simulated_on', 'onnxruntime (cpu)')}",
    )
    for column in ("drift", f"{metric} mean", "std", "vs full precision"):
        table.add_column(column, justify="right")
    table.add_row("full precision", f"{report['full_precision']:.2%}", "", "")
    table.add_row(
        "converters only", f"{report['nominal']:.2%}", "", f"{report['nominal'] - report['full_precision']:+.2%}"
    )
    for drift in report["drifts"]:
        table.add_row(
            drift["drift"],
            f"{drift['mean']:.2%}",
            f"{drift['std']:.2%}",
            f"{drift['mean'] - report['full_precision']:+.2%}",
        )
    console.print(table)


REPORT_VIEWS = {
    "canonicalize": show_canonicalize,
    "partition": show_partition,
    "finetune": show_finetune,
    "sensitivity": show_sensitivity,
    "assign": show_assign,
    "schedule": show_schedule,
    "emit": show_emit,
    "pipeline": show_pipeline,
}


def show_reports(console: Console, reports: dict[str, dict]) -> None:
    """Every pass report that has a view, in pipeline order."""
    mapping = reports["assign"]["mapping"]["layers"] if "assign" in reports else None
    for name, view in REPORT_VIEWS.items():
        if name == "sensitivity" and name in reports:
            show_sensitivity(console, reports[name], mapping)
        elif name == "finetune" and name in reports:
            show_finetune(console, reports[name], reports)
        elif name in reports:
            view(console, reports[name])


def show_target_list(console: Console, targets: list[Target]) -> None:
    table = Table(title="Built-in targets")
    for column in ("name", "analog tiles", "DAC/ADC bits", "analog pJ/MAC", "digital"):
        table.add_column(column)
    for target in targets:
        analog = target.analog
        table.add_row(
            target.name,
            f"{analog.count} x {analog.rows}x{analog.cols}",
            f"{analog.dac_bits}/{analog.adc_bits}",
            f"{analog.energy_per_mac_pj:g}",
            ", ".join(f"INT{bits}" for bits in target.digital_bits),
        )
    console.print(table)


def show_target(console: Console, target: Target) -> None:
    table = Table(title=f"Target {target.name}", show_header=False)
    table.add_column("field")
    table.add_column("value")
    table.add_row("description", target.description)
    table.add_row("clock_mhz", f"{target.clock_mhz:g}")
    for field_name, value in vars(target.analog).items():
        if field_name != "noise":
            table.add_row(f"analog.{field_name}", str(value))
    for field_name, value in vars(target.analog.noise).items():
        table.add_row(f"analog.noise.{field_name}", str(value))
    for unit in target.digital:
        table.add_row(
            f"digital INT{unit.bits}",
            f"{unit.energy_per_mac_pj:g} pJ/MAC, {unit.macs_per_cycle} MACs/cycle, {unit.energy_per_output_pj:g} pJ/output",
        )
    for field_name, value in vars(target.memory).items():
        table.add_row(f"memory.{field_name}", str(value))
    console.print(table)

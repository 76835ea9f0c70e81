"""Terminal views of the JSON reports (rich tables); the JSON is the data."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from hetmap.targets import Target


def _count(n: int) -> str:
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= size:
            return f"{n / size:.2f}{unit}"
    return str(n)


def show_canonicalize(console: Console, report: dict) -> None:
    console.print(
        f"[bold]canonicalize[/]: {report['producer'] or 'unknown producer'}, opset "
        f"{report['opset_in']} -> {report['opset_out']}, nodes {report['nodes_in']} -> "
        f"{report['nodes_out']}, BatchNorm folded {report['batchnorms_folded']} "
        f"(left {report['batchnorms_left']}), {_count(report['weight_count'])} weights"
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
            _count(layer["weight_count"]),
            _count(layer["macs"]),
            f"{layer['tiles']} ({layer['row_blocks']}x{layer['col_blocks']})",
        )
    console.print(table)
    if report["unmappable"]:
        skipped = Table(title="Not mapped to analog")
        for column in ("layer", "op", "reason"):
            skipped.add_column(column)
        for layer in report["unmappable"]:
            skipped.add_row(layer["name"], layer["op_type"], layer["reason"])
        console.print(skipped)
    fits = "fits" if report["fits_on_chip"] else "[red]does not fit[/]"
    console.print(
        f"{len(report['layers'])} mappable layers, {_count(report['mappable_weights'])} weights, "
        f"{_count(report['mappable_macs'])} MACs per inference; all-analog needs "
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


def show_run(console: Console, report: dict) -> None:
    metric = report["metric"]
    table = Table(title=f"{metric} on {report['data']} ({report['samples']} samples, {report['seeds']} seeds)")
    for column in ("drift", f"{metric} mean", "std", "vs full precision"):
        table.add_column(column, justify="right")
    table.add_row("full precision", f"{report['full_precision']:.2%}", "", "")
    table.add_row("converters only", f"{report['nominal']:.2%}", "", f"{report['nominal'] - report['full_precision']:+.2%}")
    for drift in report["drifts"]:
        table.add_row(
            drift["drift"], f"{drift['mean']:.2%}", f"{drift['std']:.2%}", f"{drift['mean'] - report['full_precision']:+.2%}"
        )
    console.print(table)


REPORT_VIEWS = {
    "canonicalize": show_canonicalize,
    "partition": show_partition,
    "emit": show_emit,
    "pipeline": show_pipeline,
}


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
            f"{unit.energy_per_mac_pj:g} pJ/MAC, {unit.macs_per_cycle} MACs/cycle",
        )
    console.print(table)

"""Pictures of the compile reports: sensitivity bars, Pareto front, tile map, energy by term (and the timeline).

Each picture is drawn from the JSON dicts in reports/, never from live
objects, with matplotlib's Agg canvas (no display, no pyplot state), and
written atomically beside the JSON as reports/<name>.png.
"""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch, Rectangle

from hetmap.graph.modelio import write_bytes_atomic
from hetmap.report.facts import chosen_attempt, unique_attempts
from hetmap.report.timeline import render_timeline

OPTION_COLOURS = {"analog": "#4c78a8", "int8": "#54a24b", "int4": "#f2a33a", "int2": "#e45756"}
CHOSEN_COLOUR = "#d1495b"
FREE_TILE_COLOUR = "#f1f1f1"
LAYER_COLOURS = colormaps["tab20"]
MAX_KEY_ENTRIES = 40  # layers named in the tile map's key; more are counted
MAX_DRAWN_TILES = 4096  # tiles the tile map draws (the first ones: placement fills tiles from id 0); more are counted
PICTURES = ("sensitivity.png", "pareto.png", "tiles.png", "schedule.png", "energy.png")
TERM_COLOURS = {
    "compute": "#4c78a8",
    "conversions": "#f58518",
    "weight_movement": "#e45756",
    "activation_movement": "#72b7b2",
    "periphery": "#b279a2",
}


def _figure(width: float, height: float) -> Figure:
    figure = Figure(figsize=(width, height), dpi=110, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def energy_scale(picojoules: float) -> tuple[float, str]:
    """(divisor, unit) that shows `picojoules` with a few digits before the point."""
    for divisor, unit in ((1e9, "mJ"), (1e6, "µJ"), (1e3, "nJ")):
        if picojoules >= divisor:
            return divisor, unit
    return 1.0, "pJ"


def render_sensitivity(sensitivity: dict, mapping: dict[str, str] | None = None) -> bytes:
    """Per layer (rows, graph order) the metric drop of each option alone, std over seeds as error bars.

    The option the mapping chose for each layer gets a dark edge.
    """
    layers = list(sensitivity["layers"])
    options = list(dict.fromkeys(option for drops in sensitivity["layers"].values() for option in drops))
    bar = 0.8 / max(len(options), 1)
    figure = _figure(10, 1.6 + max(len(layers), 1) * (0.16 + 0.11 * len(options)))
    axes = figure.add_subplot()
    for index, option in enumerate(options):
        offsets = np.arange(len(layers)) - 0.4 + bar * (index + 0.5)
        drops = [sensitivity["layers"][name].get(option, {}) for name in layers]
        values = [d.get("drop_points", np.nan) for d in drops]
        errors = [d.get("std_points", 0.0) for d in drops]
        chosen = [mapping is not None and mapping.get(name) == option for name in layers]
        axes.barh(
            offsets,
            values,
            height=bar * 0.92,
            xerr=errors,
            color=OPTION_COLOURS.get(option, "#999999"),
            edgecolor=["#111111" if c else "none" for c in chosen],
            linewidth=[1.6 if c else 0 for c in chosen],
            error_kw={"elinewidth": 0.8, "capsize": 2, "ecolor": "#333333"},
            label=option,
        )
    axes.axvline(0, color="#333333", linewidth=0.8)
    axes.set_yticks(range(len(layers)), layers, fontsize=8)
    axes.set_ylim(len(layers) - 0.5, -0.5)
    axes.grid(axis="x", linestyle=":", linewidth=0.6)
    axes.set_axisbelow(True)
    metric = sensitivity["metric"]
    axes.set_xlabel(f"{metric} drop (percentage points; more is worse), mean ± std over seeds")
    axes.set_title(
        f"Sensitivity: one layer at a time on each option, others full precision\n"
        f"{metric} {sensitivity['full_precision']:.2%} at full precision; analog read {sensitivity['drift']} "
        f"after programming, {sensitivity['seeds']} seeds, {sensitivity['samples']} samples",
        fontsize=9,
    )
    handles = [Patch(color=OPTION_COLOURS.get(o, "#999999"), label=o) for o in options]
    if mapping is not None:
        handles.append(Patch(facecolor="white", edgecolor="#111111", linewidth=1.6, label="chosen"))
    axes.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    return _png(figure)


def _front(points: list[dict]) -> list[dict]:
    """The non-dominated points (less energy or less drop than every other), by energy."""
    front, best_drop = [], math.inf
    for point in sorted(points, key=lambda p: (p["energy_pj"], p["measured_drop_points"])):
        if point["measured_drop_points"] < best_drop:
            front.append(point)
            best_drop = point["measured_drop_points"]
    return front


def render_pareto(assign: dict, schedule: dict | None = None, metric: str = "accuracy") -> bytes | None:
    """Measured drop vs energy of the budget sweep, coloured by analog weight share; None without a sweep."""
    sweep = unique_attempts(assign.get("pareto") or [])
    if not sweep:
        return None
    keys = {tuple(sorted(a["mapping"].items())) for a in sweep}
    others = [a for a in unique_attempts(assign.get("attempts", [])) if tuple(sorted(a["mapping"].items())) not in keys]
    everything = sweep + others
    peak = max([a["energy_pj"] for a in everything] + ([schedule["digital_baseline_energy_pj"]] if schedule else []))
    divisor, unit = energy_scale(peak)
    figure = _figure(9, 5.4)
    axes = figure.add_subplot()
    norm, cmap = Normalize(0, 100), colormaps["viridis"]
    front = _front(everything)
    if len(front) > 1:  # one point alone dominates every other: no line to draw
        axes.plot(
            [a["energy_pj"] / divisor for a in front],
            [a["measured_drop_points"] for a in front],
            color="#555555",
            linewidth=1,
            linestyle="--",
            zorder=1,
            label="non-dominated in energy and drop",
        )
    for a in sweep:
        axes.errorbar(
            a["energy_pj"] / divisor,
            a["measured_drop_points"],
            yerr=a["measured_std_points"],
            color="#777777",
            linewidth=0.8,
            capsize=2,
            zorder=2,
        )
    scatter = axes.scatter(
        [a["energy_pj"] / divisor for a in sweep],
        [a["measured_drop_points"] for a in sweep],
        c=[100 * a["analog_weight_share"] for a in sweep],
        cmap=cmap,
        norm=norm,
        s=70,
        edgecolors="#222222",
        linewidths=0.7,
        zorder=3,
        label="budget sweep",
    )
    for a in sweep:
        axes.annotate(
            f"{a['analog_weight_share']:.0%}",
            (a["energy_pj"] / divisor, a["measured_drop_points"]),
            xytext=(6, 5),
            textcoords="offset points",
            fontsize=7,
            color="#333333",
        )
    if others:
        axes.scatter(
            [a["energy_pj"] / divisor for a in others],
            [a["measured_drop_points"] for a in others],
            facecolors="none",
            edgecolors="#888888",
            s=40,
            zorder=2,
            label="other solver attempts",
        )
    chosen = chosen_attempt(assign)
    if chosen is not None:
        axes.scatter(
            [chosen["energy_pj"] / divisor],
            [chosen["measured_drop_points"]],
            marker="*",
            s=380,
            facecolors="none",
            edgecolors=CHOSEN_COLOUR,
            linewidths=1.6,
            zorder=4,
            label="chosen mapping",
        )
    if assign.get("max_drop_points") is not None:
        axes.axhline(
            assign["max_drop_points"],
            color=CHOSEN_COLOUR,
            linestyle=":",
            linewidth=1,
            label=f"budget {assign['max_drop_points']:g} points",
        )
    if schedule is not None:
        axes.axvline(
            schedule["digital_baseline_energy_pj"] / divisor,
            color="#333333",
            linestyle="-.",
            linewidth=1,
            label=f"all-{schedule['digital_baseline_option'].upper()} energy",
        )
    axes.set_xlabel(f"energy per inference ({unit})")
    axes.set_ylabel(f"measured {metric} drop at {assign.get('drift') or '?'} (percentage points)")
    axes.set_title(
        f"Pareto front: accuracy vs energy vs analog share ({len(sweep)} distinct mappings from the budget sweep)",
        fontsize=9,
    )
    axes.grid(linestyle=":", linewidth=0.6)
    axes.set_axisbelow(True)
    colourbar = figure.colorbar(scatter, ax=axes, pad=0.01)
    colourbar.set_label("analog weight share (%)")
    axes.legend(fontsize=7, loc="best")
    return _png(figure)


def _grid(count: int) -> tuple[int, int]:
    """(rows, columns) of a near-square grid holding `count` tiles."""
    columns = max(1, math.ceil(math.sqrt(count)))
    return math.ceil(count / columns), columns


def _key_label(number: int, layer: dict) -> str:
    tiles = len(layer["tiles"])
    return f"{number}  {layer['name']} ({tiles} tile{'s' * (tiles > 1)})"


def render_tiles(schedule: dict, partition: dict | None = None) -> bytes:
    """The target's tiles as a grid, each coloured by the layer whose weight block it holds.

    The solid part of a tile is the share of its rows and columns the block
    occupies (needs the partition report's tile size; else the tile is filled).
    """
    count = min(schedule["tile_count"], MAX_DRAWN_TILES)
    grid_rows, grid_columns = _grid(count)
    tile_rows = partition["tile_rows"] if partition else None
    tile_cols = partition["tile_cols"] if partition else None
    analog = [layer for layer in schedule["layers"] if layer["tiles"]]
    blocks = {}
    for number, layer in enumerate(analog, start=1):
        for block in layer["tiles"]:
            blocks[block["tile"]] = (number, layer, block)
    side = min(5.5, 1.0 + 0.6 * grid_columns)  # inches of the grid's width
    labels = [_key_label(n, l) for n, l in enumerate(analog[:MAX_KEY_ENTRIES], start=1)]
    key_width = 1.0 + 0.06 * max([len(label) for label in labels] + [28])
    figure = _figure(max(side + key_width, 6.5), max(side * grid_rows / grid_columns + 0.8, 2.6))
    axes = figure.add_subplot()
    axes.set_aspect("equal", anchor="W")  # the key sits right of the grid, not of its box
    show_ids, show_numbers = count <= 256, count <= 1024
    font = max(4.0, min(9.0, 60 / grid_columns))
    for tile in range(count):
        x, y = tile % grid_columns, tile // grid_columns
        if tile not in blocks:
            axes.add_patch(
                Rectangle(
                    (x + 0.05, y + 0.05), 0.9, 0.9, facecolor=FREE_TILE_COLOUR, edgecolor="#bbbbbb", linewidth=0.6
                )
            )
        else:
            number, layer, block = blocks[tile]
            colour = LAYER_COLOURS((number - 1) % 20)
            axes.add_patch(
                Rectangle(
                    (x + 0.05, y + 0.05), 0.9, 0.9, facecolor=colour, alpha=0.25, edgecolor="#555555", linewidth=0.8
                )
            )
            height = 0.9 * (block["rows"] / tile_rows if tile_rows else 1.0)
            width = 0.9 * (block["cols"] / tile_cols if tile_cols else 1.0)
            axes.add_patch(Rectangle((x + 0.05, y + 0.05), width, height, facecolor=colour, edgecolor="none"))
            if show_numbers:
                label = (
                    str(number) if len(layer["tiles"]) == 1 else f"{number}\n{block['row_block']},{block['col_block']}"
                )
                axes.text(
                    x + 0.5,
                    y + 0.5,
                    label,
                    ha="center",
                    va="center",
                    fontsize=font,
                    fontweight="bold",
                    color="#111111",
                    linespacing=0.9,
                )
        if show_ids:
            backing = {"facecolor": "white", "alpha": 0.7, "pad": 0.6, "edgecolor": "none"} if tile in blocks else None
            axes.text(
                x + 0.1,
                y + 0.1,
                str(tile),
                ha="left",
                va="top",
                fontsize=max(4.5, font * 0.7),
                color="#555555",
                bbox=backing,
            )
    axes.set_xlim(0, grid_columns)
    axes.set_ylim(grid_rows, 0)
    axes.set_xticks([])
    axes.set_yticks([])
    for spine in axes.spines.values():
        spine.set_visible(False)
    size = f" of {tile_rows}x{tile_cols} cells" if tile_rows else ""
    drawn = f" (the first {count} drawn)" if count < schedule["tile_count"] else ""
    figure.suptitle(  # over the whole figure: a small grid is narrower than the title
        f"{schedule['target']}: {schedule['tiles_used']} of {schedule['tile_count']} analog tiles hold weights"
        f"{size}{drawn}\n"
        f"tile id top left; number = layer (row block, column block); solid part = cells the block uses",
        fontsize=9,
    )
    handles = [Patch(color=LAYER_COLOURS(n % 20), label=label) for n, label in enumerate(labels)]
    if len(analog) > MAX_KEY_ENTRIES:
        handles.append(Line2D([], [], linestyle="none", label=f"... and {len(analog) - MAX_KEY_ENTRIES} more layers"))
    handles.append(Patch(facecolor=FREE_TILE_COLOUR, edgecolor="#bbbbbb", label="free tile"))
    digital = len(schedule["layers"]) - len(analog)
    if digital:
        handles.append(
            Line2D([], [], linestyle="none", label=f"({digital} layer{'s' * (digital > 1)} on digital units)")
        )
    axes.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=7, frameon=False)
    return _png(figure)


def render_energy(schedule: dict) -> bytes:
    """Per layer (rows, graph order) a bar of its energy, stacked by term; the option in the label."""
    layers = schedule["layers"]
    figure = _figure(7.5, 1.2 + 0.22 * len(layers))
    axes = figure.add_subplot()
    peak = max([layer["energy_pj"] for layer in layers] + [1e-12])
    divisor, unit = energy_scale(peak)
    rows = np.arange(len(layers))
    left = np.zeros(len(layers))
    for term, colour in TERM_COLOURS.items():
        values = np.array([layer["energy_breakdown_pj"][term] for layer in layers]) / divisor
        axes.barh(rows, values, left=left, color=colour, label=term.replace("_", " "), height=0.7)
        left += values
    axes.set_yticks(rows, [f"{layer['name']} ({layer['option']})" for layer in layers], fontsize=7)
    axes.invert_yaxis()
    axes.set_xlabel(f"energy per inference ({unit})")
    axes.legend(loc="lower right", fontsize=7, frameon=False)
    return _png(figure)


def render_pictures(reports: dict[str, dict]) -> dict[str, bytes]:
    """Every picture the reports allow, by file name (sensitivity and Pareto need the solver's reports)."""
    pictures = {}
    assign, schedule = reports.get("assign"), reports.get("schedule")
    mapping = assign["mapping"]["layers"] if assign else None
    if "sensitivity" in reports:
        pictures["sensitivity.png"] = render_sensitivity(reports["sensitivity"], mapping)
    if assign is not None:
        metric = reports.get("sensitivity", {}).get("metric", "accuracy")
        pareto = render_pareto(assign, schedule, metric)
        if pareto is not None:
            pictures["pareto.png"] = pareto
    if schedule is not None:
        pictures["tiles.png"] = render_tiles(schedule, reports.get("partition"))
        pictures["schedule.png"] = render_timeline(schedule)
        pictures["energy.png"] = render_energy(schedule)
    return pictures


def write_pictures(reports: dict[str, dict], folder: Path) -> dict[str, bytes]:
    """Write every picture into `folder` atomically; remove those a earlier compile left that no longer apply."""
    pictures = render_pictures(reports)
    for name in PICTURES:
        if name in pictures:
            write_bytes_atomic(Path(folder) / name, pictures[name])
        else:
            (Path(folder) / name).unlink(missing_ok=True)
    return pictures

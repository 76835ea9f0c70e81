"""The schedule as a picture: a Gantt chart drawn from reports/schedule.json.

One row per analog layer (its tile group) and one per digital unit; a bar per
layer from start to end, labelled with its name, or with a number keyed beside
the chart where the name does not fit; critical-path bars have a red edge. Drawn from the JSON dict, never from live objects, with
matplotlib's Agg canvas (no display, no pyplot state).
"""

from __future__ import annotations

import io

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from hetmap.report.facts import energy_text

ANALOG_COLOUR, DIGITAL_COLOUR, CRITICAL_COLOUR = "#8fb8de", "#c9c9c9", "#d1495b"
FONT_SIZE = 7.0
CHAR_SHARE = 0.0095  # one label character, as a share of the time axis (estimate, bold included)
MIN_BAR_SHARE = 0.003  # bars shorter than this share of the time axis are drawn this long


class _RowLabels:
    """Labels of one row, placed where they collide with no bar and no other label."""

    def __init__(self, axes, row: int, bars: list[tuple[float, float]], axis_end: float):
        self.axes, self.row, self.axis_end = axes, row, axis_end
        self.taken = list(bars)  # (left, right) intervals in data units
        self.above: list[tuple[float, float]] = []  # labels squeezed into the gap above the bars
        self.char = CHAR_SHARE * axis_end

    def _free(self, left: float, right: float) -> bool:
        return left >= 0 and right <= self.axis_end and all(right <= a or left >= b for a, b in self.taken)

    def place_above(self, text: str, left: float, right: float) -> None:
        """A short label in the gap above its bar (a number), where no other one sits."""
        width, middle = self.char * 0.85 * len(text), (left + right) / 2
        span = (middle - width / 2, middle + width / 2)
        if all(span[1] <= a or span[0] >= b for a, b in self.above):
            self.above.append(span)
            self.axes.text(middle, self.row - 0.41, text, ha="center", va="center", fontsize=FONT_SIZE - 1)

    def place(self, text: str, left: float, right: float, bold: bool) -> bool:
        """Inside the bar, else right of it, else left of it; False when nowhere is free."""
        width, pad = self.char * len(text), self.char * 0.5
        spots = [(left + (right - left) / 2, "center")] if width * 1.15 < right - left else []
        if self._free(right + pad / 2, right + pad + width):
            spots.append((right + pad, "left"))
        if self._free(left - pad - width, left - pad / 2):
            spots.append((left - pad, "right"))
        if not spots:
            return False
        x, align = spots[0]
        if align != "center":
            self.taken.append((x, x + width) if align == "left" else (x - width, x))
        self.axes.text(
            x, self.row, text, ha=align, va="center", fontsize=FONT_SIZE, fontweight="bold" if bold else "normal"
        )
        return True


def _tile_span(tiles: list[dict]) -> str:
    ids = sorted(block["tile"] for block in tiles)
    if len(ids) == 1:
        return f"tile {ids[0]}"
    if ids == list(range(ids[0], ids[-1] + 1)):
        return f"tiles {ids[0]}-{ids[-1]}"
    return "tiles " + ",".join(map(str, ids))


def _rows(report: dict) -> list[tuple[str, list[dict]]]:
    """(row label, layers on it): analog tile groups in graph order, then digital units widest first."""
    rows = [(_tile_span(l["tiles"]), [l]) for l in report["layers"] if l["unit"] == "analog"]
    digital: dict[str, list[dict]] = {}
    for layer in report["layers"]:
        if layer["unit"] != "analog":
            digital.setdefault(layer["unit"], []).append(layer)
    for unit in sorted(digital, key=lambda u: -int(u.removeprefix("int"))):
        rows.append((f"{unit.upper()} unit", digital[unit]))
    return rows


def _time_scale(makespan_ns: float) -> tuple[float, str]:
    for divisor, unit in ((1e6, "ms"), (1e3, "µs")):
        if makespan_ns >= divisor:
            return divisor, unit
    return 1.0, "ns"


def render_timeline(report: dict) -> bytes:
    """PNG bytes of the Gantt chart of a schedule report (its JSON dict)."""
    rows = _rows(report)
    divisor, unit = _time_scale(report["makespan_ns"])
    span = max(report["makespan_ns"] / divisor, 1e-12)
    axis_end = span * 1.08
    numbers = {layer["name"]: i + 1 for i, layer in enumerate(report["layers"])}
    figure = Figure(figsize=(11, max(1.6 + 0.42 * len(rows), 0.5 + 0.14 * len(numbers))), dpi=110, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    in_key = []
    for row, (_, layers) in enumerate(rows):
        bars = []
        for layer in sorted(layers, key=lambda l: l["start_ns"]):
            left = layer["start_ns"] / divisor
            width = max(layer["latency_ns"] / divisor, span * MIN_BAR_SHARE)  # too short to see still shows
            colour = ANALOG_COLOUR if layer["unit"] == "analog" else DIGITAL_COLOUR
            edge, line = (CRITICAL_COLOUR, 2.0) if layer["critical"] else ("#333333", 0.6)
            axes.barh(row, width, left=left, height=0.62, color=colour, edgecolor=edge, linewidth=line)
            bars.append((layer, left, left + width))
        labels = _RowLabels(axes, row, [(a, b) for _, a, b in bars], axis_end)
        # names first, then numbers (keyed beside the chart) where names do not fit
        unnamed = [(l, a, b) for l, a, b in bars if not labels.place(l["name"], a, b, l["critical"])]
        for layer, left, right in unnamed:
            number = str(numbers[layer["name"]])
            if not labels.place(number, left, right, layer["critical"]):
                labels.place_above(number, left, right)
            in_key.append(layer["name"])
    axes.set_yticks(range(len(rows)), [label for label, _ in rows], fontsize=8)
    axes.set_ylim(len(rows) - 0.5, -0.5)
    axes.set_xlim(0, axis_end)
    axes.set_xlabel(f"time ({unit})")
    axes.grid(axis="x", linestyle=":", linewidth=0.6)
    axes.set_axisbelow(True)
    axes.set_title(
        f"{report['target']}: one inference in {report['makespan_ns'] / divisor:.3g} {unit}, "
        f"{energy_text(report['total_energy_pj'])} (all-{report['digital_baseline_option'].upper()}: "
        f"{energy_text(report['digital_baseline_energy_pj'])}); {report['tiles_used']} of "
        f"{report['tile_count']} tiles",
        fontsize=9,
    )
    handles = [
        Patch(color=ANALOG_COLOUR, label="analog"),
        Patch(color=DIGITAL_COLOUR, label="digital"),
        Patch(facecolor="white", edgecolor=CRITICAL_COLOUR, linewidth=2.0, label="critical path"),
    ]
    keyed = [name for name in numbers if name in in_key]
    handles += [Patch(visible=False, label=f"{numbers[name]}  {name}") for name in keyed]
    axes.legend(
        handles=handles,
        loc="upper left",
        bbox_to_anchor=(1.01, 1.0),
        fontsize=FONT_SIZE,
        frameon=False,
        handlelength=1.4,
        labelspacing=0.3,
    )
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()

"""The markup report.html is built from: its style sheet, escaping, tables, cards and badges.

Text from a report is escaped wherever it is placed; `Html` marks markup that already is safe.
"""

from __future__ import annotations

import html

from hetmap.report.plots import OPTION_COLOURS

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
.unsure { color: #9a6700; font-weight: 600; }
dl.facts { display: grid; grid-template-columns: max-content 1fr; gap: 3px 18px; margin: 6px 0; }
dl.facts dt { color: #59636e; }
dl.facts dd { margin: 0; }
footer { margin-top: 40px; color: #8c959f; font-size: 12px; }
"""


class Html(str):
    """Markup that is already safe; any other str is escaped where it is placed."""


def escape(value) -> str:
    return value if isinstance(value, Html) else html.escape(str(value))


def table(
    headers: list[str], rows: list[list], numeric: set[int] = frozenset(), row_classes: list[str] | None = None
) -> Html:
    """A table; a cell is text, Html, or (content, class) for a cell of its own class."""
    head = "".join(
        f'<th class="num">{escape(h)}</th>' if i in numeric else f"<th>{escape(h)}</th>" for i, h in enumerate(headers)
    )
    body = []
    for r, row in enumerate(rows):
        cells = []
        for i, cell in enumerate(row):
            content, extra = cell if isinstance(cell, tuple) else (cell, "")
            classes = " ".join(c for c in ("num" if i in numeric else "", extra) if c)
            cells.append(f'<td class="{classes}">{escape(content)}</td>' if classes else f"<td>{escape(content)}</td>")
        row_class = row_classes[r] if row_classes and row_classes[r] else ""
        body.append(f'<tr class="{row_class}">' if row_class else "<tr>")
        body.append("".join(cells) + "</tr>")
    return Html(
        f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table></div>'
    )


def note(text: str) -> Html:
    return Html(f'<p class="note">{escape(text)}</p>')


def badge(option: str) -> Html:
    colour = OPTION_COLOURS.get(option, "#6e7781")
    text = "#1f2328" if option == "int4" else "#fff"
    return Html(f'<span class="badge" style="background:{colour};color:{text}">{escape(option)}</span>')


def card(label: str, value: str, detail: str | Html) -> str:
    return (
        f'<div class="card"><div class="label">{escape(label)}</div><div class="value">{escape(value)}</div>'
        f'<div class="detail">{escape(detail)}</div></div>'
    )


def fact_list(pairs: list[tuple[str, str]]) -> str:
    return '<dl class="facts">' + "".join(f"<dt>{escape(k)}</dt><dd>{escape(v)}</dd>" for k, v in pairs) + "</dl>"

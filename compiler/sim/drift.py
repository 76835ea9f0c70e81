"""Drift times as users write them: a number and a unit, seconds after programming."""

from __future__ import annotations

import re

from hetmap.errors import HetmapError

DRIFT_UNITS_S = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0, "y": 365.25 * 86400.0}


def parse_drift(text: str) -> float:
    """'1h' -> 3600.0 seconds after programming."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdwy])\s*", text)
    if not match and "," in text:
        raise HetmapError(
            f"--drift '{text}': compile holds its budget at one drift time (e.g. 1d); hetmap run takes a list"
        )
    if not match:
        raise HetmapError(f"unknown drift time '{text}': use a number and a unit s, m, h, d, w or y (e.g. 1h or 1d)")
    return float(match.group(1)) * DRIFT_UNITS_S[match.group(2)]

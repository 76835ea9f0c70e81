"""The assignment MILP: one option per layer under an accuracy budget and tile capacity.

Exact for the additive model (each layer's measured drop adds up), solved
by HiGHS through scipy.optimize.milp. Variables x[l, o] in {0, 1}:
    sum_o x[l, o] = 1                          every layer gets one option
    sum_{l,o} drop[l, o] x[l, o] <= budget     accuracy budget (points)
    sum_l tiles[l] x[l, analog] <= tile_count  analog capacity
    sum_{l,o} bytes[l, o] x[l, o] - s <= sram   s >= 0: digital weight bytes beyond the SRAM
Objective: energy (sum energy[l, o] x[l, o] + surcharge s, the DRAM
surcharge per spilled byte) or, for `analog-share`, the analog weight count
(maximised; energy breaks ties).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, milp

from hetmap.errors import NonFiniteError, first_non_finite
from hetmap.mapping.mapping import ANALOG

OBJECTIVES = ("energy", "analog-share")


@dataclass(frozen=True)
class Problem:
    layers: list[str]
    options: list[str]
    drop: np.ndarray  # [layers, options] predicted metric drop (points), >= 0
    energy_pj: np.ndarray  # [layers, options]
    weights: np.ndarray  # [layers] weight counts
    tiles: np.ndarray  # [layers] tiles when analog
    tile_count: int
    allowed: np.ndarray  # [layers, options] bool: option available for the layer
    weight_bytes: np.ndarray | None = None  # [layers, options] digital weight bytes fetched per inference
    weight_sram_bytes: float = 0.0  # on-chip weight memory; 0: every weight fits
    dram_surcharge_pj_per_byte: float = 0.0  # a spilled byte's extra energy

    def __post_init__(self):
        """The MILP never sees a NaN or inf: one line names the layer, the option and the figure."""
        for figure, array in (("drop", self.drop), ("energy", self.energy_pj)):
            index = first_non_finite(array)
            if index is not None:
                layer, option = self.layers[index[0]], self.options[index[1]]
                raise NonFiniteError(f"solver: the {figure} of layer '{layer}' as {option} is {array[index]}")
        for figure, array in (("weight count", self.weights), ("tile count", self.tiles)):
            index = first_non_finite(array)
            if index is not None:
                raise NonFiniteError(f"solver: the {figure} of layer '{self.layers[index[0]]}' is {array[index]}")


def solve(
    problem: Problem, budget: float, objective: str = "energy", excluded: list[dict[str, str]] = ()
) -> dict[str, str] | None:
    """The optimal mapping {layer: option}, or None when no mapping meets the constraints.

    `excluded` mappings are cut off (used when a measured mapping broke the budget).
    """
    if not np.isfinite(budget):
        raise NonFiniteError(f"solver: the accuracy budget is {budget}")
    analog = problem.options.index(ANALOG)
    energy = _energy(problem)
    if objective == "energy":
        cost = energy
    else:
        share = np.zeros(problem.drop.shape)
        share[:, analog] = problem.weights / max(problem.weights.sum(), 1)
        cost = np.append(-share.reshape(-1), 0.0) + 1e-6 * energy
    return _milp(problem, cost, budget, excluded)


def least_drop(problem: Problem) -> dict[str, str] | None:
    """The mapping within the tile capacity whose predicted drop is least, the least energy among those
    (two solves: the least drop, then the least energy at that drop); None when no mapping fits."""
    fits = _milp(problem, np.append(problem.drop.reshape(-1), 0.0), np.inf)
    if fits is None:
        return None
    least = predicted_drop(problem, fits)
    return _milp(problem, _energy(problem), least + 1e-9 * max(least, 1.0)) or fits


def _energy(problem: Problem) -> np.ndarray:
    """Each choice's energy, scaled to at most 1, and last the spilled bytes' surcharge (0 when none can spill)."""
    surcharge = problem.dram_surcharge_pj_per_byte if _spills(problem) else 0.0
    return np.append(problem.energy_pj.reshape(-1), surcharge) / max(problem.energy_pj.max(), 1e-30)


def _spills(problem: Problem) -> bool:
    return problem.weight_sram_bytes > 0 and problem.dram_surcharge_pj_per_byte > 0 and problem.weight_bytes is not None


def _milp(problem: Problem, cost: np.ndarray, budget: float, excluded: list[dict[str, str]] = ()):
    """The mapping of least `cost` (one entry per choice, then the spilled bytes) under the constraints."""
    n_layers, n_options = problem.drop.shape
    size = n_layers * n_options
    spill = _spills(problem)

    def row(per_choice: np.ndarray, spilled: float = 0.0) -> np.ndarray:
        return np.append(per_choice.reshape(-1), spilled)

    rows = [np.hstack([np.kron(np.eye(n_layers), np.ones(n_options)), np.zeros((n_layers, 1))]), row(problem.drop)]
    lower = [np.ones(n_layers), [-np.inf]]
    upper = [np.ones(n_layers), [budget]]
    capacity = np.zeros((n_layers, n_options))
    capacity[:, problem.options.index(ANALOG)] = problem.tiles
    rows.append(row(capacity))
    lower.append([-np.inf])
    upper.append([problem.tile_count])
    if spill:
        rows.append(row(problem.weight_bytes, -1.0))
        lower.append([-np.inf])
        upper.append([problem.weight_sram_bytes])
    for mapping in excluded:  # no-good cut: at most n-1 of the same choices
        cut = np.zeros((n_layers, n_options))
        for i, name in enumerate(problem.layers):
            cut[i, problem.options.index(mapping[name])] = 1
        rows.append(row(cut))
        lower.append([-np.inf])
        upper.append([n_layers - 1])
    spill_bound = np.inf if spill else 0.0
    result = milp(
        cost,
        constraints=LinearConstraint(np.vstack(rows), np.concatenate(lower), np.concatenate(upper)),
        integrality=np.append(np.ones(size), 0),
        bounds=Bounds(np.zeros(size + 1), np.append(problem.allowed.reshape(-1).astype(float), spill_bound)),
    )
    if not result.success:
        return None
    choice = result.x[:size].reshape(n_layers, n_options).argmax(axis=1)
    return {name: problem.options[c] for name, c in zip(problem.layers, choice)}


def predicted_drop(problem: Problem, mapping: dict[str, str]) -> float:
    return float(sum(problem.drop[i, problem.options.index(mapping[name])] for i, name in enumerate(problem.layers)))

"""The assignment MILP: one option per layer under an accuracy budget and tile capacity.

Exact for the additive model (each layer's measured drop adds up), solved
by HiGHS through scipy.optimize.milp. Variables x[l, o] in {0, 1}:
    sum_o x[l, o] = 1                          every layer gets one option
    sum_{l,o} drop[l, o] x[l, o] <= budget     accuracy budget (points)
    sum_l tiles[l] x[l, analog] <= tile_count  analog capacity
Objective: energy (sum energy[l, o] x[l, o]) or, for `analog-share`, the
analog weight count (maximised; energy breaks ties).
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


def solve(problem: Problem, budget: float, objective: str = "energy", excluded: list[dict[str, str]] = ()) -> dict[str, str] | None:
    """The optimal mapping {layer: option}, or None when no mapping meets the constraints.

    `excluded` mappings are cut off (used when a measured mapping broke the budget).
    """
    if not np.isfinite(budget):
        raise NonFiniteError(f"solver: the accuracy budget is {budget}")
    n_layers, n_options = problem.drop.shape
    size = n_layers * n_options
    analog = problem.options.index(ANALOG)
    energy = problem.energy_pj.reshape(-1)
    if objective == "energy":
        cost = energy / max(energy.max(), 1e-30)
    else:
        share = np.zeros((n_layers, n_options))
        share[:, analog] = problem.weights / max(problem.weights.sum(), 1)
        cost = -share.reshape(-1) + 1e-6 * energy / max(energy.max(), 1e-30)
    one_each = np.kron(np.eye(n_layers), np.ones(n_options))
    rows = [one_each, problem.drop.reshape(1, -1)]
    lower = [np.ones(n_layers), [-np.inf]]
    upper = [np.ones(n_layers), [budget]]
    capacity = np.zeros((n_layers, n_options))
    capacity[:, analog] = problem.tiles
    rows.append(capacity.reshape(1, -1))
    lower.append([-np.inf])
    upper.append([problem.tile_count])
    for mapping in excluded:  # no-good cut: at most n-1 of the same choices
        cut = np.zeros((n_layers, n_options))
        for i, name in enumerate(problem.layers):
            cut[i, problem.options.index(mapping[name])] = 1
        rows.append(cut.reshape(1, -1))
        lower.append([-np.inf])
        upper.append([n_layers - 1])
    result = milp(
        cost,
        constraints=LinearConstraint(np.vstack(rows), np.concatenate(lower), np.concatenate(upper)),
        integrality=np.ones(size),
        bounds=Bounds(np.zeros(size), problem.allowed.reshape(-1).astype(float)),
    )
    if not result.success:
        return None
    choice = result.x.reshape(n_layers, n_options).argmax(axis=1)
    return {name: problem.options[c] for name, c in zip(problem.layers, choice)}


def predicted_drop(problem: Problem, mapping: dict[str, str]) -> float:
    return float(sum(problem.drop[i, problem.options.index(mapping[name])] for i, name in enumerate(problem.layers)))

"""The one exception type whose message is shown to users as a single line, and the finiteness guard."""

from __future__ import annotations

import numpy as np


class HetmapError(Exception):
    """A problem with the user's input: the CLI prints it and exits non-zero.

    The message names the file, field or node at fault and what to do.
    Anything else raised inside hetmap is an internal error (a bug).
    """


class NonFiniteError(HetmapError):
    """A NaN or inf where a number must be finite; the message names where it came from."""


def first_non_finite(values, nan_only: bool = False) -> tuple[int, ...] | None:
    """The index of the first NaN or inf (NaN alone with `nan_only`) in `values`; None when there is none."""
    array = np.asarray(values)
    if array.dtype.kind not in "fc" or array.size == 0:
        return None
    bad = np.isnan(array) if nan_only else ~np.isfinite(array)
    if not bad.any():
        return None
    return tuple(int(i) for i in np.unravel_index(int(np.argmax(bad)), array.shape))


def require_finite(values, what: str) -> None:
    """Stop with one line when `values` hold a NaN or inf; `what` names them ("data file 'a.npz' array 'x'")."""
    index = first_non_finite(values)
    if index is None:
        return
    value = np.asarray(values)[index]
    where = f" at index {list(index)}" if index else ""
    raise NonFiniteError(f"{what} holds {value}{where}: hetmap needs finite numbers")

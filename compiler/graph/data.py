"""User data files (.npz): inputs under `x` or per input name, labels under `y`."""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hetmap.errors import HetmapError, require_finite


@dataclass(frozen=True)
class Dataset:
    """Model inputs keyed by graph input name, and optional labels.

    A 0-d array feeds a scalar input: one value shared by every sample.
    """

    inputs: dict[str, np.ndarray]
    labels: np.ndarray | None
    source: str

    @property
    def size(self) -> int:
        return max((len(array) for array in self.inputs.values() if array.ndim), default=1)

    def head(self, count: int) -> dict[str, np.ndarray]:
        return {name: array[:count] if array.ndim else array for name, array in self.inputs.items()}

    def subset(self, indices: np.ndarray) -> Dataset:
        """The samples at `indices` (a 0-d input stays whole); errors still name the file."""
        inputs = {name: array[indices] if array.ndim else array for name, array in self.inputs.items()}
        labels = self.labels[indices] if self.labels is not None else None
        return Dataset(inputs, labels, self.source)


def split_dataset(dataset: Dataset, share: float, seed: int, multiple: int = 1) -> tuple[Dataset, Dataset]:
    """(decision part, verification part): a seeded, disjoint split, stratified by class when labels are per sample.

    The verification part takes `share` of each class (of all samples without
    per-sample labels); both parts hold a whole number of `multiple` samples
    (a model's fixed batch size).
    """
    rng = np.random.default_rng([seed, 18])
    labels = dataset.labels
    if labels is not None and labels.ndim == 1:
        groups = [np.flatnonzero(labels == value) for value in np.unique(labels)]
    else:
        groups = [np.arange(dataset.size)]
    verify = []
    for group in groups:
        group = rng.permutation(group)
        verify.extend(group[: int(round(len(group) * share))])
    verify = rng.permutation(np.array(verify, dtype=np.int64))
    decide = rng.permutation(np.setdiff1d(np.arange(dataset.size), verify))
    verify = np.sort(verify[: len(verify) - len(verify) % multiple])
    decide = np.sort(decide[: len(decide) - len(decide) % multiple])
    return dataset.subset(decide), dataset.subset(verify)


def load_dataset(path: Path, input_dtypes: dict[str, np.dtype]) -> Dataset:
    """Read an .npz whose arrays match the model's graph inputs by name (or `x`).

    Arrays are cast to the input's dtype (float64 or uint8 images feed a
    float32 model); a float array for an integer input is an error.
    """
    input_names = list(input_dtypes)
    if not path.is_file():
        raise HetmapError(f"data file '{path}' does not exist")
    if not zipfile.is_zipfile(path):  # np.load would try a pickle and say so
        raise HetmapError(f"data file '{path}' is not an .npz archive (save arrays with numpy.savez)")
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
    except (zipfile.BadZipFile, ValueError, OSError) as error:
        raise HetmapError(f"data file '{path}' is not a readable .npz file ({error})") from None
    for key, array in arrays.items():
        require_finite(array, f"data file '{path}' array '{key}'")
    labels = arrays.pop("y", None)
    if len(input_names) == 1 and input_names[0] not in arrays and "x" in arrays:
        arrays[input_names[0]] = arrays.pop("x")
    missing = [name for name in input_names if name not in arrays]
    if missing:
        hint = "an array 'x'" if len(input_names) == 1 else "one array per input name"
        raise HetmapError(
            f"data file '{path}' has no array for model input '{missing[0]}' "
            f"(found: {', '.join(sorted(arrays)) or 'nothing'}; expected {hint})"
        )
    inputs = {name: _conform(arrays[name], input_dtypes[name], name, path) for name in input_names}
    sizes = {len(array) for array in inputs.values() if array.ndim}
    if labels is not None:
        sizes.add(len(labels))
    if sizes == {0}:
        raise HetmapError(f"data file '{path}' holds no samples")
    if len(sizes) > 1 or 0 in sizes:
        raise HetmapError(f"data file '{path}': arrays disagree on the number of samples ({sorted(sizes)})")
    return Dataset(inputs=inputs, labels=labels, source=str(path))


def _conform(array: np.ndarray, dtype: np.dtype, name: str, path: Path) -> np.ndarray:
    if array.dtype == dtype:
        return array
    lossless_kind = np.issubdtype(dtype, np.floating) or not np.issubdtype(array.dtype, np.floating)
    if lossless_kind and array.dtype.kind in "fiub" and dtype.kind in "fiub":
        return array.astype(dtype)
    raise HetmapError(f"data file '{path}': array for input '{name}' is {array.dtype}, the model expects {dtype}")

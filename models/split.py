"""The train/test arrays every reference data set is made into."""

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Split:
    """Inputs (float32, in the model's layout, values in [0, 1]) and labels (int64), for training and for testing."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray

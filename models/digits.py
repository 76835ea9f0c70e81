"""The digits data set (ships with scikit-learn), scaled and split once, so every reference model is trained and tested on the same samples."""

import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from hetmap.models.split import Split

TEST_FRACTION = 0.3


def load_split(seed: int) -> Split:
    """Stratified train/test split of the 1797 digits as flat 8x8 images (N, 64); pixel values 0..16 are divided by 16."""
    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)
    y = digits.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=TEST_FRACTION, stratify=y, random_state=seed)
    return Split(x_train, y_train, x_test, y_test)


def as_layout(x: np.ndarray, layout: str) -> np.ndarray:
    """Reshape flat images to a model's input layout: "flat" (N, 64), "image" (N, 1, 8, 8), "tokens" (N, 8, 8), rows as tokens."""
    shapes = {"flat": (-1, 64), "image": (-1, 1, 8, 8), "tokens": (-1, 8, 8)}
    return np.ascontiguousarray(x.reshape(shapes[layout]))

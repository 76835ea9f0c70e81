"""shapes32: the procedural 32x32 RGB task is seeded, balanced, in the bundled layout, and reproduces the bundled data."""

import numpy as np
import pytest

from hetmap.models import reference_path, shapes32


def draw(seed: int, count: int = 100) -> tuple[np.ndarray, np.ndarray]:
    return shapes32.generate(count, np.random.default_rng(seed))


def test_same_seed_same_images_other_seed_other_images():
    x, y = draw(3)
    x_again, y_again = draw(3)
    x_other, _ = draw(4)
    assert np.array_equal(x, x_again) and np.array_equal(y, y_again)
    assert not np.array_equal(x, x_other)


def test_images_are_float32_nchw_in_sixteenth_steps_of_unit_range():
    x, y = draw(0)
    assert x.shape == (100, 3, 32, 32) and x.dtype == np.float32
    assert y.shape == (100,) and y.dtype == np.int64
    assert x.min() >= 0.0 and x.max() <= 1.0
    assert np.array_equal(x * shapes32.LEVELS, np.round(x * shapes32.LEVELS))


def test_labels_cover_the_ten_classes_equally():
    _, y = draw(1, count=250)
    assert len(shapes32.CLASSES) == 10
    assert np.bincount(y, minlength=10).tolist() == [25] * 10


def test_count_must_keep_classes_balanced():
    with pytest.raises(ValueError, match="multiple of 10"):
        draw(0, count=25)


def test_bundled_test_set_is_the_seed_0_draw_and_shared_by_both_resnets():
    split = shapes32.load_split(0, train_count=0)
    for name in ("resnet8", "resnet20"):
        bundled = np.load(reference_path(f"{name}.test.npz"))
        assert np.array_equal(bundled["x"], split.x_test) and np.array_equal(bundled["y"], split.y_test)

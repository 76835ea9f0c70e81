"""shapes32: 32x32 RGB images of 10 shape classes, drawn procedurally from a seed (numpy only, no download).

Each image is one shape (random size, rotation, position and colour, a little
darker than its background) on a random colour gradient, with distractor
strokes and blobs drawn behind and over it, then speckle (pixels set to random
colours). Edges are antialiased from signed distances; pixels are rounded to
1/16 steps in [0, 1], like the digits' 0..16 levels, which also keeps the
compressed .npz files small.
"""

from dataclasses import dataclass

import numpy as np

from hetmap.models.split import Split

CLASSES = ("disk", "ring", "square", "frame", "triangle", "plus", "star", "crescent", "arrow", "bars")
SIZE = 32
LEVELS = 16  # pixel values are k / LEVELS
CHUNK = 500  # images drawn at once
TRAIN_COUNT, TEST_COUNT = 2000, 1000


@dataclass(frozen=True)
class Difficulty:
    """The knobs that make the task hard. The defaults are tuned so the bundled ResNet-8 and ResNet-20 land between
    80 and 95 % and lose at least 3 points all-analog; low contrast is what makes analog noise hurt (models/README.md)."""

    radius_px: tuple[float, float] = (5.0, 10.0)  # shape half-size
    contrast: tuple[float, float] = (0.12, 0.3)  # mean-RGB difference between background and (darker) shape
    clutter: tuple[int, int] = (1, 4)  # distractors per image, low inclusive, high exclusive
    occluding_fraction: float = 0.5  # share of distractors drawn over the shape
    speckle: float = 0.08  # share of pixels replaced by a random colour (pixel noise that keeps the .npz small)


def _box(u: np.ndarray, v: np.ndarray, half_u: float, half_v: float) -> np.ndarray:
    qu, qv = np.abs(u) - half_u, np.abs(v) - half_v
    return np.hypot(np.maximum(qu, 0), np.maximum(qv, 0)) + np.minimum(np.maximum(qu, qv), 0)


def _polygon(u: np.ndarray, v: np.ndarray, normals_deg: tuple[float, ...], apothems: tuple[float, ...]) -> np.ndarray:
    """Convex polygon as the largest half-plane distance (exact inside, slightly short outside corners)."""
    angles = np.deg2rad(normals_deg)
    return np.max([np.cos(a) * u + np.sin(a) * v - d for a, d in zip(angles, apothems)], axis=0)


def _star(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    phase = (np.arctan2(v, u) * 5 / (2 * np.pi)) % 1.0
    reach = 0.42 + 0.68 * np.abs(2 * phase - 1)  # 1.1 at the five tips, 0.42 between them
    return (np.hypot(u, v) - reach) * 0.6  # distances along the spokes overstate the true distance


def _signed_distance(label: int, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Signed distance (in shape radii, negative inside) of class `label` in its own frame (u, v)."""
    radius = np.hypot(u, v)
    name = CLASSES[label]
    if name == "disk":
        return radius - 0.95
    if name == "ring":
        return np.abs(radius - 0.7) - 0.3
    if name == "square":
        return _box(u, v, 0.8, 0.8)
    if name == "frame":
        return np.abs(_box(u, v, 0.64, 0.64)) - 0.22
    if name == "triangle":
        return _polygon(u, v, (90.0, 210.0, 330.0), (0.55, 0.55, 0.55))
    if name == "plus":
        return np.minimum(_box(u, v, 1.0, 0.3), _box(u, v, 0.3, 1.0))
    if name == "star":
        return _star(u, v)
    if name == "crescent":
        return np.maximum(radius - 1.0, 0.85 - np.hypot(u - 0.5, v))
    if name == "arrow":
        head = _polygon(u, v, (180.0, 60.0, -60.0), (-0.15, 0.5, 0.5))
        return np.minimum(_box(u + 0.4, v, 0.55, 0.17), head)
    if name == "bars":
        return np.minimum(_box(u, v - 0.5, 0.95, 0.22), _box(u, v + 0.5, 0.95, 0.22))
    raise ValueError(f"unknown class {label}")


def _coverage(signed_distance_px: np.ndarray) -> np.ndarray:
    """Antialiased coverage of a pixel whose centre lies at this signed distance (in pixels) from an edge."""
    return np.clip(0.5 - signed_distance_px, 0.0, 1.0)


def _composite(images: np.ndarray, coverage: np.ndarray, colours: np.ndarray) -> None:
    """Paint colours (N, 3) over images (N, 3, H, W) with coverage (N, H, W), in place."""
    alpha = coverage[:, None]
    images *= 1.0 - alpha
    images += alpha * colours[:, :, None, None]


def _distractors(rng: np.random.Generator, count: int, grid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One distractor per image, a stroke (thin line segment) or a small blob: its coverage (N, H, W) and colour (N, 3)."""
    py, px = grid
    start = rng.uniform(0, SIZE, (count, 2))
    angle = rng.uniform(0, 2 * np.pi, count)
    length = rng.uniform(4.0, 14.0, count)
    end = start + length[:, None] * np.stack([np.cos(angle), np.sin(angle)], axis=1)
    half_width = rng.uniform(0.5, 1.1, count)
    is_blob = rng.random(count) < 0.4
    blob_radius = rng.uniform(1.2, 3.0, count)
    colours = rng.random((count, 3))

    sx, sy = start[:, 0, None, None], start[:, 1, None, None]
    dx, dy = (end - start)[:, 0, None, None], (end - start)[:, 1, None, None]
    t = np.clip(((px - sx) * dx + (py - sy) * dy) / (dx * dx + dy * dy), 0.0, 1.0)
    stroke = np.hypot(px - sx - t * dx, py - sy - t * dy) - half_width[:, None, None]
    blob = np.hypot(px - sx, py - sy) - blob_radius[:, None, None]
    return _coverage(np.where(is_blob[:, None, None], blob, stroke)), colours


def _colour_pairs(rng: np.random.Generator, count: int, contrast: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    """Background and shape colours of any hue, the shape darker (ink on paper) by a mean-RGB difference within
    `contrast`; pairs outside it are redrawn."""
    background, shape = rng.random((count, 3)), rng.random((count, 3))
    while True:
        difference = background.mean(axis=1) - shape.mean(axis=1)
        redraw = (np.abs(difference) < contrast[0]) | (np.abs(difference) > contrast[1])
        if not redraw.any():
            break
        shape[redraw] = rng.random((int(redraw.sum()), 3))
    darker_background = (difference < 0)[:, None]
    return np.where(darker_background, shape, background), np.where(darker_background, background, shape)


def generate(
    count: int, rng: np.random.Generator, difficulty: Difficulty = Difficulty()
) -> tuple[np.ndarray, np.ndarray]:
    """`count` images (a multiple of 10: each class count/10 times, shuffled) and their labels; drawn 500 at a time."""
    if count % len(CLASSES):
        raise ValueError(f"count must be a multiple of {len(CLASSES)} so the classes are balanced, got {count}")
    labels = rng.permutation(np.repeat(np.arange(len(CLASSES), dtype=np.int64), count // len(CLASSES)))
    chunks = [_render(labels[start : start + CHUNK], rng, difficulty) for start in range(0, count, CHUNK)]
    return np.concatenate(chunks) if chunks else np.empty((0, 3, SIZE, SIZE), np.float32), labels


def _render(labels: np.ndarray, rng: np.random.Generator, difficulty: Difficulty) -> np.ndarray:
    """Images of the given labels, (N, 3, 32, 32) float32."""
    count = len(labels)
    grid = np.mgrid[0:SIZE, 0:SIZE].astype(np.float64) + 0.5  # pixel centres, (y, x)

    background, foreground = _colour_pairs(rng, count, difficulty.contrast)
    gradient_angle = rng.uniform(0, 2 * np.pi, count)[:, None, None]
    gradient = (np.cos(gradient_angle) * grid[1] + np.sin(gradient_angle) * grid[0]) / SIZE - 0.5
    images = background[:, :, None, None] + rng.uniform(-0.3, 0.3, (count, 3))[:, :, None, None] * gradient[:, None]

    radius = rng.uniform(*difficulty.radius_px, count)
    centre = rng.uniform(0.5 * SIZE - 6.0, 0.5 * SIZE + 6.0, (count, 2))
    rotation = rng.uniform(0, 2 * np.pi, count)
    clutter = rng.integers(*difficulty.clutter, count)
    occluding = rng.random((count, difficulty.clutter[1])) < difficulty.occluding_fraction
    items = [_distractors(rng, count, grid) for _ in range(difficulty.clutter[1])]

    for k, (coverage, colours) in enumerate(items):  # behind the shape
        drawn = (k < clutter) & ~occluding[:, k]
        _composite(images, coverage * drawn[:, None, None], colours)

    dy, dx = grid[0] - centre[:, 1, None, None], grid[1] - centre[:, 0, None, None]
    cos, sin = np.cos(rotation)[:, None, None], np.sin(rotation)[:, None, None]
    scale = radius[:, None, None]
    u, v = (cos * dx + sin * dy) / scale, (-sin * dx + cos * dy) / scale
    distance_px = np.empty_like(u)
    for label in range(len(CLASSES)):
        members = labels == label
        distance_px[members] = _signed_distance(label, u[members], v[members]) * scale[members]
    _composite(images, _coverage(distance_px), foreground)

    for k, (coverage, colours) in enumerate(items):  # over the shape
        drawn = (k < clutter) & occluding[:, k]
        _composite(images, coverage * drawn[:, None, None], colours)

    speckled = rng.random((count, 1, SIZE, SIZE)) < difficulty.speckle
    images = np.where(speckled, rng.random(images.shape), images)
    pixels = np.round(np.clip(images, 0.0, 1.0) * LEVELS) / LEVELS
    return pixels.astype(np.float32)


def load_split(
    seed: int, train_count: int = TRAIN_COUNT, test_count: int = TEST_COUNT, difficulty: Difficulty = Difficulty()
) -> Split:
    """Train and test images (N, 3, 32, 32), values k/16, balanced classes, from two independent streams of one seed,
    so the test set does not depend on train_count."""
    train_rng, test_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(2))
    x_train, y_train = generate(train_count, train_rng, difficulty)
    x_test, y_test = generate(test_count, test_rng, difficulty)
    return Split(x_train, y_train, x_test, y_test)

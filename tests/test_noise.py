"""noise: the numpy PCM model, and its agreement with aihwkit 1.1.0 on the same weights.

The reference is aihwkit's pure-torch inference tile (TorchInferenceRPUConfig)
with PCMLikeNoiseModel(g_max=25), GlobalDriftCompensation, per-column weight
scaling to g_max and an ideal periphery (forward.is_perfect), so its weights
carry only programming noise, drift and 1/f read noise, as ours do. Both are
programmed once and read at every drift time, as a chip would be.
"""

import dataclasses

import numpy as np
import pytest

from hetmap.sim.noise import noisy_weights, program_weights, read_weights
from hetmap.targets import PCMNoise

DRIFT_TIMES_S = {"1s": 1.0, "1h": 3600.0, "1d": 86400.0, "1y": 365 * 86400.0}
QUIET = PCMNoise(prog_noise_scale=0.0, read_noise_scale=0.0, drift_scale=0.0)


def gaussian_weights(rows: int, cols: int, seed: int) -> np.ndarray:
    """W[rows_in, cols_out] with a different spread per column, like a trained layer's."""
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((rows, cols)) * rng.uniform(0.05, 0.5, cols)).astype(np.float32)


# Reproducibility and the noiseless limit.


def test_same_seed_gives_the_same_draw_and_another_seed_a_different_one():
    weights = gaussian_weights(64, 48, seed=0)
    first = noisy_weights(weights, PCMNoise(), 3600.0, np.random.default_rng(7))
    again = noisy_weights(weights, PCMNoise(), 3600.0, np.random.default_rng(7))
    other = noisy_weights(weights, PCMNoise(), 3600.0, np.random.default_rng(8))
    assert first.dtype == np.float32 and first.shape == weights.shape
    np.testing.assert_array_equal(first, again)
    assert np.mean(first != other) > 0.99


def test_programmed_state_is_reused_for_every_read_time():
    weights = gaussian_weights(64, 48, seed=1)
    programmed = program_weights(weights, PCMNoise(), np.random.default_rng(3))
    nu_before = programmed.drift_nu.copy()
    day = read_weights(programmed, PCMNoise(), 86400.0, np.random.default_rng(4))
    day_again = read_weights(programmed, PCMNoise(), 86400.0, np.random.default_rng(4))
    np.testing.assert_array_equal(day, day_again)
    np.testing.assert_array_equal(programmed.drift_nu, nu_before)
    assert programmed.drift_nu.min() >= 0


def test_one_draw_is_program_then_read():
    weights = gaussian_weights(64, 48, seed=2)
    draw = noisy_weights(weights, PCMNoise(), 86400.0, np.random.default_rng(5))
    rng = np.random.default_rng(5)
    programmed = program_weights(weights, PCMNoise(), rng)
    np.testing.assert_array_equal(draw, read_weights(programmed, PCMNoise(), 86400.0, rng))


@pytest.mark.parametrize("field", ["g_programmed_us", "drift_nu", "read_noise_q"])
def test_a_read_may_write_over_the_programmed_state(field):
    weights = gaussian_weights(64, 48, seed=3)
    programmed = program_weights(weights, PCMNoise(), np.random.default_rng(5))
    expected = read_weights(programmed, PCMNoise(), 86400.0, np.random.default_rng(6))
    out = getattr(programmed, field)
    assert read_weights(programmed, PCMNoise(), 86400.0, np.random.default_rng(6), out=out) is out
    np.testing.assert_array_equal(out, expected)


def test_without_noise_the_weights_come_back():
    weights = gaussian_weights(40, 30, seed=2)
    weights[:, 3] = 0.0  # an all-zero column maps to 0 uS
    out = noisy_weights(weights, QUIET, 365 * 86400.0, np.random.default_rng(0))
    np.testing.assert_allclose(out, weights, rtol=1e-6, atol=1e-9)
    zeros = np.zeros((8, 8), np.float32)
    np.testing.assert_array_equal(noisy_weights(zeros, QUIET, 3600.0, np.random.default_rng(0)), zeros)


def test_without_noise_clipped_weights_come_back_clipped():
    weights = gaussian_weights(40, 30, seed=3)
    bound = 2.0 * weights.std()
    out = noisy_weights(weights, QUIET, 0.0, np.random.default_rng(0), clip_sigma=2.0)
    np.testing.assert_allclose(out, np.clip(weights, -bound, bound), rtol=1e-6, atol=1e-9)
    assert np.abs(out).max() <= bound * (1 + 1e-6) < np.abs(weights).max()


def test_columns_map_their_largest_weight_to_g_max():
    weights = gaussian_weights(40, 30, seed=4)
    programmed = program_weights(weights, QUIET, np.random.default_rng(0))
    np.testing.assert_allclose(np.abs(programmed.weights * programmed.us_per_weight).max(axis=0), 25.0, rtol=1e-6)
    np.testing.assert_array_equal(programmed.weights * programmed.us_per_weight, programmed.g_programmed_us)


def test_drift_compensation_restores_the_mean_conductance():
    """Drift alone shrinks every device by (t/t0)^-nu; the global factor undoes it on average."""
    weights = np.random.default_rng(5).uniform(-1, 1, (200, 100)).astype(np.float32)
    weights[0] = 1.0  # every column has the same scale, so mean |w| follows mean |g|
    drift_only = dataclasses.replace(QUIET, drift_scale=1.0)
    year_s = DRIFT_TIMES_S["1y"]
    compensated = noisy_weights(weights, drift_only, year_s, np.random.default_rng(1))
    raw = noisy_weights(
        weights, dataclasses.replace(drift_only, drift_compensation=False), year_s, np.random.default_rng(1)
    )
    assert np.abs(compensated).mean() == pytest.approx(np.abs(weights).mean(), rel=1e-5)
    assert np.abs(raw).mean() < 0.5 * np.abs(weights).mean()  # nu >= 0.049: (1.6e6)^-0.049 < 0.5
    np.testing.assert_allclose(compensated / raw, compensated[0, 0] / raw[0, 0], rtol=1e-5)


def test_read_time_must_not_be_negative():
    programmed = program_weights(gaussian_weights(4, 4, seed=6), PCMNoise(), np.random.default_rng(0))
    with pytest.raises(ValueError, match="t_inference_s"):
        read_weights(programmed, PCMNoise(), -1.0, np.random.default_rng(0))


# Agreement with aihwkit 1.1.0.


@pytest.mark.parametrize("fraction_of_g_max", [0.0, 0.01, 0.1, 0.5, 1.0])
def test_programming_noise_and_drift_exponents_match_aihwkit_per_conductance(fraction_of_g_max):
    """Device level: aihwkit's PCMLikeNoiseModel on the same target conductance, 100 000 devices."""
    pytest.importorskip("aihwkit")
    import torch
    from aihwkit.inference import PCMLikeNoiseModel

    weights = np.full((201, 500), fraction_of_g_max, np.float32)
    weights[0] = 1.0  # each column's max: g_max
    torch.manual_seed(0)
    their_weights, their_nu = PCMLikeNoiseModel(g_max=25.0).apply_programming_noise(torch.from_numpy(weights))
    theirs_us, their_nu = 25.0 * their_weights.numpy()[1:], their_nu[0].numpy()[1:]  # nu of the g+ device
    programmed = program_weights(weights, PCMNoise(), np.random.default_rng(0))
    ours_us, our_nu = programmed.g_programmed_us[1:], programmed.drift_nu[1:]
    assert ours_us.std() == pytest.approx(theirs_us.std(), rel=0.05)
    assert abs(ours_us.mean() - theirs_us.mean()) <= 0.05 * theirs_us.std()
    assert our_nu.std() == pytest.approx(their_nu.std(), rel=0.05)
    assert our_nu.mean() == pytest.approx(their_nu.mean(), rel=0.05)


def aihwkit_layer(weights: np.ndarray):
    """An aihwkit layer holding W (aihwkit stores W[out, in]), mapped like ours."""
    import torch
    from aihwkit.inference import GlobalDriftCompensation, PCMLikeNoiseModel
    from aihwkit.nn import AnalogLinear
    from aihwkit.simulator.configs import TorchInferenceRPUConfig

    config = TorchInferenceRPUConfig()
    config.noise_model = PCMLikeNoiseModel(g_max=25.0)
    config.drift_compensation = GlobalDriftCompensation()
    config.forward.is_perfect = True  # exact drift read-out, no DAC/ADC or output noise
    config.mapping.weight_scaling_omega = 1.0  # each column's max |w| -> g_max
    config.mapping.weight_scaling_columnwise = True
    rows, cols = weights.shape
    layer = AnalogLinear(rows, cols, bias=False, rpu_config=config)
    layer.set_weights(torch.from_numpy(weights.T.copy()))
    return layer.eval()


def aihwkit_weights_by_time(weights: np.ndarray, seed: int) -> dict[str, np.ndarray]:
    """Program once, then the effective weights at each drift time: tile weights x column scales x alpha."""
    import torch

    torch.manual_seed(seed)
    layer = aihwkit_layer(weights)
    layer.program_analog_weights()
    (tile,) = layer.analog_tiles()
    by_time = {}
    for name, t_s in DRIFT_TIMES_S.items():
        layer.drift_analog_weights(t_s)
        tile_weights, _ = tile.get_weights(apply_weight_scaling=True)
        by_time[name] = (tile_weights * tile.alpha).numpy().T
    return by_time


def ours_weights_by_time(weights: np.ndarray, seed: int, noise: PCMNoise) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    programmed = program_weights(weights, noise, rng)
    return {name: read_weights(programmed, noise, t_s, rng) for name, t_s in DRIFT_TIMES_S.items()}


@dataclasses.dataclass
class ErrorStats:
    """Weight error w_read - w, and the same signed and relative to the column's max |w|."""

    mean: float
    std: float
    shrink_mean: float  # mean of sign(w) (w_read - w) / max|w|: < 0 pulls weights toward zero
    shrink_std: float


def error_stats(weights: np.ndarray, draws: list[np.ndarray]) -> ErrorStats:
    error = np.concatenate([draw - weights for draw in draws])
    column_max = np.abs(weights).max(axis=0)
    shrink = np.concatenate([np.sign(weights) * (draw - weights) / column_max for draw in draws])
    return ErrorStats(float(error.mean()), float(error.std()), float(shrink.mean()), float(shrink.std()))


SEEDS = tuple(range(11, 19))  # 8 x 65536 weights: 10 % is > 5 standard errors of every statistic


@pytest.fixture(scope="module")
def stats_by_time():
    """Error statistics per drift time for aihwkit, ours, and ours without drift compensation."""
    pytest.importorskip("aihwkit")
    weights = gaussian_weights(256, 256, seed=0)
    uncompensated = dataclasses.replace(PCMNoise(), drift_compensation=False)
    runs = {
        "aihwkit": [aihwkit_weights_by_time(weights, seed) for seed in SEEDS],
        "ours": [ours_weights_by_time(weights, seed, PCMNoise()) for seed in SEEDS],
        "uncompensated": [ours_weights_by_time(weights, seed, uncompensated) for seed in SEEDS],
    }
    return {
        name: {who: error_stats(weights, [run[name] for run in draws]) for who, draws in runs.items()}
        for name in DRIFT_TIMES_S
    }


@pytest.mark.parametrize("time_name", list(DRIFT_TIMES_S))
def test_weight_error_matches_aihwkit(stats_by_time, time_name):
    ours, theirs = stats_by_time[time_name]["ours"], stats_by_time[time_name]["aihwkit"]
    assert ours.std == pytest.approx(theirs.std, rel=0.10)
    assert abs(ours.mean - theirs.mean) <= 0.10 * theirs.std


@pytest.mark.parametrize("time_name", list(DRIFT_TIMES_S))
def test_pull_toward_zero_matches_aihwkit(stats_by_time, time_name):
    """The device at 0 uS programs to a half-normal conductance: weights shrink by ~0.4 % of their column."""
    ours, theirs = stats_by_time[time_name]["ours"], stats_by_time[time_name]["aihwkit"]
    assert theirs.shrink_mean < -0.003
    assert ours.shrink_mean == pytest.approx(theirs.shrink_mean, rel=0.10)
    assert ours.shrink_std == pytest.approx(theirs.shrink_std, rel=0.10)


def test_drift_compensation_keeps_the_error_centred_as_it_grows(stats_by_time):
    spread = [stats_by_time[name]["ours"].shrink_std for name in DRIFT_TIMES_S]
    assert spread == sorted(spread) and spread[-1] > 1.4 * spread[0]
    for name in DRIFT_TIMES_S:
        ours = stats_by_time[name]["ours"]
        assert abs(ours.shrink_mean - stats_by_time["1s"]["ours"].shrink_mean) < 0.05 * ours.shrink_std
    assert stats_by_time["1y"]["uncompensated"].shrink_mean < -0.1  # drifted 10 % of g_max toward zero

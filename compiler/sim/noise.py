"""PCM crossbar noise in numpy: program a weight matrix once, read it at any drift time.

The model is aihwkit 1.1.0's PCMLikeNoiseModel (fitted to IBM PCM devices,
Nandakumar et al., ICECS 2019) with its SinglePairConductanceConverter and
GlobalDriftCompensation, so that the simulator (numpy, noise baked into ONNX
initializers) and the fine-tuning (aihwkit tiles) see the same devices. One
call works on one crossbar array: its per-column scales and its drift
compensation are the array's own, as they are for one aihwkit tile.

Weights are W[rows_in, cols_out]. Every random number comes from the Generator
passed in: the same seed gives the same arrays, bit for bit.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from scipy.special import ndtri

from hetmap.graph.layouts import PEAK_FLOOR
from hetmap.targets import PCMNoise

_F32 = np.float32
_SIGN_BIT = np.int32(-(2**31))  # of a float32 viewed as int32
# aihwkit's default prog_coeff were fitted at g_max = 25 uS; it scales the
# programming noise by g_max / 25 uS (PCMLikeNoiseModel.prog_coeff_g_max_reference).
_PROG_COEFF_G_MAX_US = 25.0
# Work goes block by block, so a block's temporaries stay in the CPU's L2 cache.
# Threads gained nothing measurable on the 2-core machine this was tuned on.
_BLOCK_ELEMENTS = 1 << 15


@dataclass(frozen=True)
class ProgrammedArray:
    """One crossbar right after programming; every read time starts from here.

    Conductances are signed: a positive weight lives on the g+ device of its
    pair, a negative one on g-, and the sign says which.
    """

    weights: np.ndarray  # [rows, cols] float32 weights as mapped (after any clipping); not a copy
    us_per_weight: np.ndarray  # [cols] microsiemens per weight unit: g_max / max|w| of the column
    g_programmed_us: np.ndarray  # [rows, cols] g+ - g- as programmed
    drift_nu: np.ndarray  # [rows, cols] drift exponent of the device holding the weight
    read_noise_q: np.ndarray  # [rows, cols] 1/f noise amplitude q_s of that device
    g_reference_mean_us: float  # mean |g_programmed|: drift compensation's baseline


def program_weights(
    weights: np.ndarray, noise: PCMNoise, rng: np.random.Generator, *, clip_sigma: float | None = None
) -> ProgrammedArray:
    """Map W[rows_in, cols_out] onto a PCM array and program it once, with noise.

    Mapping (aihwkit: weight_scaling_omega=1, weight_scaling_columnwise=True,
    SinglePairConductanceConverter): each column's max |w| goes to g_max_us,
    positive weights to g+, negative to g-, the other device at 0 uS; so no
    target leaves [0, g_max] and the converter's clamp there never acts.
    `clip_sigma` first clips W at clip_sigma * std(W), as aihwkit's
    LAYER_GAUSSIAN weight clip does; None (aihwkit's default) keeps every weight.

    Programming noise, per device (aihwkit apply_programming_noise_to_conductance):
        g_P = max(0, g_T + sigma_P N),
        sigma_P = prog_noise_scale (c0 + c1 g_T/g_max + c2 (g_T/g_max)^2) g_max/25uS.
    The device at 0 uS gets c0-noise too; clipped at 0 it is half-normal and
    pulls every weight toward zero by ~0.4 % of g_max, and can flip small ones.
    Drift exponents (aihwkit generate_drift_coefficients), with x = g_T/g_max:
        nu = drift_scale |mu + sigma_nu N|,
        mu = clip(-0.0155 ln x + 0.0244, 0.049, 0.1),
        sigma_nu = clip(-0.0125 ln x - 0.0059, 0.008, 0.045).
    """
    weights = np.ascontiguousarray(weights, dtype=_F32)
    if weights.ndim != 2:
        raise ValueError(f"weights must be a matrix W[rows_in, cols_out], got shape {weights.shape}")
    if clip_sigma is not None:
        bound = _F32(clip_sigma * weights.std(dtype=np.float64))
        weights = np.clip(weights, -bound, bound)
    g_max = noise.g_max_us
    col_max = np.maximum(weights.max(axis=0, initial=0), -weights.min(axis=0, initial=0))  # no |W| copy
    col_max[col_max == 0] = 1  # an all-zero column maps to 0 uS under any scale
    np.maximum(col_max, _F32(PEAK_FLOOR), out=col_max)  # g_max / a denormal peak would be inf
    us_per_weight = (g_max / col_max).astype(_F32)
    # sigma_P as a polynomial in g_T itself (uS), so no g_T/g_max array is needed.
    prog_scale = noise.prog_noise_scale * g_max / _PROG_COEFF_G_MAX_US
    c0, c1, c2 = (_F32(c * prog_scale / g_max**i) for i, c in enumerate(noise.prog_coeff))
    # mu and sigma_nu as linear functions of ln g_T (uS) rather than ln(g_T/g_max).
    log_g_max = np.log(g_max)
    mu_a, mu_b = _F32(-0.0155), _F32(0.0244 + 0.0155 * log_g_max)
    sd_a, sd_b = _F32(-0.0125), _F32(-0.0059 + 0.0125 * log_g_max)
    normal = _normal_table()

    g_programmed = np.empty_like(weights)
    drift_nu = np.empty_like(weights)
    read_noise_q = np.empty_like(weights)

    def block(rows: slice) -> tuple[float, float]:
        w = weights[rows]
        # One look-up for the block's three normals: programming noise of the
        # device holding w and of the device at 0 uS, and the drift exponent's.
        z_held, z_zero, z_nu = _draw(rng, normal, (3, *w.shape))
        g_t = np.abs(w)
        g_t *= us_per_weight
        sigma = g_t * c2
        sigma += c1
        sigma *= g_t
        sigma += c0
        sigma *= z_held
        sigma += g_t
        held = np.maximum(sigma, _F32(0), out=sigma)  # the device holding the weight
        zero_device = np.maximum(z_zero, _F32(0), out=z_zero)
        zero_device *= c0
        g_p = np.subtract(held, zero_device, out=g_programmed[rows])  # may flip a small weight
        # Give g_P the sign of w by toggling the IEEE sign bit: 4x faster than copysign twice.
        np.bitwise_xor(g_p.view(np.int32), w.view(np.int32) & _SIGN_BIT, out=g_p.view(np.int32))

        with np.errstate(divide="ignore"):
            log_g = np.log(g_t, out=g_t)  # ln 0 = -inf clips to the limits below, as aihwkit's 1e-7 floor
            mu = log_g * mu_a
            mu += mu_b
            np.clip(mu, _F32(0.049), _F32(0.1), out=mu)
            log_g *= sd_a
            log_g += sd_b
            np.clip(log_g, _F32(0.008), _F32(0.045), out=log_g)
        nu = np.multiply(z_nu, log_g, out=drift_nu[rows])
        nu += mu
        np.abs(nu, out=nu)
        if noise.drift_scale != 1:
            nu *= _F32(noise.drift_scale)

        q = np.abs(g_p, out=read_noise_q[rows])
        total, largest = float(q.sum()), float(q.max(initial=0))
        with np.errstate(divide="ignore"):
            np.log(q, out=q)
        q *= _F32(-0.65)
        np.exp(q, out=q)  # |g_P|^-0.65; the array's largest |g_P| is known only after all blocks
        return total, largest

    sums = [block(rows) for rows in _row_blocks(weights.shape)]
    # 1/f amplitude (aihwkit apply_drift_noise_to_conductance):
    #   q_s = min(0.2, 0.0088 / (|g_P| / g_ref)^0.65).
    # aihwkit converts the programmed weights to conductances a second time
    # before drifting them, so its g_ref is the array's largest |g_P|, not g_max
    # (floored as its converter floors max|w| at 1e-7).
    g_ref = max(max((largest for _, largest in sums), default=0.0), 1e-7 * g_max)
    read_noise_q *= _F32(0.0088 * g_ref**0.65)
    np.minimum(read_noise_q, _F32(0.2), out=read_noise_q)
    return ProgrammedArray(
        weights=weights,
        us_per_weight=us_per_weight,
        g_programmed_us=g_programmed,
        drift_nu=drift_nu,
        read_noise_q=read_noise_q,
        g_reference_mean_us=sum(total for total, _ in sums) / max(weights.size, 1),
    )


def read_weights(
    programmed: ProgrammedArray,
    noise: PCMNoise,
    t_inference_s: float,
    rng: np.random.Generator,
    *,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """The weights the array computes with, t_inference_s after programming ends.

    Drift and 1/f read noise (aihwkit apply_drift_noise_to_conductance), with
    t = t_inference_s + t0:
        g(t) = g_P (t/t0)^-nu,
        g_R = max(0, g(t) (1 + read_noise_scale q_s sqrt(ln((t + t_read)/(2 t_read))) N)).
    Like aihwkit, which turns the programmed weights into a fresh device pair
    before drifting them, the net g+ - g- drifts on one device: the device at
    0 uS neither drifts nor adds read noise.
    Global drift compensation: aihwkit reads the array with one-hot inputs
    (every conductance once) right after programming and again at t, and
    scales the outputs by the ratio of the mean absolute readouts:
        alpha = mean|g_P| / mean|g_R|,
    which is what we apply to the whole array. The result is float32
    W[rows_in, cols_out] in weight units: alpha g_R / g_max * max|w| of the column,
    written into `out` when given: any float32 array of that shape, even one of
    programmed's own, which it then overwrites (reusing memory spares the
    kernel zeroing fresh pages, a fifth of a draw's time).
    """
    if t_inference_s < 0:
        raise ValueError(f"t_inference_s must be >= 0, got {t_inference_s}")
    t_s = t_inference_s + noise.t0_s
    log_decay = _F32(-np.log(t_s / noise.t0_s))
    read_sigma = noise.read_noise_scale * np.sqrt(np.log((t_s + noise.t_read_s) / (2 * noise.t_read_s)))
    read_normal = _normal_table() * _F32(read_sigma)
    p = programmed
    weight_per_us = (1 / p.us_per_weight).astype(_F32)
    weights = np.empty_like(p.g_programmed_us) if out is None else out

    def block(rows: slice) -> float:
        decay = np.multiply(p.drift_nu[rows], log_decay)
        np.exp(decay, out=decay)
        read = _draw(rng, read_normal, decay.shape)
        read *= p.read_noise_q[rows]
        read += 1
        np.maximum(read, _F32(0), out=read)
        # Every input of these rows is read before their output is written: `out` may alias one.
        g = np.multiply(p.g_programmed_us[rows], decay, out=weights[rows])
        g *= read
        total = float(np.abs(g, out=read).sum())
        g *= weight_per_us
        return total

    g_sum = sum(block(rows) for rows in _row_blocks(weights.shape))
    if noise.drift_compensation and g_sum > 0:
        weights *= _F32(p.g_reference_mean_us * weights.size / g_sum)
    return weights


def noisy_weights(
    weights: np.ndarray,
    noise: PCMNoise,
    t_inference_s: float,
    rng: np.random.Generator,
    *,
    clip_sigma: float | None = None,
) -> np.ndarray:
    """One Monte-Carlo draw: program W, then read it at t_inference_s (float32, same shape)."""
    programmed = program_weights(weights, noise, rng, clip_sigma=clip_sigma)
    return read_weights(programmed, noise, t_inference_s, rng, out=programmed.g_programmed_us)


@functools.cache
def _normal_table() -> np.ndarray:
    """N(0, 1) quantiles at the midpoints of 2^16 equal-probability bins (variance 1 - 1e-5)."""
    return ndtri((np.arange(1 << 16) + 0.5) / (1 << 16)).astype(_F32)


def _draw(rng: np.random.Generator, table: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Draws of a distribution given by its 2^16 quantiles (inverse CDF), 16 random bits each.

    Generator.standard_normal costs ~10 ns per float32 here (its ziggurat
    draws one sample at a time); this costs ~2 ns, and a table scaled once per
    call saves a multiply per element. The normal table reaches 4.3 sigma.
    """
    size = int(np.prod(shape))
    bits = rng.bit_generator.random_raw(-(-size // 4)).view(np.uint16)[:size]
    # mode="wrap" skips numpy's bounds check; 16-bit indices cannot leave the table.
    return np.take(table, bits, mode="wrap").reshape(shape)


def _row_blocks(shape: tuple[int, int]) -> list[slice]:
    """Whole rows, about _BLOCK_ELEMENTS at a time."""
    rows, cols = shape
    step = max(1, _BLOCK_ELEMENTS // max(cols, 1))
    return [slice(start, min(start + step, rows)) for start in range(0, rows, step)]

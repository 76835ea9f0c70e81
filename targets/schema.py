"""Target description schema: TOML tables turned into frozen dataclasses.

A target is data, never code: passes read capabilities from these fields and
never branch on a target's name. `load_target_file` validates every field and
reports the first bad one by its dotted path.
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path

from hetmap.errors import HetmapError


@dataclass(frozen=True)
class PCMNoise:
    """PCM device statistics, parameterised as aihwkit's PCMLikeNoiseModel.

    Programming noise is a polynomial in g/g_max (coefficients c0, c1, c2 in
    microsiemens), read noise is 1/f, drift is g(t) = g0 (t/t0)^-nu with
    per-device nu. The scales multiply each effect (0 switches it off).
    """

    g_max_us: float = 25.0
    prog_coeff: tuple[float, float, float] = (0.26348, 1.9650, -1.1731)
    prog_noise_scale: float = 1.0
    read_noise_scale: float = 1.0
    drift_scale: float = 1.0
    t0_s: float = 20.0
    t_read_s: float = 250e-9
    drift_compensation: bool = True


@dataclass(frozen=True)
class AnalogTiles:
    """Identical crossbar tiles: geometry, converters, energy and latency."""

    rows: int
    cols: int
    count: int
    dac_bits: int
    adc_bits: int
    energy_per_mac_pj: float
    energy_per_dac_pj: float
    energy_per_adc_pj: float
    mvm_latency_ns: float
    # Digital periphery per ADC output: scale it, add it to the other row
    # blocks' partial sums, and (once per output) bias and activation.
    energy_per_output_pj: float = 0.0
    # False: every column ADC of a tile converts on every pass, whatever the
    # layer holds there; true: only the columns holding weights.
    adc_gated: bool = False
    # SRAM-cell arrays can be rewritten between layers: a mapping whose analog
    # layers exceed the tiles then loads their weights (`weight_bits` each)
    # every inference, instead of being refused.
    reloadable: bool = False
    weight_bits: int = 8
    # ADC full scale in normalised units (inputs scaled to [-1, 1], weights to
    # [-1, 1] per column): aihwkit's out_bound. Outputs beyond it saturate.
    adc_bound: float = 12.0
    noise: PCMNoise = field(default_factory=PCMNoise)


@dataclass(frozen=True)
class DigitalUnit:
    """A digital MAC engine at one weight bit width."""

    bits: int
    energy_per_mac_pj: float
    macs_per_cycle: int
    energy_per_output_pj: float = 0.0  # requantise, bias, activation of one output


@dataclass(frozen=True)
class MemorySystem:
    """On-chip SRAM beside the compute units and off-chip DRAM behind it; 0 leaves a term out.

    Digital units read their weights from `weight_sram_bytes` of on-chip
    memory per inference (from DRAM beyond it); analog tiles hold theirs.
    Both read their input and write their output activations in SRAM.
    """

    weight_sram_bytes: int = 0  # 0: every digital weight fits on chip
    weight_sram_pj_per_byte: float = 0.0  # one weight byte read on chip
    activation_sram_pj_per_byte: float = 0.0  # one activation byte read or written on chip
    dram_pj_per_byte: float = 0.0
    sram_bytes_per_cycle: float = 0.0  # bandwidth at the digital clock; 0: not a bound
    dram_bytes_per_cycle: float = 0.0


@dataclass(frozen=True)
class Target:
    """A heterogeneous accelerator: analog tiles beside digital units."""

    name: str
    description: str
    clock_mhz: float
    analog: AnalogTiles
    digital: tuple[DigitalUnit, ...]
    memory: MemorySystem = field(default_factory=MemorySystem)

    @property
    def digital_bits(self) -> tuple[int, ...]:
        return tuple(sorted((unit.bits for unit in self.digital), reverse=True))

    def digital_unit(self, bits: int) -> DigitalUnit:
        for unit in self.digital:
            if unit.bits == bits:
                return unit
        raise HetmapError(f"target '{self.name}' has no digital unit for INT{bits}")


_POSITIVE_FIELDS = {
    "rows",
    "cols",
    "count",
    "dac_bits",
    "adc_bits",
    "bits",
    "macs_per_cycle",
    "weight_bits",
    "clock_mhz",
    "mvm_latency_ns",
    "adc_bound",
    "g_max_us",
    "t0_s",
    "t_read_s",
}
_NON_NEGATIVE_FIELDS = {
    "energy_per_mac_pj",
    "energy_per_dac_pj",
    "energy_per_adc_pj",
    "energy_per_output_pj",
    "prog_noise_scale",
    "read_noise_scale",
    "drift_scale",
    "weight_sram_bytes",
    "weight_sram_pj_per_byte",
    "activation_sram_pj_per_byte",
    "dram_pj_per_byte",
    "sram_bytes_per_cycle",
    "dram_bytes_per_cycle",
}


# Widths the simulator can represent: a converter needs a level each side of zero (its step divides by
# 2^bits - 2), and digital weights are stored as INT8 codes.
_BIT_RANGES = {"dac_bits": (2, None), "adc_bits": (2, None), "bits": (2, 8)}


class _FieldError(Exception):
    def __init__(self, path: str, message: str):
        super().__init__(f"field '{path}' {message}")


def _convert(value, annotation, path: str):
    origin = typing.get_origin(annotation)
    if dataclasses.is_dataclass(annotation):
        if not isinstance(value, dict):
            raise _FieldError(path, f"must be a table, got {value!r}")
        return _build(annotation, value, path)
    if origin is tuple:
        args = typing.get_args(annotation)
        if not isinstance(value, list):
            raise _FieldError(path, f"must be a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            items = [(args[0], f"{path}[{i}]") for i in range(len(value))]
        else:
            if len(value) != len(args):
                raise _FieldError(path, f"must have {len(args)} entries, got {len(value)}")
            items = [(arg, f"{path}[{i}]") for i, arg in enumerate(args)]
        return tuple(_convert(v, a, p) for v, (a, p) in zip(value, items))
    if annotation is bool:
        if not isinstance(value, bool):
            raise _FieldError(path, f"must be true or false, got {value!r}")
        return value
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _FieldError(path, f"must be an integer, got {value!r}")
        return value
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _FieldError(path, f"must be a number, got {value!r}")
        if not math.isfinite(value):
            raise _FieldError(path, f"must be a finite number, got {value!r}")
        return float(value)
    if annotation is str:
        if not isinstance(value, str):
            raise _FieldError(path, f"must be a string, got {value!r}")
        return value
    raise TypeError(f"unsupported schema annotation {annotation!r}")  # schema bug


def _build(cls, table: dict, prefix: str):
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(table) - set(fields))
    if unknown:
        where = f"{prefix}.{unknown[0]}" if prefix else unknown[0]
        raise _FieldError(where, f"is not a known field (known: {', '.join(fields)})")
    values = {}
    for name, f in fields.items():
        path = f"{prefix}.{name}" if prefix else name
        if name not in table:
            has_default = f.default is not dataclasses.MISSING or (f.default_factory is not dataclasses.MISSING)
            if not has_default:
                raise _FieldError(path, "is missing")
            continue
        value = _convert(table[name], hints[name], path)
        if name in _POSITIVE_FIELDS and value <= 0:
            raise _FieldError(path, f"must be positive, got {value!r}")
        if name in _NON_NEGATIVE_FIELDS and value < 0:
            raise _FieldError(path, f"must not be negative, got {value!r}")
        low, high = _BIT_RANGES.get(name, (None, None))
        if (low is not None and value < low) or (high is not None and value > high):
            span = f"from {low} to {high}" if high is not None else f"at least {low}"
            raise _FieldError(path, f"must be {span}, got {value!r}")
        values[name] = value
    return cls(**values)


def target_from_table(table: dict, source: str) -> Target:
    """Validate a parsed TOML table as a Target; errors name `source` and the field."""
    try:
        target = _build(Target, table, "")
    except _FieldError as error:
        raise HetmapError(f"target file '{source}': {error}") from None
    bits = [unit.bits for unit in target.digital]
    if len(set(bits)) != len(bits):
        raise HetmapError(f"target file '{source}': field 'digital' lists a bit width twice")
    if not bits:
        raise HetmapError(f"target file '{source}': field 'digital' needs at least one unit")
    return target


def load_target_file(path: Path) -> Target:
    """Read and validate one target TOML file."""
    try:
        table = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise HetmapError(f"target file '{path}' does not exist") from None
    except OSError as error:  # a folder, no permission
        raise HetmapError(f"target file '{path}' cannot be read ({error.strerror})") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise HetmapError(f"target file '{path}' is not valid TOML: {error}") from None
    return target_from_table(table, str(path))


__all__ = ["AnalogTiles", "DigitalUnit", "MemorySystem", "PCMNoise", "Target", "load_target_file"]

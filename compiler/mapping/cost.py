"""Energy and latency of a layer under one option, from the target's figures.

One model serves the solver, the schedule and the reports, so their numbers
agree. Analog: every MAC costs the array energy; each pass of an input
vector converts its inputs once per column block (DACs) and its outputs once
per row block (ADCs); a pass takes one MVM latency, all tiles of the layer
working in parallel. A grouped convolution makes one pass per group, each
reading only that group's columns. Digital INTk: MACs times the unit's
energy, at its MACs per cycle.
"""

from __future__ import annotations

from dataclasses import dataclass

from hetmap.mapping.mapping import ANALOG, option_bits
from hetmap.targets import Target


@dataclass(frozen=True)
class LayerCost:
    energy_pj: float
    latency_ns: float


def input_vectors(layer) -> int:
    """Matrix-vector products per inference: output pixels, tokens or rows."""
    return max(1, round(layer.macs / (layer.rows * layer.cols)))


def layer_cost(layer, option: str, target: Target) -> LayerCost:
    """Cost of one inference of `layer` (a partition MappableLayer) under `option`."""
    if option == ANALOG:
        analog = target.analog
        passes = input_vectors(layer) * layer.groups
        dac_conversions = passes * layer.rows * layer.col_blocks
        adc_conversions = input_vectors(layer) * layer.cols * layer.row_blocks
        energy = (
            layer.macs * analog.energy_per_mac_pj
            + dac_conversions * analog.energy_per_dac_pj
            + adc_conversions * analog.energy_per_adc_pj
        )
        return LayerCost(energy, passes * analog.mvm_latency_ns)
    unit = target.digital_unit(option_bits(option))
    cycles = layer.macs / unit.macs_per_cycle
    return LayerCost(layer.macs * unit.energy_per_mac_pj, cycles * 1e3 / target.clock_mhz)

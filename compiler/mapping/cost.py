"""Energy and latency of a layer under one option, from the target's figures.

One model serves the solver, the schedule and the reports, so their numbers
agree. Energy terms, pJ per inference at batch 1:
- compute: MACs x the digital unit's or the analog array's energy per MAC.
- conversions (analog): one DAC conversion per input row per pass of an
  input vector through each column block; per pass, one ADC conversion per
  column of every tile the layer holds (per column holding weights when the
  target gates its ADCs).
- weight movement: a digital layer reads its weights every inference from
  the on-chip weight SRAM, or from DRAM for what exceeds it (`mapping_costs`
  fills the SRAM in graph order). Analog tiles hold their weights, unless a
  reloadable target's tiles are too few for the mapping: then every analog
  layer loads its weights (`weight_bits` each) every inference too.
- activation movement: the input read and the output written in on-chip
  SRAM; analog row blocks also write and read their partial sums.
- periphery: per output of a digital unit (requantise, bias, activation);
  per ADC output of a tile (scale, partial-sum accumulation, bias, activation).
Latency: digital, the larger of its compute cycles and its memory cycles at
the clock; analog, one MVM time per pass of an input vector, every tile of
the layer in parallel, plus the time to load its weights when it reloads.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from hetmap.mapping.mapping import ANALOG, option_bits
from hetmap.targets import Target

ACTIVATION_BYTES = 1  # INT8 activations between layers; analog converter codes are 8 bits or fewer
PARTIAL_SUM_BYTES = 2  # a row block's partial sum on its way to the sum (assumption: 16-bit)


@dataclass(frozen=True)
class LayerCost:
    compute_pj: float
    conversions_pj: float
    weight_movement_pj: float
    activation_movement_pj: float
    periphery_pj: float
    latency_ns: float  # one inference through this layer

    @property
    def energy_pj(self) -> float:
        return (
            self.compute_pj
            + self.conversions_pj
            + self.weight_movement_pj
            + self.activation_movement_pj
            + self.periphery_pj
        )

    def breakdown(self) -> dict[str, float]:
        """The energy terms by name, pJ."""
        return {name.removesuffix("_pj"): value for name, value in asdict(self).items() if name.endswith("_pj")}


def input_vectors(layer) -> int:
    """Matrix-vector products per inference: output pixels, tokens or rows."""
    return max(1, round(layer.macs / (layer.rows * layer.cols)))


def weight_bytes(layer, option: str, target: Target, reloading: bool = False) -> float:
    """Weight bytes a layer fetches per inference: digital always, analog only when its tiles reload."""
    if option != ANALOG:
        return layer.weight_count * option_bits(option) / 8
    return layer.weight_count * target.analog.weight_bits / 8 if reloading else 0.0


def layer_cost(layer, option: str, target: Target, dram_bytes: float = 0.0, reloading: bool = False) -> LayerCost:
    """Cost of one inference of `layer` (a partition MappableLayer) under `option`.

    `dram_bytes`: how many of the weight bytes it fetches come from DRAM
    rather than the on-chip weight SRAM; `reloading`: analog tiles are
    rewritten every inference (see `mapping_costs`).
    """
    memory = target.memory
    fetched = weight_bytes(layer, option, target, reloading)
    weight_movement = (fetched - dram_bytes) * memory.weight_sram_pj_per_byte + dram_bytes * memory.dram_pj_per_byte
    activation_bytes = (layer.input_elements + layer.output_elements) * ACTIVATION_BYTES
    if option == ANALOG:
        analog = target.analog
        passes = input_vectors(layer) * layer.groups
        dac_conversions = passes * layer.rows * layer.col_blocks
        outputs = input_vectors(layer) * layer.cols * layer.row_blocks  # partial outputs of the row blocks
        adc_conversions = outputs if analog.adc_gated else passes * layer.tiles * analog.cols
        partial_sum_bytes = 2 * (layer.row_blocks - 1) * layer.output_elements * PARTIAL_SUM_BYTES  # written, read
        load_cycles = _memory_cycles(fetched - dram_bytes, dram_bytes, target)
        return LayerCost(
            compute_pj=layer.macs * analog.energy_per_mac_pj,
            conversions_pj=dac_conversions * analog.energy_per_dac_pj + adc_conversions * analog.energy_per_adc_pj,
            weight_movement_pj=weight_movement,
            activation_movement_pj=(activation_bytes + partial_sum_bytes) * memory.activation_sram_pj_per_byte,
            periphery_pj=outputs * analog.energy_per_output_pj,
            latency_ns=passes * analog.mvm_latency_ns + load_cycles * 1e3 / target.clock_mhz,
        )
    unit = target.digital_unit(option_bits(option))
    cycles = max(
        layer.macs / unit.macs_per_cycle, _memory_cycles(fetched - dram_bytes + activation_bytes, dram_bytes, target)
    )
    return LayerCost(
        compute_pj=layer.macs * unit.energy_per_mac_pj,
        conversions_pj=0.0,
        weight_movement_pj=weight_movement,
        activation_movement_pj=activation_bytes * memory.activation_sram_pj_per_byte,
        periphery_pj=layer.output_elements * unit.energy_per_output_pj,
        latency_ns=cycles * 1e3 / target.clock_mhz,
    )


def _memory_cycles(sram_bytes: float, dram_bytes: float, target: Target) -> float:
    """Cycles the memories need for this traffic (a bandwidth of 0 is no bound)."""
    memory = target.memory
    sram = sram_bytes / memory.sram_bytes_per_cycle if memory.sram_bytes_per_cycle else 0.0
    dram = dram_bytes / memory.dram_bytes_per_cycle if memory.dram_bytes_per_cycle else 0.0
    return max(sram, dram)


def reloads(layers, mapping: dict[str, str], target: Target) -> bool:
    """Whether the mapping's analog layers exceed a reloadable target's tiles, so their weights load every inference."""
    tiles = sum(layer.tiles for layer in layers if mapping[layer.name] == ANALOG)
    return target.analog.reloadable and tiles > target.analog.count


def dram_weight_bytes(layers, mapping: dict[str, str], target: Target, reloading: bool = False) -> dict[str, float]:
    """Per layer, the fetched weight bytes beyond the on-chip weight SRAM, which fills in graph order.

    A weight SRAM of 0 bytes means every weight fits on chip.
    """
    capacity = target.memory.weight_sram_bytes
    spilled, used = {}, 0.0
    for layer in layers:
        size = weight_bytes(layer, mapping[layer.name], target, reloading)
        spilled[layer.name] = max(0.0, used + size - capacity) - max(0.0, used - capacity) if capacity else 0.0
        used += size
    return spilled


def dram_surcharge_pj_per_byte(target: Target) -> float:
    """What a weight byte costs more from DRAM than from SRAM (0 when every weight fits on chip)."""
    memory = target.memory
    return memory.dram_pj_per_byte - memory.weight_sram_pj_per_byte if memory.weight_sram_bytes else 0.0


def mapping_costs(layers, mapping: dict[str, str], target: Target) -> dict[str, LayerCost]:
    """Every layer's cost under `mapping`: weights beyond the on-chip SRAM from DRAM, reloaded tiles loaded."""
    reloading = reloads(layers, mapping, target)
    spilled = dram_weight_bytes(layers, mapping, target, reloading)
    return {
        layer.name: layer_cost(layer, mapping[layer.name], target, spilled[layer.name], reloading) for layer in layers
    }


def mapping_energy_pj(layers, mapping: dict[str, str], target: Target) -> float:
    """Energy of one inference under `mapping`, pJ."""
    return sum(cost.energy_pj for cost in mapping_costs(layers, mapping, target).values())

"""The cost model, one term at a time, on one small in-line layer with hand-computed energies."""

import dataclasses

import numpy as np
import pytest

from hetmap.mapping.cost import layer_cost, mapping_costs, mapping_energy_pj
from hetmap.mapping.solver import Problem, solve
from hetmap.passes.partition import MappableLayer
from hetmap.passes.schedule import pipeline_interval_ns, tile_utilisation
from hetmap.targets import AnalogTiles, DigitalUnit, MemorySystem, Target

# A 3x3 convolution, 8 -> 16 channels, on a 4x4 output: rows 72, cols 16, 16 input vectors.
CONV = MappableLayer(
    name="conv",
    op_type="Conv",
    weight="w",
    weight_operand=1,
    weight_transposed=False,
    activation_rank=4,
    rows=72,
    cols=16,
    groups=1,
    weight_count=72 * 16,
    macs=16 * 72 * 16,
    block_rows=36,
    row_blocks=2,
    col_blocks=1,
    tiles=2,
    input_elements=8 * 6 * 6,
    output_elements=16 * 4 * 4,
)
TARGET = Target(
    name="hand",
    description="round numbers",
    clock_mhz=1000.0,
    analog=AnalogTiles(
        rows=36,
        cols=32,
        count=4,
        dac_bits=8,
        adc_bits=8,
        energy_per_mac_pj=0.01,
        energy_per_dac_pj=1.0,
        energy_per_adc_pj=2.0,
        mvm_latency_ns=100.0,
        energy_per_output_pj=0.5,
    ),
    digital=(
        DigitalUnit(bits=8, energy_per_mac_pj=0.2, macs_per_cycle=64, energy_per_output_pj=3.0),
        DigitalUnit(bits=4, energy_per_mac_pj=0.1, macs_per_cycle=128, energy_per_output_pj=3.0),
    ),
    memory=MemorySystem(
        weight_sram_bytes=4096,
        weight_sram_pj_per_byte=10.0,
        activation_sram_pj_per_byte=2.0,
        dram_pj_per_byte=100.0,
        sram_bytes_per_cycle=8.0,
        dram_bytes_per_cycle=1.0,
    ),
)


def test_compute_is_macs_times_the_energy_per_mac():
    assert layer_cost(CONV, "int8", TARGET).compute_pj == pytest.approx(18432 * 0.2)
    assert layer_cost(CONV, "int4", TARGET).compute_pj == pytest.approx(18432 * 0.1)
    assert layer_cost(CONV, "analog", TARGET).compute_pj == pytest.approx(18432 * 0.01)


def test_conversions_dac_per_input_row_and_ungated_adc_per_tile_column():
    # 16 passes x 72 rows x 1 column block DAC conversions; 16 passes x 2 tiles x 32 tile columns ADC conversions
    assert layer_cost(CONV, "analog", TARGET).conversions_pj == pytest.approx(16 * 72 * 1.0 + 16 * 2 * 32 * 2.0)
    assert layer_cost(CONV, "int8", TARGET).conversions_pj == 0


def test_gated_adcs_convert_only_the_columns_holding_weights():
    gated = dataclasses.replace(TARGET, analog=dataclasses.replace(TARGET.analog, adc_gated=True))
    assert layer_cost(CONV, "analog", gated).conversions_pj == pytest.approx(16 * 72 * 1.0 + 16 * 16 * 2 * 2.0)


def test_weight_movement_reads_digital_weights_from_sram_and_dram_beyond_it():
    assert layer_cost(CONV, "int8", TARGET).weight_movement_pj == pytest.approx(1152 * 10.0)
    assert layer_cost(CONV, "int4", TARGET).weight_movement_pj == pytest.approx(576 * 10.0)
    assert layer_cost(CONV, "int8", TARGET, dram_bytes=100).weight_movement_pj == pytest.approx(
        1052 * 10.0 + 100 * 100.0
    )
    assert layer_cost(CONV, "analog", TARGET).weight_movement_pj == 0  # the tiles hold them


def test_activation_movement_reads_the_input_writes_the_output_and_moves_partial_sums():
    assert layer_cost(CONV, "int8", TARGET).activation_movement_pj == pytest.approx((288 + 256) * 2.0)
    # two row blocks: one partial sum per output written and read, 2 bytes each
    assert layer_cost(CONV, "analog", TARGET).activation_movement_pj == pytest.approx((288 + 256 + 2 * 256 * 2) * 2.0)


def test_periphery_per_digital_output_and_per_adc_output():
    assert layer_cost(CONV, "int8", TARGET).periphery_pj == pytest.approx(256 * 3.0)
    assert layer_cost(CONV, "analog", TARGET).periphery_pj == pytest.approx(16 * 16 * 2 * 0.5)


def test_latency_digital_by_compute_or_memory_analog_per_pass():
    assert layer_cost(CONV, "int8", TARGET).latency_ns == pytest.approx(max(18432 / 64, (1152 + 544) / 8) * 1.0)
    assert layer_cost(CONV, "analog", TARGET).latency_ns == pytest.approx(16 * 100.0)


def test_weights_beyond_the_sram_come_from_dram_in_graph_order():
    layers = [dataclasses.replace(CONV, name=f"conv{i}") for i in range(5)]  # 5 x 1152 bytes at INT8 > 4096
    costs = mapping_costs(layers, {l.name: "int8" for l in layers}, TARGET)
    dram = [(c.weight_movement_pj - 1152 * 10.0) / (100.0 - 10.0) for c in costs.values()]
    assert dram == pytest.approx([0, 0, 0, 1152 * 4 - 4096, 1152])


def test_a_reloadable_target_loads_analog_weights_only_when_its_tiles_are_too_few():
    reloadable = dataclasses.replace(TARGET, analog=dataclasses.replace(TARGET.analog, reloadable=True, weight_bits=2))
    three = [dataclasses.replace(CONV, name=f"conv{i}") for i in range(3)]
    two = three[:2]
    fits = mapping_costs(two, {l.name: "analog" for l in two}, reloadable)  # 4 tiles of 4: resident
    assert all(c.weight_movement_pj == 0 for c in fits.values())
    over = mapping_costs(three, {l.name: "analog" for l in three}, reloadable)  # 6 tiles of 4: reloaded
    assert all(c.weight_movement_pj == pytest.approx(1152 * 2 / 8 * 10.0) for c in over.values())


def test_the_solver_pays_the_dram_surcharge_of_spilled_weights():
    """Two layers, INT8 (1152 B each, cheap compute) or analog (no weights to fetch): a 1500 B SRAM holds one."""
    layers = [dataclasses.replace(CONV, name=f"conv{i}") for i in range(2)]
    energy = np.array([[1000.0, 900.0]] * 2)  # [analog, int8] without spilling: int8 is cheaper
    problem = Problem(
        ["conv0", "conv1"],
        ["analog", "int8"],
        np.zeros((2, 2)),
        energy,
        np.ones(2),
        np.ones(2),
        4,
        np.ones((2, 2), bool),
        weight_bytes=np.array([[0, 1152.0]] * 2),
        weight_sram_bytes=1500,
        dram_surcharge_pj_per_byte=90.0,
    )
    chosen = solve(problem, budget=1.0)
    assert sorted(chosen.values()) == ["analog", "int8"]  # both int8 would spill 804 B: +72 nJ
    small = dataclasses.replace(TARGET, memory=dataclasses.replace(TARGET.memory, weight_sram_bytes=1500))
    both_int8 = mapping_energy_pj(layers, {"conv0": "int8", "conv1": "int8"}, small)
    one_int8 = mapping_energy_pj(layers, {"conv0": "int8", "conv1": "analog"}, small)
    assert both_int8 - 2 * layer_cost(CONV, "int8", small).energy_pj == pytest.approx(804 * 90.0)
    assert one_int8 == pytest.approx(
        layer_cost(CONV, "int8", small).energy_pj + layer_cost(CONV, "analog", small).energy_pj
    )


def test_tile_utilisation_is_cells_holding_weights_over_cells_held():
    assert tile_utilisation(CONV, TARGET) == pytest.approx(1152 / (2 * 36 * 32))


def test_a_pipelined_stream_runs_at_the_busiest_units_pace():
    """Analog layers each own their tiles; the layers on one digital unit take turns."""
    costs = {"a": ("analog", 500.0), "b": ("analog", 300.0), "c": ("int8", 200.0), "d": ("int8", 250.0)}
    assert pipeline_interval_ns(costs) == 500.0
    assert pipeline_interval_ns({**costs, "e": ("int8", 100.0)}) == 550.0

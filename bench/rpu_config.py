"""aihwkit's TorchInferenceRPUConfig set up like a target: the reference hetmap is checked against.

aihwkit's torch tile with hetmap's semantics (converters, PCM noise model,
tile size and row blocks, static input range). Fine-tuning no longer uses
it (hetmap.train.analog is its own op); bench/aihwkit_reference.py checks
the simulator against it and bench/aihwkit_tiles.py times the old training
path. aihwkit imports lazily, on first use.
"""

from __future__ import annotations

import functools

from hetmap.targets import Target


def rpu_config(target: Target, input_range: float = 1.0, block_rows: int | None = None):
    """TorchInferenceRPUConfig with the target's devices and converters (aihwkit's names for hetmap's semantics).

    block_rows: split the rows as hetmap's partition does (consecutive blocks
    of block_rows, e.g. whole channels), instead of aihwkit's equal parts of
    at most tile-rows rows.
    """
    from aihwkit.inference import GlobalDriftCompensation, PCMLikeNoiseModel
    from aihwkit.simulator.configs import TorchInferenceRPUConfig
    from aihwkit.simulator.parameters.enums import BoundManagementType, NoiseManagementType

    analog, noise = target.analog, target.analog.noise
    config = TorchInferenceRPUConfig()
    config.noise_model = PCMLikeNoiseModel(
        prog_coeff=list(noise.prog_coeff),
        g_max=noise.g_max_us,
        t_read=noise.t_read_s,
        t_0=noise.t0_s,
        prog_noise_scale=noise.prog_noise_scale,
        read_noise_scale=noise.read_noise_scale,
        drift_scale=noise.drift_scale,
    )
    # The coefficients were fitted at 25 uS (hetmap.sim.noise scales them the same way). aihwkit 1.1.0
    # drops a prog_coeff_g_max_reference passed beside prog_coeff, so it is set afterwards.
    config.noise_model.prog_coeff_g_max_reference = 25.0
    config.drift_compensation = GlobalDriftCompensation() if noise.drift_compensation else None
    forward = config.forward
    forward.inp_bound = 1.0
    forward.inp_res = 1 / (2**analog.dac_bits - 2)
    forward.out_bound = analog.adc_bound
    forward.out_res = 1 / (2**analog.adc_bits - 2)
    forward.inp_noise = forward.out_noise = forward.w_noise = 0.0
    forward.noise_management = NoiseManagementType.NONE
    forward.bound_management = BoundManagementType.NONE
    config.mapping.max_input_size = block_rows or analog.rows
    config.mapping.max_output_size = analog.cols
    config.mapping.weight_scaling_omega = 1.0
    config.mapping.weight_scaling_columnwise = True
    config.mapping.learn_out_scaling = False
    config.mapping.digital_bias = True
    ranges = config.pre_post.input_range
    ranges.enable = True
    ranges.learn_input_range = False
    ranges.init_from_data = 0
    ranges.init_value = float(input_range)
    if block_rows is not None:
        config.tile_array_class = _consecutive_tile_array()
    return config


@functools.cache
def _consecutive_tile_array():
    from aihwkit.simulator.tiles.array import TileModuleArray

    class ConsecutiveTileArray(TileModuleArray):
        """Row (and column) blocks of the maximum size from the top, the last one shorter: hetmap's partition."""

        def get_split_sizes(self, size: int, split_max_size: int) -> list[int]:
            if split_max_size <= 0:
                return [size]
            return [min(split_max_size, size - start) for start in range(0, size, split_max_size)]

    return ConsecutiveTileArray

"""One chip's draws for a simulation graph: every analog tile programmed, read after drift, baked in.

The graph itself is hetmap.sim.simulation's; this holds the analog blocks
whose initializers a Monte-Carlo draw replaces, and the seeded generators
that make a draw reproducible.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np
import onnx_ir as ir

from hetmap.sim import noise as pcm
from hetmap.sim.blocks import AnalogBlock, tile_compensation
from hetmap.targets import Target


@dataclass
class Simulation:
    """A simulation graph plus the analog blocks whose values each Monte-Carlo draw replaces."""

    model: ir.Model
    target: Target
    blocks: list[AnalogBlock] = field(default_factory=list)

    def drawn_names(self) -> set[str]:
        """Initializers that change with every draw (fed to onnxruntime rather than baked)."""
        return {name for block in self.blocks for name in (block.weight.name, block.output_scale.name)}

    def nominal(self) -> dict[str, np.ndarray]:
        """The drawn initializers without device noise (converters only)."""
        return {
            name: value.const_value.numpy()
            for block in self.blocks
            for name, value in ((block.weight.name, block.weight), (block.output_scale.name, block.output_scale))
        }

    def program(self, rng: np.random.Generator) -> list[list[pcm.ProgrammedArray]]:
        """Program every tile once (programming noise and drift exponents)."""
        noise = self.target.analog.noise
        return [[pcm.program_weights(b.matrix[:, tile], noise, rng) for tile in b.tiles()] for b in self.blocks]

    def read(self, programmed, t_inference_s: float, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """Drawn initializers as the tiles compute t_inference_s after programming.

        The ADC sees the drifted (shrunk) conductances; global drift
        compensation rescales each tile's outputs digitally after it, as in
        aihwkit, so it enters through the output scale, not the weights.
        """
        values = {}
        for block, arrays in zip(self.blocks, programmed):
            self._read_block(values, block, arrays, t_inference_s, rng, reuse=False)
        return values

    def draw(
        self, program_rng: np.random.Generator, t_inference_s: float, read_rng: np.random.Generator
    ) -> dict[str, np.ndarray]:
        """read(program(program_rng), t, read_rng), one block's devices in memory at a time.

        The same values, since each of the two (distinct) generators sees its
        calls in the same order; a large model's programmed state (three
        arrays per weight) never exists whole.
        """
        noise = self.target.analog.noise
        values = {}
        for block in self.blocks:
            arrays = [pcm.program_weights(block.matrix[:, tile], noise, program_rng) for tile in block.tiles()]
            self._read_block(values, block, arrays, t_inference_s, read_rng, reuse=True)
        return values

    def _read_block(self, values: dict, block: AnalogBlock, arrays, t_inference_s: float, rng, reuse: bool) -> None:
        """One block's drawn initializers into `values`; `reuse` reads into the programmed arrays (not read again)."""
        noise = self.target.analog.noise
        uncompensated = dataclasses.replace(noise, drift_compensation=False)
        parts, factors = [], []
        for array in arrays:
            out = array.g_programmed_us if reuse else None
            read = pcm.read_weights(array, uncompensated, t_inference_s, rng, out=out)
            parts.append(read)
            factors.append(np.full(read.shape[1], tile_compensation(array, read) if noise.drift_compensation else 1.0))
        block.store(values, np.concatenate(parts, axis=1), np.concatenate(factors).astype(np.float32))

    def bake(self, values: dict[str, np.ndarray]) -> dict[str, ir.TensorProtocol]:
        """Store one draw as the graph's initializers; returns what they held, for `unbake`."""
        before = {}
        for block in self.blocks:
            for value in (block.weight, block.output_scale):
                if value.name not in before:  # blocks with slots share their values
                    before[value.name] = value.const_value
                    value.const_value = ir.tensor(values[value.name], name=value.name)
        return before

    def unbake(self, before: dict[str, ir.TensorProtocol]) -> None:
        """Give the drawn initializers back their values from before `bake` (a draw's arrays can then be freed)."""
        for block in self.blocks:
            for value in (block.weight, block.output_scale):
                value.const_value = before[value.name]


def draw_generators(seed: int, draw: int, reads: int) -> tuple[np.random.Generator, list[np.random.Generator]]:
    """Independent generators for one chip: its programming, then each read.

    Spawned from a SeedSequence: keys such as [seed, draw] and [seed, draw, 0]
    would give the same stream (trailing zeros do not change a seed).
    """
    chip = np.random.SeedSequence([seed, draw])
    program, *read = (np.random.default_rng(child) for child in chip.spawn(1 + reads))
    return program, read

"""Tile placement: distinct physical tiles for every weight block of every analog layer.

Each analog layer's (row block, column block) weight blocks get their own
tiles, consecutive ids in graph order, blocks row-major (the order the
simulator builds them). The schedule reports the placement; emit writes
its tile ids into the annotations.
"""

from __future__ import annotations

from dataclasses import dataclass

from hetmap.errors import HetmapError
from hetmap.mapping.mapping import ANALOG, Mapping
from hetmap.targets import Target


@dataclass
class TileBlock:
    """One weight block on one physical tile."""

    tile: int
    row_block: int
    col_block: int
    rows: int
    cols: int


def place_blocks(layers, mapping: Mapping, target: Target) -> dict[str, list[TileBlock]]:
    """Distinct physical tiles for every weight block of every analog layer, consecutive in graph order.

    On a reloadable target whose tiles are too few, the ids wrap around: the
    tiles are rewritten as the layers take their turns.
    """
    analog = [layer for layer in layers if mapping.layers[layer.name] == ANALOG]
    needed = sum(layer.tiles for layer in analog)
    if needed > target.analog.count and not target.analog.reloadable:
        raise HetmapError(_over_capacity(analog, needed, target))
    placement, next_tile = {}, 0
    for layer in analog:
        blocks = []
        for row_block in range(layer.row_blocks):
            rows = min(layer.block_rows, layer.rows - row_block * layer.block_rows)
            for col_block in range(layer.col_blocks):
                cols = min(target.analog.cols, layer.cols - col_block * target.analog.cols)
                blocks.append(TileBlock(next_tile % target.analog.count, row_block, col_block, rows, cols))
                next_tile += 1
        placement[layer.name] = blocks
    return placement


def _over_capacity(analog, needed: int, target: Target) -> str:
    """One line: tiles needed vs available, and which layers to move to digital."""
    to_move, excess = [], needed - target.analog.count
    for layer in sorted(analog, key=lambda l: l.tiles, reverse=True):
        if excess <= 0:
            break
        to_move.append(layer)
        excess -= layer.tiles
    moves = ", ".join(f"{l.name} ({l.tiles} tiles)" for l in to_move)
    digital = f"int{target.digital_bits[0]}"
    return (
        f"the mapping puts {needed} tiles' worth of weights on analog but the target has "
        f"{target.analog.count}; map fewer layers to analog: leave out --mapping and the solver picks "
        f"a mapping that fits, or give a mapping file that sets {moves} to {digital}"
    )

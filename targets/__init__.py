"""Built-in hardware targets and the loader for user target files."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from hetmap.errors import HetmapError
from hetmap.targets.schema import AnalogTiles, DigitalUnit, MemorySystem, PCMNoise, Target, load_target_file

DEFAULT_TARGET = "hermes"


def builtin_target_names() -> list[str]:
    """Names of the TOML targets shipped with hetmap."""
    folder = resources.files(__name__)
    return sorted(p.name.removesuffix(".toml") for p in folder.iterdir() if p.name.endswith(".toml"))


def load_target(name_or_path: str) -> Target:
    """A built-in target by name, or a user's TOML file by path."""
    if name_or_path in builtin_target_names():
        with resources.as_file(resources.files(__name__) / f"{name_or_path}.toml") as path:
            return load_target_file(path)
    path = Path(name_or_path)
    if path.suffix == ".toml" or path.exists():
        return load_target_file(path)
    known = ", ".join(builtin_target_names())
    raise HetmapError(f"unknown target '{name_or_path}' (built-in: {known}; or give a .toml path)")


__all__ = [
    "DEFAULT_TARGET",
    "AnalogTiles",
    "DigitalUnit",
    "MemorySystem",
    "PCMNoise",
    "Target",
    "builtin_target_names",
    "load_target",
    "load_target_file",
]

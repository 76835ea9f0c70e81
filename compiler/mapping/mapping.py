"""The mapping: one option per mappable layer, a first-class serialisable object.

Options are `analog` (PCM tiles, the target's DAC/ADC) or `int8`/`int4`/`int2`
(digital units, weights fake-quantised to that width). A mapping file is JSON:

    {"format": "hetmap.mapping/1", "layers": {"conv1": "analog", "fc": "int8"}}

keyed by ONNX node name. Presets name whole-model mappings: one option
that fills every layer, resolved against the model's layers by `validate`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from hetmap.errors import HetmapError
from hetmap.targets import Target

FORMAT = "hetmap.mapping/1"
ANALOG = "analog"
PRESETS = ("all-analog", "all-digital-int8", "all-digital-int4")


def option_bits(option: str) -> int | None:
    """Digital weight width of an option, None for analog."""
    return None if option == ANALOG else int(option.removeprefix("int"))


def target_options(target: Target) -> list[str]:
    """Every option a target offers, analog first."""
    return [ANALOG, *(f"int{bits}" for bits in target.digital_bits)]


@dataclass(frozen=True)
class Mapping:
    layers: dict[str, str]
    fill: str | None = None  # the option of every layer `layers` leaves out (a preset)

    def to_json(self) -> dict:
        return {"format": FORMAT, "layers": dict(self.layers)}


def preset_mapping(preset: str) -> Mapping:
    option = ANALOG if preset == "all-analog" else preset.removeprefix("all-digital-")
    return Mapping({}, fill=option)


def load_mapping(path: Path) -> Mapping:
    """Read a mapping file; checked against the model by `validate`."""
    if not path.is_file():
        raise HetmapError(f"mapping '{path}' is neither a preset ({', '.join(PRESETS)}) nor an existing file")
    try:
        data = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as error:
        raise HetmapError(f"mapping file '{path}' is not valid JSON ({error})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT or not isinstance(data.get("layers"), dict):
        raise HetmapError(f'mapping file \'{path}\' must be {{"format": "{FORMAT}", "layers": {{NODE: OPTION}}}}')
    return Mapping({str(name): str(option) for name, option in data["layers"].items()})


def resolve_mapping(spec: str) -> Mapping:
    """A preset name or a mapping file path (`--mapping`)."""
    if spec in PRESETS:
        return preset_mapping(spec)
    return load_mapping(Path(spec))


def validate(mapping: Mapping, layer_names: list[str], target: Target, source: str) -> Mapping:
    """Every mappable layer gets a valid option; unknown names and options are user errors."""
    if mapping.fill is not None:
        mapping = Mapping({**{name: mapping.fill for name in layer_names}, **mapping.layers})
    unknown = [name for name in mapping.layers if name not in layer_names]
    if unknown:
        raise HetmapError(
            f"mapping '{source}' names '{unknown[0]}', which is not a mappable layer of this model "
            f"(see reports/partition.json)"
        )
    allowed = target_options(target)
    for name, option in mapping.layers.items():
        if option not in allowed:
            raise HetmapError(
                f"mapping '{source}': layer '{name}' has option '{option}'; target '{target.name}' "
                f"offers {', '.join(allowed)}"
            )
    missing = [name for name in layer_names if name not in mapping.layers]
    if missing:
        raise HetmapError(f"mapping '{source}' gives no option for layer '{missing[0]}'")
    return Mapping({name: mapping.layers[name] for name in layer_names})

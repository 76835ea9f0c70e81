"""Targets: built-in TOML files load as frozen dataclasses; a bad file is one error naming file and field."""

import dataclasses
from importlib import resources

import pytest

from hetmap.errors import HetmapError
from hetmap.targets import builtin_target_names, load_target, load_target_file

TINY_TOML = (resources.files("hetmap.targets") / "tiny.toml").read_text()


def write_target(tmp_path, text: str):
    path = tmp_path / "board.toml"
    path.write_text(text)
    return path


# Built-in targets.


def test_builtin_targets_are_hermes_diana_and_tiny():
    assert builtin_target_names() == ["diana", "hermes", "tiny"]


def test_hermes_has_64_tiles_of_256x256_with_8_bit_converters():
    analog = load_target("hermes").analog
    assert (analog.count, analog.rows, analog.cols, analog.dac_bits, analog.adc_bits) == (64, 256, 256, 8, 8)


def test_diana_has_one_1152x512_array():
    analog = load_target("diana").analog
    assert (analog.count, analog.rows, analog.cols) == (1, 1152, 512)


def test_tiny_has_eight_32x32_tiles():
    analog = load_target("tiny").analog
    assert (analog.count, analog.rows, analog.cols) == (8, 32, 32)


@pytest.mark.parametrize("name", ["diana", "hermes", "tiny"])
def test_builtin_target_has_int8_int4_int2_with_energy_falling_with_bits(name):
    target = load_target(name)
    assert target.name == name
    assert target.digital_bits == (8, 4, 2)
    energies = [target.digital_unit(bits).energy_per_mac_pj for bits in (8, 4, 2)]
    assert energies == sorted(energies, reverse=True) and energies[-1] > 0


@pytest.mark.parametrize("name", ["diana", "hermes"])
def test_analog_mac_is_cheaper_than_int8_mac(name):
    target = load_target(name)
    assert target.analog.energy_per_mac_pj < target.digital_unit(8).energy_per_mac_pj


def test_target_is_immutable():
    with pytest.raises(dataclasses.FrozenInstanceError):
        load_target("tiny").name = "other"


def test_missing_digital_width_is_an_error_naming_the_target():
    with pytest.raises(HetmapError, match="target 'tiny' has no digital unit for INT3"):
        load_target("tiny").digital_unit(3)


def test_target_file_path_loads_like_the_builtin(tmp_path):
    assert load_target(str(write_target(tmp_path, TINY_TOML))) == load_target("tiny")


def test_noise_table_overrides_defaults(tmp_path):
    path = write_target(tmp_path, TINY_TOML + "\n[analog.noise]\ndrift_scale = 0.0\nprog_coeff = [0.1, 0.2, 0.3]\n")
    noise = load_target_file(path).analog.noise
    assert (noise.drift_scale, noise.prog_coeff, noise.g_max_us) == (0.0, (0.1, 0.2, 0.3), 25.0)


# Bad target files: one HetmapError naming the file and the dotted field path.

BAD_FIELDS = {
    "wrong type": (("rows = 32", 'rows = "32"'), "field 'analog.rows' must be an integer"),
    "bool for a number": (("clock_mhz = 100.0", "clock_mhz = true"), "field 'clock_mhz' must be a number"),
    "unknown field": (("rows = 32", "rows = 32\ncolour = 1"), "field 'analog.colour' is not a known field"),
    "missing field": (("count = 8\n", ""), "field 'analog.count' is missing"),
    "negative energy": (
        ("energy_per_adc_pj = 2.0", "energy_per_adc_pj = -2.0"),
        "field 'analog.energy_per_adc_pj' must not be negative",
    ),
    "zero bits in a list entry": (("bits = 4", "bits = 0"), "field 'digital[1].bits' must be positive"),
    "nan": (("clock_mhz = 100.0", "clock_mhz = nan"), "field 'clock_mhz' must be a finite number"),
    "inf": (("energy_per_adc_pj = 2.0", "energy_per_adc_pj = inf"), "field 'analog.energy_per_adc_pj' must be a fin"),
    # a 1-bit converter has no level beside zero (its step divided by zero); weights are stored as INT8 codes
    "one-bit ADC": (("adc_bits = 8", "adc_bits = 1"), "field 'analog.adc_bits' must be at least 2"),
    "one-bit DAC": (("dac_bits = 8", "dac_bits = 1"), "field 'analog.dac_bits' must be at least 2"),
    "one-bit digital": (("bits = 2", "bits = 1"), "field 'digital[2].bits' must be from 2 to 8"),
    "sixteen-bit digital": (("\nbits = 8", "\nbits = 16"), "field 'digital[0].bits' must be from 2 to 8"),
}


@pytest.mark.parametrize("case", sorted(BAD_FIELDS))
def test_bad_field_names_file_and_dotted_path(tmp_path, case):
    (old, new), message = BAD_FIELDS[case]
    assert old in TINY_TOML
    path = write_target(tmp_path, TINY_TOML.replace(old, new, 1))
    with pytest.raises(HetmapError) as error:
        load_target_file(path)
    assert f"target file '{path}'" in str(error.value) and message in str(error.value)


def test_wrong_length_noise_coefficients_name_the_nested_field(tmp_path):
    path = write_target(tmp_path, TINY_TOML + "\n[analog.noise]\nprog_coeff = [1.0, 2.0]\n")
    with pytest.raises(HetmapError, match=r"field 'analog\.noise\.prog_coeff' must have 3 entries, got 2"):
        load_target_file(path)


def test_scalar_where_a_table_belongs_is_an_error(tmp_path):
    path = write_target(tmp_path, 'name = "t"\ndescription = "d"\nclock_mhz = 1.0\nanalog = 3\ndigital = []\n')
    with pytest.raises(HetmapError, match="field 'analog' must be a table, got 3"):
        load_target_file(path)


def test_target_without_digital_units_is_an_error(tmp_path):
    path = write_target(tmp_path, TINY_TOML.split("[[digital]]")[0])
    with pytest.raises(HetmapError, match="field 'digital' is missing"):
        load_target_file(path)


def test_empty_digital_list_is_an_error(tmp_path):
    path = write_target(tmp_path, "digital = []\n" + TINY_TOML.split("[[digital]]")[0])
    with pytest.raises(HetmapError, match="field 'digital' needs at least one unit"):
        load_target_file(path)


def test_duplicate_digital_width_is_an_error(tmp_path):
    path = write_target(tmp_path, TINY_TOML.replace("bits = 4", "bits = 8"))
    with pytest.raises(HetmapError, match="field 'digital' lists a bit width twice"):
        load_target_file(path)


def test_not_toml_at_all_names_the_file(tmp_path):
    path = write_target(tmp_path, "this is [not toml\n")
    with pytest.raises(HetmapError, match=f"target file '{path}' is not valid TOML"):
        load_target_file(path)


def test_binary_file_is_not_toml(tmp_path):
    path = tmp_path / "board.toml"
    path.write_bytes(bytes(range(256)))
    with pytest.raises(HetmapError, match="is not valid TOML"):
        load_target_file(path)


def test_missing_target_file_is_an_error(tmp_path):
    with pytest.raises(HetmapError, match="board.toml' does not exist"):
        load_target(str(tmp_path / "board.toml"))


def test_folder_given_as_target_is_an_error(tmp_path):
    with pytest.raises(HetmapError, match=f"target file '{tmp_path}' cannot be read"):
        load_target(str(tmp_path))


def test_unknown_target_name_lists_the_builtins():
    with pytest.raises(HetmapError, match=r"unknown target 'hermez' \(built-in: diana, hermes, tiny"):
        load_target("hermez")


# The CLI's view of targets.


def test_targets_command_lists_every_builtin(hetmap):
    result = hetmap("targets")
    assert result.exit_code == 0
    assert all(name in result.stdout for name in ("diana", "hermes", "tiny"))
    assert "64 x 256x256" in result.stdout


def test_targets_show_prints_one_target(hetmap):
    result = hetmap("targets", "show", "tiny")
    assert result.exit_code == 0
    assert "Target tiny" in result.stdout and "analog.rows" in result.stdout and "hermes" not in result.stdout


def test_targets_show_unknown_name_is_one_line_error(hetmap):
    result = hetmap("targets", "show", "hermez")
    assert result.exit_code == 2
    expected = "error: unknown target 'hermez' (built-in: diana, hermes, tiny; or give a .toml path)"
    assert result.stderr.strip() == expected

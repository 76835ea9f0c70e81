"""Checks of what the command line was given, before any work: flags that will go unused, where outputs go."""

from __future__ import annotations

from pathlib import Path

import click

from hetmap.driver import COMPLETION_REPORT, MAPPING_FILE, REPORT_HTML, REPORTS_DIR
from hetmap.errors import HetmapError
from hetmap.graph.modelio import check_writable


def given_flags(names: list[str]) -> list[str]:
    """The options among `names` the user wrote on the command line, as flags."""
    context = click.get_current_context()
    return [
        f"--{name.replace('_', '-')}"
        for name in names
        if context.get_parameter_source(name) is click.core.ParameterSource.COMMANDLINE
    ]


def check_json_path(path: Path, inputs: list[Path]) -> None:
    """The run's JSON may go anywhere writable but over what the run reads or a compile's own files."""
    check_writable(path, "--json file", "--json")
    resolved = path.resolve()
    for source in inputs:
        if source.exists() and resolved == source.resolve():
            raise HetmapError(f"--json file '{path}' would overwrite the input '{source}'; choose another --json")
    in_reports = resolved.parent.name == REPORTS_DIR
    folder = path.parent.parent if in_reports else path.parent
    compiled = (folder / REPORTS_DIR / f"{COMPLETION_REPORT}.json").exists()
    if compiled and (in_reports or resolved.name in (MAPPING_FILE, REPORT_HTML)):
        raise HetmapError(f"--json file '{path}' would overwrite a file of the compile in '{folder}'; choose another")

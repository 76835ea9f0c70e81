"""hetmap: map ONNX networks onto heterogeneous analog/digital accelerators."""

import sys

__version__ = "0.1.0"


def main() -> None:
    """The console script: Ctrl-C while the heavy libraries load ends with one line, as it does later."""
    try:
        from hetmap.cli import main as cli_main
    except KeyboardInterrupt:
        print("aborted", file=sys.stderr)
        sys.exit(130)
    cli_main()

"""hetmap: map ONNX networks onto heterogeneous analog/digital accelerators."""

import sys

__version__ = "0.1.0"


def main() -> None:
    """The console script: Ctrl-C while the heavy libraries load ends with one line, as it does later."""
    try:
        from hetmap.cli import main as cli_main
    except (KeyboardInterrupt, ImportError) as error:
        if not _interrupted(error):
            raise
        print("aborted", file=sys.stderr)
        sys.exit(130)
    cli_main()


def _interrupted(error: BaseException | None) -> bool:
    """Whether Ctrl-C caused `error`: a compiled module interrupted while it initialises raises ImportError from it."""
    while error is not None:
        if isinstance(error, KeyboardInterrupt):
            return True
        error = error.__cause__ or error.__context__
    return False

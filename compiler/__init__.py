"""hetmap: map ONNX networks onto heterogeneous analog/digital accelerators."""

import signal
import sys

__version__ = "0.1.0"


class Terminated(BaseException):
    """SIGTERM (a scheduler's or CI's stop): ends a run as Ctrl-C does, cleaning up, with its own exit code."""


def main() -> None:
    """The console script: Ctrl-C or SIGTERM while the heavy libraries load ends with one line, as it does later."""
    signal.signal(signal.SIGTERM, _terminate)
    try:
        from hetmap.cli import main as cli_main
    except (KeyboardInterrupt, Terminated, ImportError) as error:
        stop = _stop(error)
        if stop is None:
            raise
        print("aborted" if isinstance(stop, KeyboardInterrupt) else "terminated", file=sys.stderr)
        sys.exit(130 if isinstance(stop, KeyboardInterrupt) else 128 + signal.SIGTERM)
    cli_main()


def _terminate(signum: int, frame) -> None:
    raise Terminated


def _stop(error: BaseException | None) -> BaseException | None:
    """The Ctrl-C or SIGTERM that caused `error`: a compiled module stopped while it initialises raises ImportError."""
    while error is not None:
        if isinstance(error, (KeyboardInterrupt, Terminated)):
            return error
        error = error.__cause__ or error.__context__
    return None

"""hetmap: map ONNX networks onto heterogeneous analog/digital accelerators."""

import os
import signal
import sys

__version__ = "0.1.0"

# torch's OpenMP threads spin while they wait for work; beside any other busy process (a second compile, a test
# run) they burn the cores it needs. A ResNet-8 training epoch, 2 threads, beside two busy processes: 15.6-17.4 s
# spinning (OMP_WAIT_POLICY=ACTIVE), 7.6-8.9 s with a short spin then sleep (below), 5.3-6.7 s sleeping at once;
# on an idle machine 3.0, 2.8-3.3 and 3.7-3.9 s. libgomp reads these when torch loads: set before any import of it.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("GOMP_SPINCOUNT", "10000")  # spin this long before sleeping (overrides the policy's 0)


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

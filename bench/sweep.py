"""Third-party sweep: every model hetmap can reach offline that no one here wrote, compiled and checked.

Each model (see `bench.sweep_cases`) is compiled for hermes with a preset
mapping (the solver with one seed for the small scikit-learn models) on
seeded inputs that fit it. Then it either compiled, with the annotated
model checker-clean and computing in stock onnxruntime what the original
computes; or it was refused with one line (a HetmapError). Anything else,
an exception, a multi-line error, a checker failure or different outputs,
is a bug. Exit status 1 when there is one.

    python -m bench.sweep            # everything, JSON to bench/results/sweep.json
    python -m bench.sweep --quick    # a few models, JSON only with --json
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import shutil
import sys
import tempfile
import time
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from rich.console import Console
from rich.table import Table

from bench.sweep_cases import SHIPPED, Case, all_cases, feeds
from hetmap.driver import MAPPED_MODEL, Decision, compile_model
from hetmap.errors import HetmapError
from hetmap.graph.parity import MAGNITUDE_FLOOR, RELATIVE_TOLERANCE
from hetmap.targets import load_target

RESULTS = Path(__file__).parent / "results" / "sweep.json"
TARGET = "hermes"
RESULTS_SHOWN = ("compiled", "refused", "bug", "skipped")


@dataclass
class Outcome:
    model: str
    exporter: str
    opset: int | None
    layers: int | None  # mappable layers found by partition
    result: str  # one of RESULTS_SHOWN
    reason: str
    seconds: float


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return f"{type(error).__name__}: {text.splitlines()[0] if text else ''}"


def _where(error: BaseException) -> str:
    """The innermost frame of an unexpected exception, to find the bug without printing a traceback."""
    frame = traceback.extract_tb(error.__traceback__)[-1]
    return f" (at {Path(frame.filename).name}:{frame.lineno} in {frame.name})"


def _run(proto_or_path, arrays: dict[str, np.ndarray]) -> list:
    """Stock onnxruntime, as a user runs the model."""
    source = str(proto_or_path) if isinstance(proto_or_path, Path) else proto_or_path.SerializeToString()
    options = ort.SessionOptions()
    options.log_severity_level = 3  # exporters' unused initializers are warned about, not wrong
    session = ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
    return session.run(None, arrays)


def _difference(expected: list, actual: list) -> str | None:
    """Why two output lists differ beyond the tolerance hetmap holds its rewrites to, or None."""
    if len(expected) != len(actual):
        return f"{len(actual)} outputs instead of {len(expected)}"
    for index, (want, got) in enumerate(zip(expected, actual)):
        want, got = np.asarray(want), np.asarray(got)
        if want.shape != got.shape or want.dtype != got.dtype:
            return f"output {index} is {got.dtype}{list(got.shape)}, expected {want.dtype}{list(want.shape)}"
        if np.issubdtype(want.dtype, np.floating) and want.size:
            scale = max(float(np.max(np.abs(want))), MAGNITUDE_FLOOR)
            error = float(np.max(np.abs(got.astype(np.float64) - want))) / scale
            if not error <= RELATIVE_TOLERANCE:
                return f"output {index} differs by {error:.3g} (relative)"
        elif not np.array_equal(want, got):
            return f"output {index} differs"
    return None


def _symbolic_shapes(proto: onnx.ModelProto, arrays: dict[str, np.ndarray]) -> dict[str, tuple[int, ...]]:
    """--input-shape for every input with a symbolic dimension past the batch, taken from the generated data."""
    shapes = {}
    for value in proto.graph.input:
        dims = value.type.tensor_type.shape.dim
        if value.name in arrays and any(d.dim_value <= 0 for d in list(dims)[1:]):
            shapes[value.name] = (1, *arrays[value.name].shape[1:])
    return shapes


def _opset(proto: onnx.ModelProto) -> int | None:
    return next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)


def versions() -> dict[str, str]:
    """The exporters, runtimes and model packages the results depend on."""
    names = ["onnx", "onnxruntime", "onnxscript", "onnx-ir", "torch", "scikit-learn", "skl2onnx", *SHIPPED]
    found = {}
    for name in names:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return found


def run_case(case: Case, folder: Path) -> Outcome:
    start = time.perf_counter()

    def outcome(result: str, reason: str, opset=None, layers=None) -> Outcome:
        return Outcome(case.name, case.exporter, opset, layers, result, reason, round(time.perf_counter() - start, 2))

    try:
        path = case.build(folder)
        proto = onnx.load(str(path))
        arrays = feeds(case, proto, np.random.default_rng(0))
        expected = _run(proto, arrays)
    except Exception as error:  # the sweep's own setup (an exporter, inputs that do not fit), not hetmap
        return outcome("skipped", f"could not build or run the original: {_first_line(error)}")
    opset = _opset(proto)
    data = folder / "data.npz" if case.data else None
    if data is not None:
        np.savez(data, **arrays)
    decision = Decision(case.mapping) if case.mapping else Decision(None, seeds=1)
    try:
        result = compile_model(
            path, load_target(TARGET), folder / "out", data, _symbolic_shapes(proto, arrays), decision=decision
        )
    except HetmapError as error:
        message = str(error).replace(f"{path.parent}/", "").replace(f"{folder}/", "")  # no machine paths in results
        if "\n" in message.strip():
            return outcome("bug", f"error message spans lines: {message.splitlines()[0]}", opset)
        return outcome("refused", message, opset)
    except Exception as error:
        return outcome("bug", f"{_first_line(error)}{_where(error)}", opset)
    layers = len(result.reports["partition"]["layers"])
    annotated = result.output_dir / MAPPED_MODEL
    try:
        onnx.checker.check_model(str(annotated), full_check=True)
    except Exception as error:
        return outcome("bug", f"annotated model fails the checker: {_first_line(error)}", opset, layers)
    try:
        difference = _difference(expected, _run(annotated, arrays))
    except Exception as error:
        return outcome("bug", f"stock onnxruntime cannot run the annotated model: {_first_line(error)}", opset, layers)
    if difference:
        return outcome("bug", f"annotated model computes something else: {difference}", opset, layers)
    return outcome("compiled", f"{layers} layers mapped, outputs equal", opset, layers)


def show(console: Console, outcomes: list[Outcome], notes: list[str]) -> dict[str, int]:
    table = Table(title=f"Third-party models compiled for {TARGET}")
    for column in ("model", "exporter", "opset", "layers", "result", "reason", "s"):
        table.add_column(column, overflow="fold")
    styles = {"compiled": "green", "refused": "yellow", "bug": "bold red", "skipped": "dim"}
    for o in outcomes:
        table.add_row(
            o.model,
            o.exporter,
            str(o.opset or "-"),
            "-" if o.layers is None else str(o.layers),
            f"[{styles[o.result]}]{o.result}[/]",
            o.reason,
            f"{o.seconds:.1f}",
        )
    console.print(table)
    for note in notes:
        console.print(f"note: {note}", style="dim")
    counts = {result: sum(o.result == result for o in outcomes) for result in RESULTS_SHOWN}
    console.print(
        f"compiled {counts['compiled']}, refused with a clear line {counts['refused']}, "
        f"bugs {counts['bug']}, skipped {counts['skipped']} (of {len(outcomes)} models)"
    )
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.sweep", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a few models only (seconds)")
    parser.add_argument(
        "--json",
        type=Path,
        help=f"where to write the results (default: {RESULTS.name} in "
        "bench/results for a full sweep; none for --quick)",
    )
    args = parser.parse_args(argv)
    console = Console(width=None if sys.stdout.isatty() else 200)
    cases, notes = all_cases(args.quick)
    outcomes = []
    with tempfile.TemporaryDirectory(prefix="hetmap-sweep-") as scratch, console.status("sweeping") as status:
        for index, case in enumerate(cases):
            status.update(f"[{index + 1}/{len(cases)}] {case.exporter}: {case.name}")
            folder = Path(scratch) / f"{index:03d}"
            folder.mkdir()
            outcomes.append(run_case(case, folder))
            shutil.rmtree(folder, ignore_errors=True)  # large models' outputs would pile up
    counts = show(console, outcomes, notes)
    json_path = args.json or (None if args.quick else RESULTS)
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        record = {
            "target": TARGET,
            "counts": counts,
            "notes": notes,
            "versions": versions(),
            "models": [asdict(o) for o in outcomes],
        }
        json_path.write_text(json.dumps(record, indent=2) + "\n")
        console.print(f"wrote {json_path}")
    return 1 if counts["bug"] else 0


if __name__ == "__main__":
    sys.exit(main())

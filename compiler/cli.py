"""The `hetmap` command line: compile, inspect, targets."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import click
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeRemainingColumn

from hetmap import Terminated, __version__
from hetmap.cli_checks import check_json_path, given_flags
from hetmap.cli_options import FiniteFloat, LearningRate, metric_option, sensitivity_option, workers_options
from hetmap.driver import (
    REPORT_HTML,
    Adaptation,
    Decision,
    compile_model,
    over_budget,
    read_reports,
    unscored_note,
    verification_note,
)
from hetmap.errors import HetmapError
from hetmap.graph.data import load_dataset
from hetmap.graph.modelio import read_model, write_json_atomic
from hetmap.graph.shapes import fixed_batch, graph_inputs, parse_input_shape, resolve_input_shapes
from hetmap.mapping.annotations import compiled_metric, read_target
from hetmap.mapping.solver import OBJECTIVES
from hetmap.passes.finetune import DEVICES, FIXED_LEARNING_RATE, MAPPING_LEARNING_RATE, REFINE_EPOCHS, SCOPES
from hetmap.pipeline import left_out_note, report_to_dict, whole_batches
from hetmap.report.views import show_reports, show_run, show_summary, show_target, show_target_list
from hetmap.sim.drift import parse_drift
from hetmap.sim.jobs import Workers
from hetmap.sim.run import evaluate
from hetmap.targets import DEFAULT_TARGET, builtin_target_names, load_target

out = Console()
err = Console(stderr=True)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="hetmap")
def cli() -> None:
    """Map ONNX neural networks onto heterogeneous analog/digital accelerators."""


@cli.command()
@click.argument("model", required=False, type=click.Path(path_type=Path))
@click.option(
    "-t", "--target", default=DEFAULT_TARGET, show_default=True, help="Built-in target name or a target .toml file."
)
@click.option("-o", "--output", type=click.Path(path_type=Path), help="Output folder (default: build/<model name>).")
@click.option("--data", type=click.Path(path_type=Path), help="Calibration .npz (x, optional y): shapes and checks.")
@click.option(
    "--input-shape",
    "input_shape",
    multiple=True,
    metavar="NAME=1,3,32,32",
    help="Concrete shape of an input with symbolic dimensions.",
)
@click.option(
    "--mapping",
    metavar="FILE|PRESET",
    help="Use this mapping (JSON file, or all-analog, all-digital-int8, all-digital-int4) instead of the solver.",
)
@click.option(
    "--max-drop", default=0.5, show_default=True, type=FiniteFloat(min=0), help="Accuracy budget in percentage points."
)
@click.option(
    "--objective",
    type=click.Choice(OBJECTIVES),
    default="energy",
    show_default=True,
    help="Minimise energy or maximise the analog weight share.",
)
@click.option("--drift", default="1d", show_default=True, help="Drift time at which the budget holds.")
@click.option(
    "--seeds", default=3, show_default=True, type=click.IntRange(min=1), help="Monte-Carlo draws per measurement."
)
@click.option("--pareto", is_flag=True, help="Also sweep the budget and write the Pareto front.")
@click.option("--seed", default=0, show_default=True, type=click.IntRange(min=0), help="Seed for every random draw.")
@click.option(
    "--finetune",
    "finetune_epochs",
    default=0,
    show_default=True,
    type=click.IntRange(min=0),
    metavar="EPOCHS",
    help="Fine-tune the weights for mixed mappings this many epochs (needs --train).",
)
@click.option(
    "--train",
    "train",
    type=click.Path(path_type=Path),
    help="Training .npz for --finetune (x, optional y; without y: distillation).",
)
@click.option(
    "--finetune-scope",
    type=click.Choice(SCOPES),
    default="all",
    show_default=True,
    help="Which weights fine-tuning changes: all, the last layer (head), or norms and biases (norm).",
)
@metric_option
@workers_options
@click.option(
    "--verify",
    "verify",
    type=click.Path(path_type=Path),
    help="Verification .npz for the chosen mapping (default: half of --data, held out of every decision).",
)
@click.option(
    "--confidence",
    default=0.95,
    show_default=True,
    type=FiniteFloat(min=0, max=1, max_open=True),
    help="A mapping ships when this confidence interval of its verified drop is within --max-drop (0: the mean).",
)
@click.option("--allow-over-budget", is_flag=True, help="Exit 0 even when the verified mapping is over --max-drop.")
@click.option(
    "--finetune-lr",
    default=str(FIXED_LEARNING_RATE),
    show_default=True,
    type=LearningRate(min=0, min_open=True),
    help="The supernetwork's initial learning rate (Adam, cosine schedule); auto: a short sweep on held-out data picks it.",
)
@click.option(
    "--refine",
    "refine_epochs",
    default=REFINE_EPOCHS,
    show_default=True,
    type=click.IntRange(min=0),
    metavar="EPOCHS",
    help="After --finetune, train the chosen mapping alone this many epochs (0: not at all).",
)
@click.option(
    "--refine-lr",
    default=MAPPING_LEARNING_RATE,
    show_default=True,
    type=FiniteFloat(min=0, min_open=True),
    help="Learning rate for one mapping trained alone (--refine, or --mapping with --finetune): a share of each "
    "weight tensor's RMS per step.",
)
@click.option(
    "--device",
    type=click.Choice(DEVICES),
    default="auto",
    show_default=True,
    help="Where torch runs: fine-tuning, and on CUDA sensitivity's simulations too (auto: CUDA when torch sees one).",
)
@sensitivity_option
def compile(
    model,
    target,
    output,
    data,
    input_shape,
    mapping,
    max_drop,
    objective,
    drift,
    seeds,
    pareto,
    seed,
    finetune_epochs,
    train,
    finetune_scope,
    metric,
    workers,
    ray_address,
    verify,
    confidence,
    allow_over_budget,
    finetune_lr,
    refine_epochs,
    refine_lr,
    device,
    sensitivity,
) -> None:
    """Compile MODEL (.onnx; default: the bundled reference CNN) for a target."""
    if model is None:
        from hetmap.models import DEFAULT_MODEL, reference_path

        model = reference_path(f"{DEFAULT_MODEL}.onnx")
        data = data or reference_path(f"{DEFAULT_MODEL}.test.npz")
        err.print(f"no model given: compiling the bundled reference model '{DEFAULT_MODEL}'")
    output = output or Path("build") / model.stem
    chosen = load_target(target)
    shapes = dict(parse_input_shape(text) for text in input_shape)
    parse_drift(drift)
    if finetune_epochs and train is None:
        raise click.UsageError("--finetune needs training data: add --train train.npz")
    unused = {"--train feeds --finetune only": given_flags(["train"] if not finetune_epochs else [])}
    if mapping is not None:
        flags = given_flags(["max_drop", "objective", "pareto", "verify", "confidence", "sensitivity"])
        unused["--mapping fixes the mapping"] = flags
    for why, flags in unused.items():
        if flags:
            err.print(f"[yellow]note:[/] {why}: {', '.join(flags)} ignored", highlight=False)
    if device == "cuda":
        from hetmap.train.adaptation import torch_device

        torch_device(device)  # no CUDA here: one line now, not after the sensitivity pass
    columns = (
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[info]}"),
    )
    with Progress(*columns, console=err, transient=True, disable=not err.is_terminal) as progress:
        passes = progress.add_task("compiling", total=None, info="")
        steps = None

        def on_step(done: int, total: int, info: str) -> None:
            nonlocal steps
            if steps is None:
                steps = progress.add_task("fine-tuning", total=total, info="")
            progress.update(steps, completed=done, info=info)

        result = compile_model(
            model,
            chosen,
            output,
            data_path=data,
            input_shapes=shapes,
            seed=seed,
            metric=metric,
            decision=Decision(mapping, max_drop, objective, drift, seeds, pareto, confidence, sensitivity),
            verify_path=verify,
            on_pass=lambda name: progress.update(passes, description=f"running pass [bold]{name}[/]"),
            train_path=train,
            adaptation=Adaptation(
                finetune_epochs,
                finetune_scope,
                None if finetune_lr == "auto" else finetune_lr,
                refine_epochs=refine_epochs,
                mapping_learning_rate=refine_lr,
                device=device,
            ),
            on_step=on_step,
            workers=Workers(workers, ray_address),
        )
    show_reports(out, result.reports)
    show_summary(out, result.reports)
    out.print(f"report: {result.output_dir / REPORT_HTML} (open it in a browser)")
    out.print(f"wrote {result.output_dir}/")
    for note in (*result.notes, verification_note(result.reports), unscored_note(result.reports)):
        if note:
            err.print(f"[yellow]note:[/] {escape(note)}", highlight=False, soft_wrap=True)
    refusal = over_budget(result.reports)
    if refusal and not allow_over_budget:
        raise HetmapError(f"{refusal}; the reports are in {result.output_dir}/ (give --allow-over-budget to accept it)")


@cli.command()
@click.argument("build_dir", type=click.Path(path_type=Path))
def inspect(build_dir) -> None:
    """Print the summary and the pass reports of a compile output folder (or of a file in it, the mapped model)."""
    build_dir = build_dir.parent if build_dir.is_file() else build_dir
    reports = read_reports(build_dir)
    try:
        show_summary(out, reports, f"Summary of {build_dir}")
        show_reports(out, reports)
    except (KeyError, TypeError, IndexError, AttributeError, ValueError) as error:  # edited or foreign reports
        raise HetmapError(
            f"the reports in '{build_dir}' are not those of a whole hetmap compile (they lack what the summary "
            f"reads: {type(error).__name__} {error}); run hetmap compile again"
        ) from None


@cli.command()
@click.argument("model", type=click.Path(path_type=Path))
@click.option("--data", required=True, type=click.Path(path_type=Path), help="Test .npz (x, optional y).")
@click.option("--drift", default="1s,1h,1d,1y", show_default=True, help="Times after programming, comma-separated.")
@click.option(
    "--seeds", default=5, show_default=True, type=click.IntRange(min=1), help="Monte-Carlo draws of device noise."
)
@click.option("--seed", default=0, show_default=True, type=click.IntRange(min=0), help="Base seed of the draws.")
@click.option(
    "--json",
    "json_path",
    type=click.Path(path_type=Path),
    help="Where to write the JSON result (default: beside MODEL).",
)
@metric_option
@workers_options
@click.option(
    "--device",
    type=click.Choice(DEVICES),
    default="auto",
    show_default=True,
    help="Where to simulate: cuda runs the draws through torch on the GPU (auto: when torch sees one), cpu on "
    "onnxruntime.",
)
def run(model, data, drift, seeds, seed, json_path, metric, workers, ray_address, device) -> None:
    """Run an annotated MODEL on the simulated hardware: accuracy per drift time."""
    json_path = json_path or model.with_name(f"{model.stem}.run.json")
    check_json_path(json_path, [model, data])
    annotated = read_model(model)
    target = read_target(annotated, str(model))
    dtypes = {value.name: value.dtype.numpy() for value in graph_inputs(annotated)}
    dataset = load_dataset(data, dtypes)
    resolve_input_shapes(annotated, dataset, {})  # the data must fit the model's inputs
    left_out = left_out_note(dataset, fixed_batch(annotated))
    dataset = whole_batches(dataset, fixed_batch(annotated))
    drifts = [text.strip() for text in drift.split(",") if text.strip()]
    if not drifts:
        raise HetmapError(f"--drift '{drift}' names no drift time; give times such as 1h,1d,1y")
    for text in drifts:
        parse_drift(text)
    simulator = None
    if device != "cpu":
        from hetmap.train.device_sim import annotated_simulator

        simulator = annotated_simulator(annotated, target, device)  # None on the CPU: onnxruntime simulates there
    with Progress(
        *Progress.get_default_columns(), console=err, transient=True, disable=not err.is_terminal
    ) as progress:
        task = progress.add_task("simulating", total=seeds * len(drifts))
        step = lambda: progress.advance(task)  # noqa: E731
        workers = Workers(workers, ray_address)
        metric = compiled_metric(annotated) if metric == "auto" else metric  # as the compile scored, unless told
        report = evaluate(annotated, str(model), dataset, drifts, seeds, seed, step, metric, workers, simulator)
    result = report_to_dict(report)
    write_json_atomic(json_path, result)
    show_run(out, result)
    out.print(f"wrote {json_path}")
    if left_out:
        err.print(f"[yellow]note:[/] {escape(left_out)}", highlight=False, soft_wrap=True)


@cli.group(invoke_without_command=True)
@click.pass_context
def targets(context) -> None:
    """List the built-in targets (or `targets show NAME`)."""
    if context.invoked_subcommand is None:
        show_target_list(out, [load_target(name) for name in builtin_target_names()])


@targets.command("show")
@click.argument("name")
def targets_show(name) -> None:
    """Print one target: a built-in name or a .toml path."""
    show_target(out, load_target(name))


def main() -> None:
    """Entry point: user errors are one line on stderr and a non-zero exit."""
    try:
        cli.main(standalone_mode=False)
    except HetmapError as error:
        err.print(f"[red]error:[/] {error}", highlight=False, markup=True, soft_wrap=True)
        sys.exit(2)
    except click.ClickException as error:  # a bad flag or argument: one line too, not click's usage block
        context = getattr(error, "ctx", None)
        hint = f" (see '{context.command_path} --help')" if context is not None else ""
        err.print(
            f"[red]error:[/] {escape(error.format_message())}{hint}", highlight=False, markup=True, soft_wrap=True
        )
        sys.exit(error.exit_code)
    except (click.Abort, KeyboardInterrupt):
        err.print("aborted")
        sys.exit(130)
    except Terminated:
        err.print("terminated")
        sys.exit(128 + signal.SIGTERM)
    except Exception as error:  # a bug: one line unless debugging
        if os.environ.get("HETMAP_DEBUG"):
            raise
        err.print(
            f"internal error: {type(error).__name__}: {error} (set HETMAP_DEBUG=1 for the traceback)",
            markup=False,
            soft_wrap=True,
        )
        sys.exit(3)


if __name__ == "__main__":
    main()

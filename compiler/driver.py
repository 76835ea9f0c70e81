"""`hetmap compile` as a function: read inputs, run the pipeline, write the outputs."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx_ir as ir

from hetmap.errors import HetmapError
from hetmap.graph.data import Dataset, load_dataset, split_dataset
from hetmap.graph.modelio import check_writable, read_model, save_model_atomic, write_json_atomic
from hetmap.graph.shapes import fixed_batch, graph_inputs, resolve_input_shapes
from hetmap.mapping.annotations import mark_simulation, refuse_simulation_graph
from hetmap.mapping.mapping import resolve_mapping
from hetmap.passes.assign import PARETO_BUDGETS, Assign, AssignOptions
from hetmap.passes.calibrate import Calibrate
from hetmap.passes.canonicalize import Canonicalize
from hetmap.passes.emit import Emit
from hetmap.passes.finetune import Adaptation, Finetune, FinetuneOptions
from hetmap.passes.partition import Partition
from hetmap.passes.refine import Refine, RefineOptions
from hetmap.passes.schedule import Schedule
from hetmap.passes.sensitivity import Sensitivity, SensitivityBeforeFinetune
from hetmap.pipeline import (
    RANDOM_DATA,
    CompileConfig,
    PassContext,
    left_out_note,
    report_to_dict,
    run_pipeline,
)
from hetmap.report.facts import chosen_attempt
from hetmap.report.html import write_report_html
from hetmap.report.plots import PICTURES, write_pictures
from hetmap.sim.confidence import OVER
from hetmap.sim.draws import draw_generators
from hetmap.sim.drift import parse_drift
from hetmap.sim.jobs import Workers
from hetmap.sim.measure import Measurement
from hetmap.sim.simulation import build_simulation
from hetmap.targets import Target

MAPPED_MODEL = "model.mapped.onnx"
SIMULATION_MODEL = "model.sim.onnx"
MAPPING_FILE = "mapping.json"
REPORTS_DIR = "reports"
REPORT_HTML = "report.html"
COMPLETION_REPORT = "pipeline"  # written last: a folder without it holds an interrupted compile
VERIFY_SHARE = 0.5  # of --data held out to verify the chosen mapping (stratified by class)
MIN_SPLIT_SAMPLES = 20  # less data is verified on itself
REPORT_NAMES = (
    "canonicalize",
    "partition",
    "calibrate",
    "sensitivity_before",
    "finetune",
    "sensitivity",
    "assign",
    "refine",
    "schedule",
    "emit",
    "pipeline",
)


@dataclass
class CompileResult:
    output_dir: Path
    reports: dict[str, dict]
    notes: list[str] = field(default_factory=list)  # what the user should know of the inputs they gave


@dataclass(frozen=True)
class Decision:
    """How compile chooses the mapping: a given one, or the solver under a budget."""

    mapping: str | None = None  # a file or preset; None runs sensitivity + solver
    max_drop: float = 0.5  # percentage points at `drift`
    objective: str = "energy"
    drift: str = "1d"
    seeds: int = 3
    pareto: bool = False
    confidence: float = 0.95  # of the verified drop's interval; 0: the mean alone decides
    sensitivity: str = "auto"  # how sensitivity measures (hetmap.passes.sensitivity.METHODS)


def default_passes(decision: Decision, adaptation: Adaptation = Adaptation()):
    """The pipeline: with fine-tuning, sensitivity -> finetune -> sensitivity on the adapted weights -> assign -> refine.

    Every pass's options are built here, once, from the user's decision.
    """
    measurement = Measurement(decision.drift, decision.seeds)
    given = resolve_mapping(decision.mapping) if decision.mapping is not None else None
    source = decision.mapping or ""
    adapting = adaptation.epochs > 0
    finetune = (
        [Finetune(FinetuneOptions(adaptation, measurement, decision.max_drop, given, source))] if adapting else []
    )
    assign = Assign(
        AssignOptions(
            given, source, decision.max_drop, decision.objective, measurement, decision.pareto, decision.confidence
        )
    )
    options = RefineOptions(
        adaptation.refine_epochs,
        measurement,
        adaptation.scope,
        adaptation.batch_size,
        adaptation.label_weight,
        adaptation.device,
        adaptation.mapping_learning_rate,
        decision.confidence,
    )
    refine = [Refine(options)] if adapting and adaptation.refine_epochs > 0 else []
    if given is not None:
        choose = [*finetune, assign]  # finetune trained the given mapping alone already
    else:
        largest = max(decision.max_drop, *PARETO_BUDGETS) if decision.pareto else decision.max_drop
        engine = "screened" if decision.sensitivity == "exact" else decision.sensitivity
        first = (SensitivityBeforeFinetune if adapting else Sensitivity)(measurement, engine, largest)
        again = [Sensitivity(measurement, engine, largest)] if adapting else []
        choose = [first, *finetune, *again, assign, *refine]
    return [Canonicalize(), Partition(), Calibrate(), *choose, Schedule(), Emit()]


def _check_output_dir(output_dir: Path, sources: list[Path]) -> None:
    check_writable(output_dir, "output folder", "-o", folder=True)
    outputs = {
        (output_dir / name).resolve()
        for name in (MAPPED_MODEL, SIMULATION_MODEL, MAPPING_FILE, REPORTS_DIR, REPORT_HTML)
    }
    for source in sources:
        resolved = source.resolve()
        if (
            resolved == output_dir.resolve()
            or resolved in outputs
            or (output_dir / REPORTS_DIR).resolve() in resolved.parents
        ):
            raise HetmapError(f"output folder '{output_dir}' would overwrite the input '{source}'; choose another -o")


def _input_shapes(
    model: ir.Model, dataset: Dataset | None, others: dict[str, Dataset | None], overrides: dict
) -> dict[str, tuple[int, ...]]:
    """The shapes the data gives (else the first other file's); the other files' samples must have the same shape.

    `others`: the training and verification files by what they are ("training file").
    """
    given = {kind: data for kind, data in others.items() if data is not None}
    first = dataset or next(iter(given.values()), None)
    shapes = resolve_input_shapes(model, first, overrides)
    for kind, other in given.items():
        if other is first:
            continue
        for name, shape in resolve_input_shapes(model, other, overrides).items():
            if shape != shapes[name]:
                raise HetmapError(
                    f"{kind} '{other.source}': input '{name}' has samples of shape {list(shape[1:])} "
                    f"but the data file '{first.source}' has {list(shapes[name][1:])}"
                )
    return shapes


def _held_out(
    model: ir.Model, dataset: Dataset | None, verify: Dataset | None, decision: Decision, seed: int
) -> tuple[Dataset | None, Dataset | None]:
    """(decision data, verification data): the user's --verify file, else a seeded share of --data held out.

    Nothing is held out when the mapping is given, or the data is too small to split.
    """
    if verify is not None or dataset is None or decision.mapping is not None or dataset.size < MIN_SPLIT_SAMPLES:
        return dataset, verify
    return split_dataset(dataset, VERIFY_SHARE, seed, fixed_batch(model) or 1)


def _shared_samples(verify: Dataset | None, others: dict[str, Dataset | None]) -> str:
    """What the --verify file shares with the other files, in words ('12 of its 40 samples with --data'), or ''."""
    if verify is None:
        return ""
    rows = _sample_keys(verify, sorted(verify.inputs))
    found = []
    for flag, other in others.items():
        if other is None or set(other.inputs) != set(verify.inputs):
            continue
        seen = set(_sample_keys(other, sorted(verify.inputs)))
        count = sum(row in seen for row in rows)
        if count:
            found.append(f"{count} of its {verify.size} samples with {flag}")
    return " and ".join(found)


def _sample_keys(dataset: Dataset, names: list[str]) -> list[bytes]:
    """Each sample's bytes over the named inputs (a 0-d input is shared by every sample, not one of them)."""
    arrays = [np.asarray(dataset.inputs[name]) for name in names]
    per_sample = [array for array in arrays if array.ndim > 0]
    return [b"".join(np.ascontiguousarray(array[k]).tobytes() for array in per_sample) for k in range(dataset.size)]


def compile_model(
    model_path: Path,
    target: Target,
    output_dir: Path,
    data_path: Path | None = None,
    input_shapes: dict[str, tuple[int, ...]] | None = None,
    seed: int = 0,
    decision: Decision = Decision(),
    on_pass: Callable[[str], None] = lambda name: None,
    train_path: Path | None = None,
    adaptation: Adaptation = Adaptation(),
    on_step: Callable[[int, int, str], None] = lambda done, total, info: None,
    metric: str = "auto",
    workers: Workers = Workers(),
    verify_path: Path | None = None,
) -> CompileResult:
    """Compile `model_path` for `target`, writing the model and JSON reports under `output_dir`.

    Fine-tuning keeps its checkpoint in `output_dir`: the same compile run
    again after an interruption resumes from the last finished epoch.
    """
    if adaptation.epochs > 0 and train_path is None:
        raise HetmapError("--finetune needs training data: add --train train.npz (x, optional y)")
    mapping_file = Path(decision.mapping) if decision.mapping else None
    sources = [
        p for p in (model_path, data_path, mapping_file, train_path, verify_path) if p is not None and p.exists()
    ]
    _check_output_dir(output_dir, sources)
    model = read_model(model_path)
    refuse_simulation_graph(model, str(model_path))
    dtypes = {value.name: value.dtype.numpy() for value in graph_inputs(model)}
    dataset = load_dataset(data_path, dtypes) if data_path is not None else None
    train = load_dataset(train_path, dtypes) if train_path is not None and adaptation.epochs > 0 else None
    verify = load_dataset(verify_path, dtypes) if verify_path is not None else None
    shapes = _input_shapes(model, dataset, {"training file": train, "verification file": verify}, input_shapes or {})
    shared = _shared_samples(verify, {"--data": dataset, "--train": train})
    given = dataset  # the user's whole --data, before a share of it is held out
    dataset, verify = _held_out(model, dataset, verify, decision, seed)
    config = CompileConfig(
        seed=seed,
        input_shapes=shapes,
        dataset=dataset,
        train=train,
        checkpoint_dir=output_dir,
        metric=metric,
        workers=workers,
        verify=verify,
        verify_held_out=not shared,
        device=adaptation.device,
    )

    context = PassContext(target=target, config=config, progress=on_step)
    model, results = run_pipeline(model, default_passes(decision, adaptation), context, on_pass)

    reports = {name: report_to_dict(result) for name, result in results.items()}
    completion_mark = output_dir / REPORTS_DIR / f"{COMPLETION_REPORT}.json"
    completion_mark.unlink(missing_ok=True)  # an earlier compile's outputs are being replaced
    save_model_atomic(model, output_dir / MAPPED_MODEL)
    write_json_atomic(output_dir / MAPPING_FILE, results["assign"].mapping.to_json())
    for name, report in reports.items():
        if name != COMPLETION_REPORT:
            write_json_atomic(output_dir / REPORTS_DIR / f"{name}.json", report)
    for name in REPORT_NAMES:  # an earlier compile's report this one did not write (sensitivity, after --mapping)
        if name not in reports:
            (output_dir / REPORTS_DIR / f"{name}.json").unlink(missing_ok=True)
    pictures = write_pictures(reports, output_dir / REPORTS_DIR)
    drift = reports["assign"]["drift"] or decision.drift
    write_simulation_model(model, target, drift, seed, output_dir / SIMULATION_MODEL)
    files = [MAPPED_MODEL, SIMULATION_MODEL, MAPPING_FILE, *(f"{REPORTS_DIR}/{n}.json" for n in reports)]
    files += [f"{REPORTS_DIR}/{name}" for name in PICTURES if name in pictures]
    write_report_html(output_dir / REPORT_HTML, reports, pictures, model_path.name, files)
    write_json_atomic(completion_mark, reports[COMPLETION_REPORT])  # last: the folder is whole
    notes = [f"the --verify file shares {shared}: its check is not held out of what decided the mapping"] * bool(shared)
    notes += [note for data in (given, verify) if (note := left_out_note(data, fixed_batch(model)))]
    return CompileResult(output_dir=output_dir, reports=reports, notes=notes)


def write_simulation_model(annotated: ir.Model, target: Target, drift: str, seed: int, path: Path) -> None:
    """The simulation graph with one device draw baked in, for stock onnxruntime.

    Every tile is programmed once and read `drift` after programming with the
    generators of `hetmap run --seed SEED`'s first draw at its first drift
    time, so this file computes what that draw computes. The `hetmap.*`
    layer annotations are dropped: they describe the clean graph, not this one.
    """
    simulation = build_simulation(annotated, target, shifted_adc=True)
    program_rng, (read_rng,) = draw_generators(seed, 0, 1)
    simulation.bake(simulation.draw(program_rng, parse_drift(drift), read_rng))
    mark_simulation(simulation.model, drift, seed, draw=0)
    save_model_atomic(simulation.model, path)


def over_budget(reports: dict[str, dict]) -> str | None:
    """Why the compile's result is a refusal (its verification puts the whole interval over the budget), or None.

    An inconclusive verification (the interval straddles the budget) is no
    refusal: the mapping with the lowest upper bound ships, with a note.
    """
    assign = reports.get("assign", {})
    verification = assign.get("verification")
    if assign.get("source") != "solver" or assign["within_budget"]:
        return None
    if verification is None:  # no data to verify on: the decisions' measurement is all there is
        return (
            f"no mapping met the {assign['max_drop_points']:g}-point budget at {assign['drift']}: the one with the "
            f"least measured drop ({chosen_attempt(assign)['measured_drop_points']:.2f} points) was written"
        )
    if verification["verdict"] != OVER:
        return None
    return (
        f"no mapping met the {assign['max_drop_points']:g}-point budget at {assign['drift']}: the best one "
        f"written drops {verification['drop_points']:.2f} points ({verification['confidence']:.0%} interval "
        f"{verification['low_points']:.2f} to {verification['high_points']:.2f}) on {verification['samples']} "
        "held-out samples"
    )


def verification_note(reports: dict[str, dict]) -> str | None:
    """The line to show when the data could not verify the budget, or when there was no data to decide on
    (None when the data verified it, or a mapping was given)."""
    verification = reports.get("assign", {}).get("verification")
    if verification:
        return verification["note"] or None
    sensitivity = reports.get("sensitivity", {})
    if sensitivity.get("data") == RANDOM_DATA:
        return (
            f"no --data: the mapping was decided on {sensitivity['samples']} random "
            f"input{'s' if sensitivity['samples'] != 1 else ''} (token ids below their table's rows, other "
            "integers at 0), "
            "which say nothing of its accuracy on real inputs; give --data with samples the model will see"
        )
    return None


def unscored_note(reports: dict[str, dict]) -> str | None:
    """The line to show when some layers do not feed the first output, the one every drop is measured on."""
    unscored = reports.get("sensitivity", {}).get("unscored", [])
    if not unscored:
        return None
    named = ", ".join(unscored[:3]) + (f" and {len(unscored) - 3} more" if len(unscored) > 3 else "")
    return (
        f"{'layers' if len(unscored) > 1 else 'layer'} {named} only {'feed' if len(unscored) > 1 else 'feeds'} "
        "outputs after the first, the one hetmap scores: any option measures a drop of 0 there; put the output "
        "to score first"
    )


def read_reports(output_dir: Path) -> dict[str, dict]:
    """The JSON reports of an earlier compile."""
    folder = output_dir / REPORTS_DIR
    if not output_dir.exists():
        raise HetmapError(f"'{output_dir}' does not exist; give a compile's output folder (or its mapped model)")
    if not folder.is_dir():
        raise HetmapError(f"'{output_dir}' holds no hetmap reports (expected {folder}/); run hetmap compile first")
    if not (folder / f"{COMPLETION_REPORT}.json").is_file():
        raise HetmapError(f"'{output_dir}' holds an unfinished compile (interrupted?); run hetmap compile again")
    reports = {}
    for path in sorted(folder.glob("*.json")):
        try:
            reports[path.stem] = json.loads(path.read_text())
        except ValueError as error:
            raise HetmapError(f"report '{path}' is not valid JSON ({error})") from None
        if not isinstance(reports[path.stem], dict):
            raise HetmapError(f"report '{path}' is not a hetmap report (a JSON object); run hetmap compile again")
    return reports

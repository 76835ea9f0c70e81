"""Scale of the whole compile: ResNet-50, VGG-19 and a BERT-base-size encoder, time, sensitivity share, memory.

Each measurement runs in a fresh subprocess (peak RSS its own, counted above
the RSS after imports, as bench.scale does): a full compile without
fine-tuning (canonicalize .. emit, the solver with its verification), with
the sensitivity engine of today (`suffix`) on 1 and 2 local workers, and
the sensitivity pass alone on the path before it (`whole`: every layer and
option simulates the whole network), so speed-ups are ratios within one
run. Then `hetmap run` of the compiled model (3 draws) for its memory.
Samples are random inputs (agreement with full precision).

    python -m bench.scale_compile [--models resnet50,vgg19,bert] [--samples N] [--no-whole]

Heavy: run it alone, in the background; tests never run it.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from bench.scale import _StageMeter

SEEDS = 3


def _build(name: str):
    from bench.large_graphs import build_bert_encoder, build_vgg19
    from bench.resnet_graphs import build_resnet50

    return {"resnet50": build_resnet50, "vgg19": build_vgg19, "bert": build_bert_encoder}[name](0)


def _child(kind: str, model_path: str, data_path: str, workers: int, out_dir: str) -> dict:
    from hetmap.driver import Decision, default_passes, write_simulation_model
    from hetmap.graph.data import load_dataset
    from hetmap.graph.modelio import read_model
    from hetmap.graph.shapes import graph_inputs, resolve_input_shapes
    from hetmap.passes.sensitivity import Sensitivity
    from hetmap.pipeline import CompileConfig, PassContext, run_pipeline
    from hetmap.sim.jobs import Workers
    from hetmap.sim.run import evaluate
    from hetmap.targets import load_target

    meter = _StageMeter()
    meter.mark("load")
    model = read_model(Path(model_path))
    dtypes = {value.name: value.dtype.numpy() for value in graph_inputs(model)}
    dataset = load_dataset(Path(data_path), dtypes)
    if kind == "run":
        meter.mark("run")
        evaluate(model, model_path, dataset, ["1d"], SEEDS, workers=Workers(workers, serial_below_bytes=0))
        meter.mark(None)
        return meter.figures()
    shapes = resolve_input_shapes(model, dataset, {})
    config = CompileConfig(input_shapes=shapes, dataset=dataset, workers=Workers(workers, serial_below_bytes=0))
    passes = default_passes(Decision(seeds=SEEDS))
    if kind == "whole":  # sensitivity alone, on the path before the suffix engine
        passes = [*passes[:3], Sensitivity(passes[3].measurement, engine="whole")]
    target = load_target("hermes")
    model, results = run_pipeline(model, passes, PassContext(target, config), on_pass=meter.mark)
    if kind == "compile":
        meter.mark("write")
        from hetmap.graph.modelio import save_model_atomic

        save_model_atomic(model, Path(out_dir) / "model.mapped.onnx")
        write_simulation_model(model, target, "1d", 0, Path(out_dir) / "model.sim.onnx")
    meter.mark(None)
    figures = meter.figures()
    figures["passes"] = {record.name: record.seconds for record in results["pipeline"].passes}
    return figures


def _run_child(*args) -> dict:
    command = [sys.executable, "-m", "bench.scale_compile", "--child", *map(str, args)]
    done = subprocess.run(command, capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1])
    if done.returncode != 0:
        return {"error": done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "failed"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def measure(name: str, samples: int, whole: bool) -> dict:
    import onnx

    with tempfile.TemporaryDirectory(prefix="hetmap-scale-compile-") as tmp:
        model = _build(name)
        weight_bytes = sum(len(t.raw_data) for t in model.graph.initializer)
        model_path, data_path = Path(tmp) / f"{name}.onnx", Path(tmp) / "data.npz"
        onnx.save(model, str(model_path))
        value = model.graph.input[0]
        shape = [samples, *(d.dim_value for d in value.type.tensor_type.shape.dim[1:])]
        del model
        np.savez(data_path, x=np.random.default_rng(0).standard_normal(shape, dtype=np.float32))
        figures = {"weight_bytes": weight_bytes, "samples": samples}
        for workers in (1, 2):
            out = Path(tmp) / f"out{workers}"
            out.mkdir()
            figures[f"compile_w{workers}"] = _run_child("compile", model_path, data_path, workers, out)
        figures["run_w1"] = _run_child("run", Path(tmp) / "out1" / "model.mapped.onnx", data_path, 1, tmp)
        if whole:
            figures["whole_sensitivity"] = _run_child("whole", model_path, data_path, 1, tmp)
    return figures


def _rows(name: str, f: dict) -> list[str]:
    one, two = f["compile_w1"], f["compile_w2"]
    if "error" in one:
        return [f"{name}: compile failed: {one['error']}"]
    sens = one["passes"]["sensitivity"]
    lines = [
        f"{name}: {f['weight_bytes'] / 2**20:.0f} MiB of weights, {f['samples']} samples",
        f"  compile (1 worker)         {one['seconds']:8.1f} s, sensitivity {sens:.1f} s ({sens / one['seconds']:.0%})",
        f"  peak memory / weight bytes {one['peak_extra_bytes'] / f['weight_bytes']:8.2f}x (compile)",
    ]
    if "error" not in two:
        sens2 = two["passes"]["sensitivity"]
        lines.append(
            f"  1 -> 2 workers             {one['seconds'] / two['seconds']:8.2f}x compile, {sens / sens2:.2f}x sensitivity"
        )
    run = f["run_w1"]
    if "error" not in run:
        lines.append(
            f"  hetmap run ({SEEDS} draws)       {run['seconds']:8.1f} s, peak {run['peak_extra_bytes'] / f['weight_bytes']:.2f}x weight bytes"
        )
    whole = f.get("whole_sensitivity")
    if whole and "error" not in whole:
        before = whole["passes"]["sensitivity"]
        lines.append(
            f"  sensitivity before (whole)  {before:8.1f} s: speed-up {before / sens:.1f}x, peak {whole['peak_extra_bytes'] / f['weight_bytes']:.2f}x"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", default="resnet50,vgg19,bert")
    parser.add_argument("--samples", type=int, default=256)
    parser.add_argument("--no-whole", action="store_true", help="skip the path before the suffix engine")
    options = parser.parse_args()
    results = {}
    for name in options.models.split(","):
        results[name] = measure(name, options.samples, not options.no_whole)
        print("\n".join(_rows(name, results[name])), flush=True)
    print(json.dumps(results))


if __name__ == "__main__":
    if len(sys.argv) == 7 and sys.argv[1] == "--child":
        print(json.dumps(_child(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]), sys.argv[6])))
    else:
        main()

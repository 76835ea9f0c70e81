"""What a compile leaves for people: report.html, the pictures, the simulation ONNX, and `inspect`'s summary."""

import base64
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from matplotlib.patches import Rectangle

import messy_models as messy
from helpers import run_console_script
from hetmap.driver import Decision, compile_model, read_reports
from hetmap.graph.data import load_dataset
from hetmap.graph.modelio import read_model
from hetmap.models import reference_path
from hetmap.report import plots
from hetmap.report.facts import summary
from hetmap.report.html import render_report_html
from hetmap.report.plots import render_pareto, render_sensitivity, render_tiles
from hetmap.sim.run import evaluate
from hetmap.targets import load_target

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PICTURES = ("sensitivity.png", "pareto.png", "tiles.png", "schedule.png", "energy.png")
SECTIONS = ("summary", "mapping", "pictures", "solver", "model")
CHROMIUM = shutil.which("chromium")
INSTALL_CHROMIUM = "apt-get update && apt-get install -y chromium"


@pytest.fixture(scope="module")
def compiled(tmp_path_factory) -> Path:
    """`hetmap compile cnn.onnx --target hermes --data cnn.test.npz --pareto ... -o build` (the real console script).

    The analog-share objective puts layers on analog tiles (for this small CNN
    the energy objective picks all-digital), so the tile map and the simulation
    model have analog weights to show.
    """
    folder = tmp_path_factory.mktemp("report")
    result = run_console_script(
        "compile",
        reference_path("cnn.onnx"),
        "--target",
        "hermes",
        "--data",
        reference_path("cnn.test.npz"),
        "--objective",
        "analog-share",
        "--max-drop",
        "1.5",  # what the 271 held-out samples can verify
        "--pareto",
        "-o",
        "build",
        cwd=folder,
    )
    assert result.returncode == 0, result.stderr
    return folder / "build"


@pytest.fixture(scope="module")
def reports(compiled) -> dict[str, dict]:
    return read_reports(compiled)


@pytest.fixture(scope="module")
def page(compiled) -> str:
    return (compiled / "report.html").read_text()


def embedded_images(page: str) -> list[str]:
    return re.findall(r'<img\b[^>]*\bsrc="([^"]*)"', page)


# The page: self-contained, every section, every picture, the numbers of the JSON.


def test_compile_writes_the_page_the_pictures_and_the_simulation_model(compiled):
    for name in ("report.html", "model.sim.onnx", *(f"reports/{p}" for p in PICTURES)):
        assert (compiled / name).is_file(), name
    for name in PICTURES:
        assert (compiled / "reports" / name).read_bytes().startswith(PNG_SIGNATURE), name


def test_page_has_every_section(page):
    for key in SECTIONS:
        assert f'<section id="{key}">' in page, key
    for heading in (
        "Summary",
        "Mapping per layer",
        "Sensitivity",
        "Pareto front",
        "Tile map",
        "Timeline",
        "Solver",
        "Budget sweep (Pareto)",
        "Import and canonicalize",
        "Partition",
        "Pipeline",
    ):
        assert f">{heading}</h" in page, heading


def test_page_needs_nothing_from_outside(page):
    assert not re.search(r'\b(?:src|href)\s*=\s*"(?:https?:)?//', page)
    assert "http://" not in page and "https://" not in page
    assert "<script" not in page and "<link" not in page and "@import" not in page


def test_every_image_is_an_embedded_png_of_a_written_picture(page, compiled):
    sources = embedded_images(page)
    assert len(sources) == len(PICTURES)
    written = {(compiled / "reports" / name).read_bytes() for name in PICTURES}
    for source in sources:
        prefix = "data:image/png;base64,"
        assert source.startswith(prefix)
        data = base64.b64decode(source.removeprefix(prefix), validate=True)
        assert data.startswith(PNG_SIGNATURE) and data in written


def test_page_shows_the_numbers_of_the_reports(page, reports):
    emit, schedule = reports["emit"], reports["schedule"]
    verified = reports["assign"]["verification"]
    assert f"{emit['analog_weight_share']:.1%}" in page
    assert f"{verified['full_precision'] - verified['drop_points'] / 100:.2%}" in page  # the held-out data's own
    assert (
        f"{verified['confidence']:.0%} interval {verified['low_points']:+.2f} to {verified['high_points']:+.2f}" in page
    )
    assert f"{schedule['total_energy_pj'] / schedule['digital_baseline_energy_pj']:.2f}x all-INT8" in page
    assert f"{emit['tiles_used']} of {emit['tile_count']}" in page
    for layer in reports["partition"]["layers"]:
        assert f'<td class="name">{layer["name"]}</td>' in page


def test_every_text_from_a_report_is_escaped(reports):
    hostile = json.loads(json.dumps(reports))
    hostile["canonicalize"]["producer"] = '<script>alert("x")</script>'
    hostile["partition"]["unmappable"] = [{"name": "a&b", "op_type": "MatMul", "reason": "<b>two activations</b>"}]
    page = render_report_html(hostile, {}, model_name='m"<i>.onnx')
    assert "<script>" not in page and "<b>two" not in page and "<i>" not in page
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in page and "a&amp;b" in page


def test_a_compile_with_a_given_mapping_notes_what_it_lacks_and_drops_stale_outputs(tmp_path):
    """No sensitivity or sweep with --mapping: the sections say so; an earlier compile's pictures go."""
    onnx.save(messy.attention_scores(), tmp_path / "model.onnx")
    target = load_target("tiny")
    compile_model(tmp_path / "model.onnx", target, tmp_path / "out", decision=Decision(pareto=True))
    assert (tmp_path / "out/reports/sensitivity.png").exists()
    compile_model(tmp_path / "model.onnx", target, tmp_path / "out", decision=Decision("all-analog"))
    assert not (tmp_path / "out/reports/sensitivity.png").exists()
    assert not (tmp_path / "out/reports/pareto.png").exists()
    assert not (tmp_path / "out/reports/sensitivity.json").exists()
    page = (tmp_path / "out/report.html").read_text()
    for note in (
        "No sensitivity report",
        "No sensitivity picture",
        "No pareto front picture",
        "the solver did not run",
        "not measured",
        "both operands are activations",
    ):
        assert note in page, note
    assert len(embedded_images(page)) == 3  # tile map, timeline and energy by layer


# The pictures, from report dicts alone.


def test_pictures_render_from_report_dicts(reports):
    assert render_pareto({**reports["assign"], "pareto": []}) is None
    for picture in (
        render_sensitivity(reports["sensitivity"], reports["assign"]["mapping"]["layers"]),
        render_pareto(reports["assign"], reports["schedule"]),
        render_tiles(reports["schedule"], reports["partition"]),
        render_tiles(reports["schedule"]),  # without the tile size: whole tiles filled
    ):
        assert picture.startswith(PNG_SIGNATURE) and len(picture) > 10_000


def test_a_target_of_a_trillion_tiles_draws_only_the_first_ones(reports, monkeypatch):
    """The tile map drew every tile of the target: a count of 10^12 hung the compile at its last step."""
    drawn = []
    monkeypatch.setattr(plots, "Rectangle", lambda *args, **kwargs: drawn.append(args) or Rectangle(*args, **kwargs))
    picture = render_tiles({**reports["schedule"], "tile_count": 10**12}, reports["partition"])
    assert picture.startswith(PNG_SIGNATURE)
    assert plots.MAX_DRAWN_TILES <= len(drawn) <= 2 * plots.MAX_DRAWN_TILES  # a used tile is two rectangles


# The simulation model: one draw, stock ONNX.


def test_simulation_model_passes_the_checker_and_runs_in_onnxruntime(compiled, reports):
    assert reports["emit"]["tiles_used"] > 0  # analog tiles with noise baked in, not only digital quantisers
    model = onnx.load(compiled / "model.sim.onnx")
    onnx.checker.check_model(model, full_check=True)
    x = np.load(reference_path("cnn.test.npz"))["x"][:8]
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    (y,) = session.run(None, {session.get_inputs()[0].name: x})
    assert y.shape == (8, 10) and np.isfinite(y).all()
    metadata = {p.key: p.value for p in model.metadata_props}
    assert json.loads(metadata["hetmap.simulation"]) == {"drift": "1d", "seed": 0, "draw": 0}
    assert "hetmap.target_spec" not in metadata  # `hetmap run` takes the annotated model, not this one
    assert not any(p.key.startswith("hetmap.") for node in model.graph.node for p in node.metadata_props)


def test_simulation_model_computes_the_first_draw_of_hetmap_run(compiled):
    data = reference_path("cnn.test.npz")
    model = onnx.load(compiled / "model.sim.onnx")
    arrays = np.load(data)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    (y,) = session.run(None, {session.get_inputs()[0].name: arrays["x"]})
    annotated = read_model(compiled / "model.mapped.onnx")
    run = evaluate(annotated, "model", load_dataset(data, {"x": np.float32}), ["1d"], seeds=1, seed=0)
    assert float(np.mean(y.argmax(axis=1) == arrays["y"])) == run.drifts[0].per_seed[0]


# `hetmap inspect`: the summary first, then the pass views.


def test_inspect_prints_the_summary_first_with_the_numbers_of_the_reports(compiled, reports, hetmap):
    result = hetmap("inspect", compiled)
    assert result.exit_code == 0, result.stderr
    text = " ".join(result.stdout.replace("│", " ").split())  # rich wraps long cells
    emit, schedule, assign = reports["emit"], reports["schedule"], reports["assign"]
    verified = assign["verification"]
    assert text.index("Summary") < text.index("canonicalize")
    for figure in (
        f"{emit['analog_weight_share']:.1%} of weights",
        f"{verified['full_precision']:.2%} full precision",  # the held-out data's, as the drop is
        f"{verified['full_precision'] - verified['drop_points'] / 100:.2%} mapped at 1d",
        f"drop {verified['drop_points']:+.2f} points, {verified['confidence']:.0%} interval",
        f"verified on {verified['samples']} held-out samples",
        f"{verified['verdict']}" if verified["verdict"] != "inconclusive" else "cannot tell",
        f"{schedule['total_energy_pj'] / schedule['digital_baseline_energy_pj']:.2f}x all-INT8",
        f"{emit['tiles_used']} of {emit['tile_count']}",
    ):
        assert figure in text, figure
    for view in ("Sensitivity:", "Solver attempts", "Pareto sweep", "Schedule on hermes", "critical path"):
        assert view in text, view
    assert all(len(line) <= 80 for line in result.stdout.splitlines())


# In a real browser: every picture decodes and shows.

CHECK_SCRIPT = """<script>
window.addEventListener("load", function () {
  var images = Array.from(document.images);
  var loaded = images.filter(function (image) { return image.complete && image.naturalWidth > 0; });
  var pre = document.createElement("pre");
  pre.id = "image-check";
  pre.textContent = "images " + loaded.length + " of " + images.length;
  document.body.appendChild(pre);
});
</script>"""


def images_loaded_in_chromium(page: Path, tmp_path: Path) -> tuple[int, int]:
    """(images with naturalWidth > 0, images) of a copy of `page` after load, in headless Debian chromium."""
    probe = tmp_path / f"probe-{page.name}"
    probe.write_text(page.read_text().replace("</body>", CHECK_SCRIPT + "</body>"))
    command = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
        "--virtual-time-budget=5000",
        "--dump-dom",
        probe.as_uri(),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    match = re.search(r'<pre id="image-check">images (\d+) of (\d+)</pre>', done.stdout)
    assert match, f"chromium gave no image count (exit {done.returncode}): {done.stderr[-2000:]}"
    return int(match.group(1)), int(match.group(2))


@pytest.mark.skipif(CHROMIUM is None, reason=f"needs Debian chromium: {INSTALL_CHROMIUM} (as root)")
def test_every_picture_loads_in_a_headless_browser(compiled, tmp_path):
    assert images_loaded_in_chromium(compiled / "report.html", tmp_path) == (len(PICTURES), len(PICTURES))


@pytest.mark.skipif(CHROMIUM is None, reason=f"needs Debian chromium: {INSTALL_CHROMIUM} (as root)")
def test_the_browser_check_sees_a_broken_picture(compiled, tmp_path):
    broken = tmp_path / "broken.html"
    page = (compiled / "report.html").read_text()
    broken.write_text(page.replace("</main>", '<img src="data:image/png;base64,iVBORw0KGgoAAAA=" alt="broken"></main>'))
    assert images_loaded_in_chromium(broken, tmp_path) == (len(PICTURES), len(PICTURES) + 1)


def test_the_summary_gives_the_verification_of_the_refined_weights_when_they_ship(reports):
    refine = {"shipped": "refined", "drop_before_points": 0.4, "drop_after_points": 0.1, "high_after_points": 0.3}
    evidence = summary({**reports, "refine": {**refine, "held_out": True}})["accuracy"]["evidence"]
    assert "verified on" in evidence
    assert "then refined and verified again on the same held-out samples: +0.10 points (was +0.40)" in evidence
    assert "interval top +0.30" in evidence
    assert "refined" not in summary({**reports, "refine": {**refine, "shipped": "as assigned"}})["accuracy"]["evidence"]

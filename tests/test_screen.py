"""The sample screen: mapping measurements that skip samples which cannot flip score exactly as full ones."""

import numpy as np
import onnx
import onnx_ir as ir
import pytest

from helpers import as_target
from hetmap.graph.data import Dataset
from hetmap.graph.shapes import resolve_input_shapes
from hetmap.mapping.mapping import ANALOG
from hetmap.models import reference_path
from hetmap.passes.calibrate import Calibrate
from hetmap.passes.canonicalize import Canonicalize
from hetmap.passes.partition import Partition
from hetmap.pipeline import CompileConfig, PassContext, run_pipeline
from hetmap.sim import scorer as scorer_module
from hetmap.sim.measure import Measurer
from hetmap.sim.scorer import Scorer
from hetmap.sim.screen import Track, screen_for


def calibrated(name: str, samples: int, labelled: bool = True):
    data = np.load(reference_path(f"{name}.test.npz"))
    dataset = Dataset({"x": data["x"][:samples]}, data["y"][:samples] if labelled else None, name)
    model = ir.serde.deserialize_model(onnx.load(reference_path(f"{name}.onnx")))
    config = CompileConfig(input_shapes=resolve_input_shapes(model, dataset, {}), dataset=dataset)
    model, reports = run_pipeline(
        model, [Canonicalize(), Partition(), Calibrate()], PassContext(as_target("hermes"), config)
    )
    return model, reports, dataset


class CountingSession:
    """A real onnxruntime session that counts the samples it ran."""

    def __init__(self, session):
        self.session, self.rows = session, 0

    def __getattr__(self, name):
        return getattr(self.session, name)

    def run(self, names, feeds):
        self.rows += len(next(iter(feeds.values())))  # the chunk's inputs (or activations) come first
        return self.session.run(names, feeds)


@pytest.mark.parametrize("name, labelled", [("cnn", True), ("transformer", False)])
def test_screened_mapping_measurements_score_every_sample_as_the_full_run(name, labelled, monkeypatch):
    model, reports, dataset = calibrated(name, 256, labelled)
    layers, ranges = reports["partition"].layers, reports["calibrate"].input_range
    scorer = Scorer(model, dataset)
    sessions = []
    real = scorer_module.session_for
    monkeypatch.setattr(
        scorer_module, "session_for", lambda *a, **k: sessions.append(CountingSession(real(*a, **k))) or sessions[-1]
    )
    mappings = [{layer.name: "int8" for layer in layers}, {layer.name: ANALOG for layer in layers}]
    mappings.append({layer.name: ANALOG if index % 2 else "int4" for index, layer in enumerate(layers)})
    for mapping in mappings:
        full, screened = (
            Measurer(model, as_target("hermes"), layers, ranges, scorer, 3, screened=flag).measure(
                mapping, [86400.0], 2, per_sample=True
            )
            for flag in (False, True)
        )
        assert all(np.array_equal(a, b) for a, b in zip(full[0], screened[0]))
    full_int8, screened_int8 = (session.rows for session in sessions[:2])
    assert screened_int8 < full_int8 / 2  # all-INT8 barely moves the outputs: most samples are skipped


def test_the_screen_orders_by_gap_and_restores_the_data_order():
    outputs = np.array([[0.0, 5.0, 1.0], [2.0, 2.1, 0.0], [9.0, 0.0, 0.0], [1.0, 1.5, 1.4]], dtype=np.float32)
    from hetmap.sim.metrics import Metric

    screen = screen_for(Metric("top1"), outputs, None, outputs)
    assert list(screen.order) == [1, 3, 0, 2]  # relative gaps 0.048, 0.067, 0.8, 1.0
    measured = outputs[screen.order][:2] + 0.01
    restored = screen.complete(measured)
    assert np.allclose(restored[[1, 3]], outputs[[1, 3]] + 0.01) and np.array_equal(restored[[0, 2]], outputs[[0, 2]])
    assert screen_for(Metric("cosine"), outputs, None, outputs) is None
    track = Track(screen)
    track.add(np.array([[2.2, 2.1, 0.0], [1.0, 1.5, 1.4]], dtype=np.float32))  # the first flips
    assert track.lost == 1 and track.done == 2 and not track.settled  # fewer rows than MIN_ROWS
    assert track.drop_at_least() == 0.25  # agreement: nothing left can win back what was lost

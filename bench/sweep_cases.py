"""The models of the third-party sweep: how to build each one and inputs that fit it.

Three sources, none written for hetmap: skl2onnx conversions of fitted
scikit-learn estimators, torch.onnx exports (dynamo and TorchScript) of
the families in `bench.sweep_nets`, and ONNX files that installed PyPI
packages ship: trained models, and the model-zoo graphs in onnx's test data.
A package that is not installed is skipped with a note (`pip install
--no-deps magika silero-vad rapidocr-onnxruntime nudenet` brings them all;
only their .onnx files are read, never imported). Models too large
for hermes's 64 tiles all-analog are compiled all-INT8. Left out: onnx's
single-operator test models (opset 6 and 7, below the opset 9 hetmap
reads; many no longer run in onnxruntime).
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

BATCH = 2


@dataclass(frozen=True)
class Case:
    name: str
    exporter: str
    build: Callable[[Path], Path]  # writes (or finds) the model, given a scratch folder
    shapes: dict[str, tuple[int, ...]] | None = None  # full input shapes; default: declared, batch BATCH
    values: dict[str, np.ndarray] | None = None  # inputs that must hold particular values
    int_high: int = 4  # integer inputs are drawn from [0, int_high)
    mapping: str | None = "all-analog"  # None: the solver (sensitivity + MILP) with one seed
    data: bool = True  # False: inputs whose leading dimensions differ (no one data file): shapes only
    quick: bool = False


def feeds(case: Case, proto: onnx.ModelProto, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Seeded inputs for every fed input: normal floats, small integers, the case's fixed values."""
    initializers = {tensor.name for tensor in proto.graph.initializer}
    arrays = {}
    for value in proto.graph.input:
        if value.name in initializers:
            continue
        if case.values and value.name in case.values:
            arrays[value.name] = case.values[value.name]
            continue
        tensor_type = value.type.tensor_type
        shape = (case.shapes or {}).get(value.name) or tuple(
            d.dim_value if d.dim_value > 0 else BATCH for d in tensor_type.shape.dim
        )
        dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor_type.elem_type)
        if np.issubdtype(dtype, np.floating):
            arrays[value.name] = rng.standard_normal(shape).astype(dtype)
        else:
            arrays[value.name] = rng.integers(0, case.int_high, shape).astype(dtype)
    return arrays


# scikit-learn through skl2onnx


def _sklearn_data(classes: int = 3) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((120, 6)).astype(np.float32)
    labels = np.digitize(x[:, 0] + x[:, 2], [-0.5, 0.5] if classes == 3 else [0.0]).astype(np.int64)
    return x, labels, x @ rng.standard_normal(6)


def _sklearn(make_estimator: Callable[[], object], target: str, classes: int = 3, options: dict | None = None):
    def build(folder: Path) -> Path:
        from skl2onnx import to_onnx

        x, labels, values = _sklearn_data(classes)
        y = {"labels": labels, "values": values, "two values": np.stack([values, -2 * values], 1)}[target]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # small MLPs stop before converging
            estimator = make_estimator().fit(x, y)
            proto = to_onnx(estimator, x[:1], options=options, target_opset=21)
        path = folder / "model.onnx"
        onnx.save(proto, path)
        return path

    return build


def sklearn_cases() -> list[Case]:
    from sklearn.linear_model import LinearRegression, LogisticRegression, Ridge, SGDClassifier
    from sklearn.neural_network import MLPClassifier, MLPRegressor
    from sklearn.svm import LinearSVC

    no_zipmap = {"zipmap": False}
    specs = [
        (
            "MLPClassifier",
            lambda: MLPClassifier(hidden_layer_sizes=(16, 8), max_iter=50, random_state=0),
            "labels",
            3,
            no_zipmap,
            True,
        ),
        (
            "MLPRegressor",
            lambda: MLPRegressor(hidden_layer_sizes=(16,), max_iter=50, random_state=0),
            "values",
            3,
            None,
            False,
        ),
        ("LogisticRegression binary", LogisticRegression, "labels", 2, no_zipmap, True),
        ("LogisticRegression 3 classes", LogisticRegression, "labels", 3, no_zipmap, False),
        ("LogisticRegression ZipMap", LogisticRegression, "labels", 3, None, False),
        ("LinearRegression", LinearRegression, "values", 3, None, True),
        ("LinearRegression 2 targets", LinearRegression, "two values", 3, None, False),
        ("Ridge", Ridge, "values", 3, None, False),
        ("LinearSVC binary", LinearSVC, "labels", 2, None, False),
        ("LinearSVC 3 classes", LinearSVC, "labels", 3, None, False),
        ("SGDClassifier", lambda: SGDClassifier(random_state=0), "labels", 3, no_zipmap, False),
        ("SGDClassifier log-loss", lambda: SGDClassifier("log_loss", random_state=0), "labels", 3, no_zipmap, False),
    ]
    return [
        Case(name, "skl2onnx", _sklearn(make, target, classes, options), mapping=None, quick=quick)
        for name, make, target, classes, options, quick in specs
    ]


# torch.onnx exports of bench.sweep_nets


def _torch(family: str, dynamo: bool, example_shape: tuple[int, ...], dynamic: dict[int, str], tokens: int = 0):
    def build(folder: Path) -> Path:
        import torch

        from bench import sweep_nets

        net = sweep_nets.build(getattr(sweep_nets, family))
        example = torch.randint(0, tokens, example_shape) if tokens else torch.randn(example_shape)
        path = folder / "model.onnx"
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            if dynamo:
                dims = {axis: torch.export.Dim.AUTO for axis in dynamic}
                program = torch.onnx.export(
                    net,
                    (example,),
                    dynamo=True,
                    verbose=False,
                    dynamic_shapes=(dims,),
                    input_names=["x"],
                    output_names=["y"],
                )
                program.save(str(path))
            else:
                torch.onnx.export(
                    net,
                    (example,),
                    str(path),
                    dynamo=False,
                    opset_version=17,
                    input_names=["x"],
                    output_names=["y"],
                    dynamic_axes={"x": dynamic},
                )
        return path

    return build


def torch_cases() -> list[Case]:
    image = (BATCH, 3, 32, 32)
    families = [
        ("VGG", image, {0: "batch"}, 0),
        ("ResNet", image, {0: "batch", 2: "height", 3: "width"}, 0),
        ("MobileNetV2", image, {0: "batch"}, 0),
        ("GPT", (BATCH, 8), {0: "batch", 1: "length"}, 64),
    ]
    cases = []
    for family, shape, dynamic, tokens in families:
        for dynamo, exporter in ((True, "torch dynamo"), (False, "torch TorchScript")):
            cases.append(
                Case(
                    family,
                    exporter,
                    _torch(family, dynamo, shape, dynamic, tokens),
                    shapes={"x": shape},
                    int_high=tokens or 4,
                    quick=not dynamo and family in ("ResNet", "GPT"),
                )
            )
    return cases


# ONNX files shipped inside installed packages


def package_folder(package: str) -> Path | None:
    """Where an installed package lives, found without importing it (its dependencies may be absent)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def _shipped(path: Path) -> Callable[[Path], Path]:
    return lambda folder: path


# package -> (model path inside it, case options); shapes keep each model small and valid for it
SHIPPED = {
    "onnxruntime": [
        ("datasets/logreg_iris.onnx", {"quick": True}),
        ("datasets/mul_1.onnx", {}),
        ("datasets/sigmoid.onnx", {}),
    ],
    "magika": [("models/standard_v3_3/model.onnx", {"name": "magika standard_v3_3", "int_high": 257})],
    "silero_vad": [
        (
            f"data/{name}.onnx",
            {
                "values": {"sr": np.array(16000, dtype=np.int64)},
                "shapes": {"input": (BATCH, 512), "state": (2, BATCH, 128)},
            },
        )
        for name in ("silero_vad", "silero_vad_16k_op15", "silero_vad_half", "silero_vad_op18_ifless")
    ]
    + [
        ("data/silero_vad_16k_sequence.onnx", {"shapes": {"input": (4, 576)}, "data": False}),
        ("data/silero_vad_openvino_16k.onnx", {"shapes": {"input": (1, 576), "state": (2, 1, 128)}, "data": False}),
    ],
    "rapidocr_onnxruntime": [
        ("models/ch_PP-OCRv4_det_infer.onnx", {"shapes": {"x": (1, 3, 64, 64)}, "mapping": "all-digital-int8"}),
        ("models/ch_PP-OCRv4_rec_infer.onnx", {"shapes": {"x": (1, 3, 48, 80)}, "mapping": "all-digital-int8"}),
        ("models/ch_ppocr_mobile_v2.0_cls_infer.onnx", {"shapes": {"x": (1, 3, 48, 96)}}),
    ],
    "nudenet": [("320n.onnx", {"shapes": {"images": (1, 3, 320, 320)}, "mapping": "all-digital-int8"})],
}
LIGHT_MODELS = (
    "bvlc_alexnet",
    "densenet121",
    "inception_v1",
    "inception_v2",
    "resnet50",
    "shufflenet",
    "squeezenet",
    "vgg19",
    "zfnet512",
)


def shipped_cases() -> tuple[list[Case], list[str]]:
    """Cases for the shipped models found, and one note per package that is not installed."""
    cases, notes = [], []
    for package, models in SHIPPED.items():
        folder = package_folder(package)
        if folder is None:
            notes.append(f"{package} is not installed: its {len(models)} shipped model(s) skipped")
            continue
        for relative, options in models:
            options = {"name": Path(relative).stem, **options}
            cases.append(Case(exporter=f"shipped in {package}", build=_shipped(folder / relative), **options))
    onnx_data = package_folder("onnx") / "backend" / "test" / "data"
    for name in LIGHT_MODELS:  # model-zoo graphs whose weights onnx replaced by ConstantOfShape fills
        cases.append(
            Case(
                name,
                "shipped in onnx (weights filled)",
                _shipped(onnx_data / "light" / f"light_{name}.onnx"),
                mapping="all-digital-int8",
            )
        )
    return cases, notes


def all_cases(quick: bool) -> tuple[list[Case], list[str]]:
    shipped, notes = shipped_cases()
    cases = sklearn_cases() + torch_cases() + shipped
    if quick:
        cases = [case for case in cases if case.quick]
    return cases, notes

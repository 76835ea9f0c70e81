"""Fixtures: the `hetmap` CLI run in-process, and models exported by real tools (built once per session)."""

from __future__ import annotations

import io
import sys
import warnings
from dataclasses import dataclass

import numpy as np
import onnx
import pytest


@dataclass
class CliResult:
    exit_code: int
    stdout: str
    stderr: str


@pytest.fixture
def hetmap(monkeypatch, capsys, tmp_path):
    """Run `hetmap ARGS...` in-process (through hetmap.cli.main, as the console script does) in tmp_path."""
    from hetmap.cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("HETMAP_DEBUG", raising=False)

    def run(*args: str) -> CliResult:
        capsys.readouterr()
        monkeypatch.setattr(sys, "argv", ["hetmap", *map(str, args)])
        try:
            main()
            code = 0
        except SystemExit as stop:
            code = stop.code if isinstance(stop.code, int) else 1
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return run


def _torch_cnn():
    """Conv -> BatchNorm -> ReLU -> MaxPool -> Linear, with non-trivial BN statistics; and an example input."""
    import torch

    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1),
        torch.nn.BatchNorm2d(8),
        torch.nn.ReLU(),
        torch.nn.MaxPool2d(2),
        torch.nn.Flatten(),
        torch.nn.Linear(8 * 4 * 4, 10),
    )
    with torch.no_grad():
        net[1].running_mean.uniform_(-1, 1)
        net[1].running_var.uniform_(0.5, 2)
    return net.eval(), torch.randn(1, 3, 8, 8)


@pytest.fixture(scope="session")
def torch_legacy_export() -> onnx.ModelProto:
    """torch.onnx.export(dynamo=False) at opset 9, BN left unfolded, symbolic batch."""
    import torch

    net, example = _torch_cnn()
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            net,
            (example,),
            buffer,
            dynamo=False,
            opset_version=9,
            do_constant_folding=False,
            input_names=["x"],
            output_names=["y"],
            dynamic_axes={"x": {0: "batch"}},
        )
    return onnx.load_from_string(buffer.getvalue())


@pytest.fixture(scope="session")
def torch_attention_exports() -> dict[str, onnx.ModelProto]:
    """A batch-first nn.MultiheadAttention block by both exporters, symbolic batch: inside, the legacy export holds
    [sequence, batch, width] activations; the dynamo one [sequence x batch, width] ones and weights it splits at run time.
    """
    import torch

    torch.manual_seed(0)

    class Block(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.embed, self.attention = torch.nn.Linear(8, 16), torch.nn.MultiheadAttention(16, 2, batch_first=True)
            self.head = torch.nn.Linear(16, 4)

        def forward(self, x):
            h = self.embed(x)
            return self.head((h + self.attention(h, h, h)[0]).mean(1))

    net, example, exports = Block().eval(), torch.randn(2, 6, 8), {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        buffer = io.BytesIO()
        torch.onnx.export(net, (example,), buffer, dynamo=False, input_names=["x"], dynamic_axes={"x": {0: "batch"}})
        exports["legacy"] = onnx.load_from_string(buffer.getvalue())
        batch = {"x": {0: torch.export.Dim("batch")}}
        exports["dynamo"] = torch.onnx.export(
            net, (example,), dynamo=True, verbose=False, dynamic_shapes=batch
        ).model_proto
    return exports


@pytest.fixture(scope="session")
def torch_dynamo_export() -> onnx.ModelProto:
    """torch.onnx.export(dynamo=True): opset 20, IR 10, symbolic batch."""
    import torch

    net, example = _torch_cnn()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            net, (example,), dynamo=True, verbose=False, dynamic_shapes=({0: torch.export.Dim("batch")},)
        )
    return program.model_proto


@pytest.fixture(scope="session")
def sklearn_exports() -> dict[str, onnx.ModelProto]:
    """skl2onnx conversions of small fitted estimators; `*_zipmap` keep skl2onnx's default ZipMap output."""
    from skl2onnx import to_onnx
    from sklearn.linear_model import LinearRegression, LogisticRegression
    from sklearn.neural_network import MLPClassifier

    rng = np.random.default_rng(0)
    x = rng.standard_normal((80, 6)).astype(np.float32)
    labels = (x[:, 0] + x[:, 1] > 0).astype(np.int64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # an MLP stopped early warns about convergence
        mlp = MLPClassifier((16,), max_iter=30, random_state=0).fit(x, labels)
        logistic = LogisticRegression().fit(x, labels)
        linear = LinearRegression().fit(x, x @ rng.standard_normal(6))
    no_zipmap = {"zipmap": False}
    return {
        "mlp": to_onnx(mlp, x[:1], options=no_zipmap),
        "mlp_zipmap": to_onnx(mlp, x[:1]),
        "logistic": to_onnx(logistic, x[:1], options=no_zipmap),
        "linear": to_onnx(linear, x[:1]),
    }

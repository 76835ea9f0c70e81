"""aihwkit 1.1.0 as the reference simulator for a compiled reference model (fidelity test and bench).

The torch module the model was exported from (hetmap.models.architectures)
gets the compiled model's weights (BatchNorm folded where canonicalize
folded it), is converted with aihwkit's convert_to_analog under a
TorchInferenceRPUConfig set up like the target (PCMLikeNoiseModel, global
drift compensation, DAC/ADC bits and bound, tile size, per-column weight
scaling, each layer's static input range from `hetmap.input_range`, no
noise or bound management, no output noise: bench.rpu_config), then
programmed and drifted as `hetmap run` does. It serves the fidelity test and
bench.fidelity; aihwkit imports lazily.
"""

from __future__ import annotations

import ast
import copy
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import onnx_ir as ir

from bench.rpu_config import rpu_config
from hetmap.graph.layouts import WeightLayout
from hetmap.mapping.annotations import LayerAnnotation, read_layer
from hetmap.targets import Target

PARITY_TOLERANCE = 1e-4  # relative to the largest logit, torch vs onnxruntime on the same weights


@dataclass(frozen=True)
class MappedLayer:
    """One analog layer of the compiled model and the torch module that computes it."""

    node: str
    module: str  # dotted path in the torch module
    input_range: float
    block_rows: int


def mapped_layers(annotated: ir.Model, module) -> list[MappedLayer]:
    """The analog layers of an annotated model, each named by its torch module path."""
    modules = dict(module.named_modules())
    layers = []
    for node in annotated.graph:
        annotation = read_layer(node)
        if annotation is None or not annotation.analog:
            continue
        path = _module_path(node, annotation, modules)
        layers.append(MappedLayer(node.name, path, annotation.input_range, annotation.block_rows))
    return layers


def _module_path(node: ir.Node, annotation: LayerAnnotation, modules: dict) -> str:
    """The dynamo exporter's name scopes, else the weight's initializer name (a state_dict key)."""
    scopes = node.metadata_props.get("pkg.torch.onnx.name_scopes")
    candidates = []
    if scopes is not None:
        candidates.append(ast.literal_eval(scopes)[-2])
    weight = annotation.weight
    candidates.append(weight.removesuffix(".weight"))
    for path in candidates:
        if path in modules:
            return path
    raise ValueError(f"node '{node.name}' (weight '{weight}') matches no torch module (tried {candidates})")


def torch_reference(name: str, annotated: ir.Model):
    """The architecture `name` with the annotated model's weights, in eval mode.

    Mapped layers take their weight (and bias) from their node; every other
    state_dict entry from the initializer of that name (the exporters keep
    state_dict keys as initializer names). A BatchNorm whose parameters are
    gone was folded into the layer before it, whose bias then holds the
    folded shift: it becomes an Identity.
    """
    import torch

    from hetmap.models.architectures import ARCHITECTURES

    torch.manual_seed(0)
    module = ARCHITECTURES[name]().eval()
    modules = dict(module.named_modules())
    initializers = {
        n: v.const_value.numpy() for n, v in annotated.graph.initializers.items() if v.const_value is not None
    }
    state = {}
    for node in annotated.graph:
        annotation = read_layer(node)
        if annotation is None:
            continue
        path = _module_path(node, annotation, modules)
        layer = modules[path]
        array = node.inputs[annotation.weight_operand].const_value.numpy()
        layout = WeightLayout(
            node.op_type, array.shape, node.attributes.get_int("group", 1), annotation.weight_transposed
        )
        state[f"{path}.weight"] = layout.to_matrix(array).T.reshape(layer.weight.shape)
        if node.op_type == "Gemm" and (
            node.attributes.get_float("alpha", 1.0) != 1.0 or node.attributes.get_float("beta", 1.0) != 1.0
        ):
            raise ValueError(f"node '{node.name}': Gemm with alpha or beta != 1 has no nn.Linear equivalent")
        if node.op_type in ("Conv", "Gemm") and len(node.inputs) > 2 and node.inputs[2] is not None:
            bias = node.inputs[2].const_value.numpy().reshape(-1)
            if layer.bias is None:  # a BatchNorm folded into a bias-free layer
                layer.bias = torch.nn.Parameter(torch.zeros(bias.shape[0]))
            state[f"{path}.bias"] = bias
    folded = set()
    for key in module.state_dict():
        if key in state:
            continue
        if key in initializers:
            state[key] = initializers[key]
            continue
        owner = key.rsplit(".", 1)[0]
        if isinstance(modules.get(owner), torch.nn.modules.batchnorm._BatchNorm):
            folded.add(owner)
            continue
        raise ValueError(f"model '{name}': no weights for '{key}' in the compiled graph")
    for path in folded:
        parent, _, child = path.rpartition(".")
        setattr(modules[parent] if parent else module, child, torch.nn.Identity())
    module.load_state_dict(
        {k: torch.tensor(v, dtype=torch.float32) for k, v in state.items() if k in module.state_dict()}
    )
    return module.eval()


def check_parity(module, annotated: ir.Model, x: np.ndarray) -> float:
    """Largest |torch - onnxruntime| logit difference relative to the largest logit; raises above tolerance."""
    import torch

    from hetmap.graph import parity

    (expected,) = parity.run_model(annotated, {annotated.graph.inputs[0].name: x})
    with torch.no_grad():
        got = module(torch.from_numpy(x)).numpy()
    error = parity.max_relative_error([expected], [got])
    if error > PARITY_TOLERANCE:
        raise AssertionError(f"torch reference differs from onnxruntime by {error:.2e} (relative)")
    return error


def analog_reference(module, annotated: ir.Model, target: Target, blocks: str = "aihwkit"):
    """convert_to_analog with one rpu_config per layer carrying its calibrated input range.

    blocks="aihwkit": aihwkit's own row split (TileModuleArray: equal parts of
    at most tile-rows rows); blocks="hetmap": hetmap's row blocks (whole input
    channels per tile, e.g. 252 of 256 rows for 3x3 convolutions), to isolate
    the effect of the split from the simulator's semantics.
    """
    from aihwkit.nn.conversion import convert_to_analog

    layers = {layer.module: layer for layer in mapped_layers(annotated, module)}

    def per_layer(path: str, layer, config):
        mapped = layers.get(path)
        if mapped is None and not list(layer.children()):  # containers (Sequential) take the config too
            raise ValueError(f"torch module '{path}' would become analog but hetmap left it unmapped")
        if mapped is None:
            return config
        rows = mapped.block_rows if blocks == "hetmap" else None
        return rpu_config(target, mapped.input_range, rows)

    wrapped = copy.deepcopy(module)
    analog = convert_to_analog(wrapped, rpu_config(target), specific_rpu_config_fun=per_layer, inplace=True)
    converted = {path for path, _ in analog.named_analog_layers() if path}
    missing = {p for p in layers} - {p.removeprefix("module.") for p in converted}
    if missing:
        raise ValueError(f"aihwkit did not convert {sorted(missing)}")
    return analog.eval()


def scores_over_drift(
    analog,
    x: np.ndarray,
    drift_seconds: list[float],
    seeds: int,
    metrics: dict[str, Callable[[np.ndarray], float]],
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Each metric of the outputs, [drift time, draw]: a draw programs the chip once, then reads it at every drift time."""
    import torch

    inputs = torch.from_numpy(x)
    result = {name: np.zeros((len(drift_seconds), seeds)) for name in metrics}
    with torch.no_grad():
        for draw in range(seeds):
            torch.manual_seed(1_000_003 * seed + draw)
            analog.program_analog_weights()
            for index, t in enumerate(drift_seconds):
                analog.drift_analog_weights(t)
                outputs = analog(inputs).numpy()
                for name, metric in metrics.items():
                    result[name][index, draw] = metric(outputs)
    return result


def accuracy_over_drift(
    analog, x: np.ndarray, y: np.ndarray, drift_seconds: list[float], seeds: int, seed: int = 0
) -> np.ndarray:
    """Top-1 accuracy [drift time, draw]."""
    labels = np.asarray(y).reshape(-1)
    metric = {"accuracy": lambda outputs: float(np.mean(outputs.argmax(axis=1) == labels))}
    return scores_over_drift(analog, x, drift_seconds, seeds, metric, seed)["accuracy"]

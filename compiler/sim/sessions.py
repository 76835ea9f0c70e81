"""onnxruntime sessions over an onnx-ir model, its weights read in place rather than serialised.

Serialising a large model's weights into the payload, and onnxruntime
parsing them back, cost a copy each and most of a session's build time;
instead every large initializer is declared as external data and handed to
onnxruntime as an OrtValue over the model's own array, which the session
keeps. Initializers named in `fed` become inputs, so draws need no rebuild.
"""

from __future__ import annotations

import ctypes
import gc
import sys

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort

from hetmap.graph.modelio import proto_without
from hetmap.sim import jobs

IN_PLACE_ABOVE_BYTES = 1024
# DequantizeLinear of a constant weight runs on every inference in onnxruntime, and keeps its
# Conv off the fast (NCHWc) kernels: folded to float here, up to this many bytes per session.
FOLD_DEQUANTIZE_BYTES = 256 << 20
RELEASE_FROM_BYTES = 64 << 20  # models with more weights free each measurement's graphs at once
ARENA_BELOW_BYTES = 256 << 20  # sessions over more weights (as float32) allocate without onnxruntime's memory arena
_IN_PLACE_DTYPES = {np.dtype(t) for t in (np.float16, np.float32, np.float64, np.int8, np.uint8, np.int32, np.int64)}


def release_graphs(model: ir.Model) -> None:
    """Free the simulation graphs of `model` no longer used and hand their memory back to the system.

    onnx_ir graphs are reference cycles, which hold their weights until Python's cyclic collector runs
    (large arrays do not make it run); glibc then keeps freed blocks in its heaps unless trimmed. A global
    mmap threshold did the same but cost every large allocation (~8 % of a resnet20 sensitivity pass).
    A full collection costs more the more Python objects live, so small models skip it: 3x the test
    suite's time when every measurement collected.
    """
    if jobs.weight_bytes(model) < RELEASE_FROM_BYTES:
        return
    gc.collect()
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)


def freeze_survivors(model: ir.Model) -> None:
    """Collect, then leave every object still alive out of later collections (`gc.unfreeze` ends it).

    For where what is alive outlives the measurements that follow (a pass's end: the model and the
    results; first-order's end: torch's modules): each of a large model's measurements runs a full
    collection (`release_graphs`), which walks every live object, about 0.1 s once torch is loaded and
    some 130 times in a ResNet-50 compile. A frozen object is still freed once nothing refers to it; only
    a reference cycle among frozen objects waits for the unfreeze.
    """
    if jobs.weight_bytes(model) >= RELEASE_FROM_BYTES:
        gc.collect()
        gc.freeze()


def _malloc_trim():
    """glibc's malloc_trim, or None where the C library has none."""
    if not sys.platform.startswith("linux"):
        return None
    return getattr(ctypes.CDLL(None), "malloc_trim", None)


_MALLOC_TRIM = _malloc_trim()


def session_for(model: ir.Model, fed: set[str], feed_matrices: bool = False) -> ort.InferenceSession:
    """A CPU session over `model` (initializers named in `fed` become inputs), its weights read in place.

    onnxruntime copies every constant initializer it is given (measured with 1.32), even one handed
    over as an OrtValue; an input is read where it lies. With `feed_matrices`, the large matrices of
    MatMul and Gemm, which gain nothing from being constant once prepacking is off, become inputs too:
    `session.hetmap_feeds` holds them for every run.
    """
    matrices = _matrices(model) - fed if feed_matrices else set()
    fed = fed | matrices
    moved = [value for name, value in model.graph.initializers.items() if name in fed or _in_place(value)]
    proto = proto_without(model, moved)
    names, arrays = [], []
    fed_folded = _matrix_operands(proto) if feed_matrices else set()
    folded = _fold_dequantize(model, proto, fed_folded)
    for name, array in folded.items():
        if name in fed_folded:
            proto.graph.input.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, array.shape))
            continue
        proto.graph.initializer.append(_external(name, onnx.TensorProto.FLOAT, array))
        names.append(name)
        arrays.append(array)
    used = {name for node in proto.graph.node for name in node.input} if folded else None
    for value in moved:
        if used is not None and value.name not in used and value.name not in fed:
            continue  # read only by a folded DequantizeLinear
        tensor = value.const_value
        if value.name in fed:
            proto.graph.input.append(
                onnx.helper.make_tensor_value_info(value.name, int(tensor.dtype), list(tensor.shape))
            )
            continue
        array = np.ascontiguousarray(tensor.numpy())
        proto.graph.initializer.append(_external(value.name, int(tensor.dtype), array))
        names.append(value.name)
        arrays.append(array)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = jobs.SESSION_THREADS
    # Prepacked MatMul/Gemm weights are a second copy of them; inference measured no faster with it.
    options.add_session_config_entry("session.disable_prepacking", "1")
    # onnxruntime's arena keeps its largest activations (a dequantised weight) for good, and grows by doubling.
    options.enable_cpu_mem_arena = _float_bytes(model) < ARENA_BELOW_BYTES
    values = [ort.OrtValue.ortvalue_from_numpy(array) for array in arrays]
    if names:
        options.add_external_initializers(names, values)
    session = ort.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])
    session.hetmap_weights = (arrays, values)  # read in place: they must live as long as the session
    session.hetmap_feeds = {name: folded[name] for name in fed_folded if name in folded}
    for name in matrices:
        session.hetmap_feeds[name] = np.ascontiguousarray(model.graph.initializers[name].const_value.numpy())
    return session


def _matrix_operands(proto: onnx.ModelProto) -> set[str]:
    """Values read only as the weight operand (input 1) of MatMul or Gemm nodes."""
    uses: dict[str, bool] = {}
    for node in proto.graph.node:
        for index, name in enumerate(node.input):
            uses[name] = uses.get(name, True) and node.op_type in ("MatMul", "Gemm") and index == 1
    return {name for name, only in uses.items() if only}


def _matrices(model: ir.Model) -> set[str]:
    """Initializers above IN_PLACE_ABOVE_BYTES read only as the weight operand of MatMul or Gemm nodes."""
    readers: dict[str, set[tuple[str, int]]] = {}
    for node in model.graph:
        for index, value in enumerate(node.inputs):
            if value is not None and value.is_initializer():
                readers.setdefault(value.name, set()).add((node.op_type, index))
    return {
        name
        for name, uses in readers.items()
        if all(op in ("MatMul", "Gemm") and index == 1 for op, index in uses)
        and _in_place(model.graph.initializers[name])
    }


def _fold_dequantize(model: ir.Model, proto: onnx.ModelProto, fed: set[str]) -> dict[str, np.ndarray]:
    """Float values of the DequantizeLinear nodes on constant weights, those nodes removed from `proto`.

    (q - zero_point) * scale in float32, as onnxruntime's kernel computes it, so the values are the same.
    Outputs named in `fed` fold whatever their size: an input is not copied, and a large weight folded
    once spares every run its dequantised copy. The quantised weights no node reads then leave `proto`.
    """
    constants = model.graph.initializers
    bodies = (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
    if any(attribute.type in bodies for node in proto.graph.node for attribute in node.attribute):
        return {}  # bodies may read the weights too: left as they are
    folded, kept, total, sources = {}, [], 0, set()
    for node in proto.graph.node:
        inputs = [name for name in node.input if name]
        foldable = (
            node.op_type == "DequantizeLinear"
            and node.domain in ("", "ai.onnx")
            and all(name in constants and constants[name].const_value is not None for name in inputs)
            and not any(attribute.name == "block_size" and attribute.i for attribute in node.attribute)
        )
        size = 4 * constants[inputs[0]].const_value.size if foldable and node.output[0] not in fed else 0
        if not foldable or total + size > FOLD_DEQUANTIZE_BYTES:
            kept.append(node)
            continue
        total += size
        sources.update(inputs)
        q, scale, *zero = (constants[name].const_value.numpy() for name in inputs)
        axis = next((attribute.i for attribute in node.attribute if attribute.name == "axis"), 1)
        shape = [1] * q.ndim
        if scale.ndim:
            shape[axis] = -1
        values = q.astype(np.float32, order="C")  # a transposed weight's view must not stay one: fed in place
        if zero:
            values -= zero[0].astype(np.float32).reshape(shape)
        values *= scale.astype(np.float32).reshape(shape)
        folded[node.output[0]] = values
    if folded:
        del proto.graph.node[:]
        proto.graph.node.extend(kept)
        _drop_unread(proto.graph, sources)
    return folded


def _drop_unread(graph: onnx.GraphProto, names: set[str]) -> None:
    """Initializers in `names` that nothing reads any more: onnxruntime would parse them only to drop them."""
    read = {name for node in graph.node for name in node.input}
    unread = names - read - {value.name for value in (*graph.input, *graph.output)}
    for index in reversed(range(len(graph.initializer))):
        if graph.initializer[index].name in unread:
            del graph.initializer[index]


def _float_bytes(model: ir.Model) -> int:
    """The model's weights as float32: what its dequantised weights take at run time, whatever they are stored as."""
    return sum(
        4 * value.const_value.size for value in model.graph.initializers.values() if value.const_value is not None
    )


def _in_place(value: ir.Value) -> bool:
    tensor = value.const_value
    return tensor is not None and tensor.nbytes > IN_PLACE_ABOVE_BYTES and tensor.dtype.numpy() in _IN_PLACE_DTYPES


def _external(name: str, data_type: int, array: np.ndarray) -> onnx.TensorProto:
    """A TensorProto whose data onnxruntime takes from the OrtValue of the same name."""
    tensor = onnx.TensorProto(name=name, data_type=data_type, dims=array.shape)
    tensor.data_location = onnx.TensorProto.EXTERNAL
    for key, text in (("location", "hetmap-in-memory"), ("offset", "0"), ("length", str(array.nbytes))):
        entry = tensor.external_data.add()
        entry.key, entry.value = key, text
    return tensor

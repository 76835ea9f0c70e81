"""Spatial ONNX ops in torch: convolution, pooling, padding and resizing, for hetmap.train.ops' registry.

Padding follows onnxruntime exactly (asymmetric pads, auto_pad, ceil_mode):
where torch's own padding cannot express it, the op pads or crops the
tensor itself and lets torch run unpadded.
"""

from __future__ import annotations

import math

import onnx_ir as ir
import torch
import torch.nn.functional as F

from hetmap.train.ops import int_values, op, optional_inputs

_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_CONV_TRANSPOSE = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}
_MAX_POOL = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}


def _weight_rank_limit(node: ir.Node) -> str | None:
    shape = node.inputs[1].shape
    spatial = len(shape) - 2 if shape is not None else 2
    return None if spatial in _CONV else f"{spatial}-D"


def _kernel_rank_limit(node: ir.Node) -> str | None:
    spatial = len(node.attributes.get_ints("kernel_shape", ()))
    return None if spatial in _CONV else f"{spatial}-D"


def _declared_pads(node: ir.Node, spatial: int) -> tuple[list[int], list[int]]:
    """Begin and end pads from the `pads` attribute (none with an auto_pad)."""
    if node.attributes.get_string("auto_pad", "NOTSET") != "NOTSET":
        return [0] * spatial, [0] * spatial
    pads = list(node.attributes.get_ints("pads", [0] * 2 * spatial))
    return pads[:spatial], pads[spatial:]


def _split_total(total: list[int], more_at_end: bool) -> tuple[list[int], list[int]]:
    """Begin and end pads that add up to `total`, the odd one at the end or at the beginning."""
    small, large = [t // 2 for t in total], [t - t // 2 for t in total]
    return (small, large) if more_at_end else (large, small)


def _pads(node: ir.Node, sizes, kernel, strides, dilations) -> tuple[list[int], list[int]]:
    """Begin and end padding per spatial axis, from `pads` or `auto_pad` (SAME: ceil(size / stride) outputs)."""
    auto_pad = node.attributes.get_string("auto_pad", "NOTSET")
    if auto_pad not in ("SAME_UPPER", "SAME_LOWER"):
        return _declared_pads(node, len(sizes))
    total = [
        max(0, (-(-n // s) - 1) * s + (k - 1) * d + 1 - n) for n, k, s, d in zip(sizes, kernel, strides, dilations)
    ]
    return _split_total(total, auto_pad == "SAME_UPPER")


def _torch_pads(begin, end) -> list[int]:
    """F.pad's order: the last axis first."""
    return [p for b, e in reversed(list(zip(begin, end))) for p in (b, e)]


def _geometry(node: ir.Node, x: torch.Tensor, kernel) -> tuple[list[int], list[int], list[int], list[int]]:
    """Strides, dilations, begin and end pads of a convolution or pooling window."""
    spatial = len(kernel)
    strides = list(node.attributes.get_ints("strides", [1] * spatial))
    dilations = list(node.attributes.get_ints("dilations", [1] * spatial))
    begin, end = _pads(node, x.shape[2:], kernel, strides, dilations)
    return strides, dilations, begin, end


@op("Conv", limit=_weight_rank_limit)
def _conv(node, inputs):
    x, weight, bias = optional_inputs(inputs, 3)
    strides, dilations, begin, end = _geometry(node, x, weight.shape[2:])
    padding = begin
    if begin != end:
        x, padding = F.pad(x, _torch_pads(begin, end)), 0
    return _CONV[weight.dim() - 2](x, weight, bias, strides, padding, dilations, node.attributes.get_int("group", 1))


def _conv_transpose_pads(node, x, kernel, strides, dilations, output_padding) -> tuple[list[int], list[int]]:
    """What to crop from the full transposed output: `pads`, or what output_shape or auto_pad SAME leaves."""
    sizes = x.shape[2:]
    auto_pad = node.attributes.get_string("auto_pad", "NOTSET")
    wanted = node.attributes.get_ints("output_shape", None)
    if wanted is None and auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        wanted = [n * s for n, s in zip(sizes, strides)]
    if wanted is None:
        return _declared_pads(node, len(sizes))
    total = [
        max(0, (n - 1) * s + a + (k - 1) * d + 1 - w)
        for n, s, a, k, d, w in zip(sizes, strides, output_padding, kernel, dilations, wanted[-len(sizes) :])
    ]
    return _split_total(total, auto_pad == "SAME_UPPER")


@op("ConvTranspose", limit=_weight_rank_limit)
def _conv_transpose(node, inputs):
    x, weight, bias = optional_inputs(inputs, 3)
    kernel, spatial = weight.shape[2:], weight.dim() - 2
    strides = list(node.attributes.get_ints("strides", [1] * spatial))
    dilations = list(node.attributes.get_ints("dilations", [1] * spatial))
    output_padding = list(node.attributes.get_ints("output_padding", [0] * spatial))
    begin, end = _conv_transpose_pads(node, x, kernel, strides, dilations, output_padding)
    group = node.attributes.get_int("group", 1)
    full = _CONV_TRANSPOSE[spatial](x, weight, None, strides, 0, 0, group, dilations)
    # crop the padding (negative F.pad) and extend by output_padding at the end
    y = F.pad(full, _torch_pads([-b for b in begin], [a - e for a, e in zip(output_padding, end)]))
    return y if bias is None else y + bias.reshape(-1, *[1] * spatial)


def _pool_window(node: ir.Node, x: torch.Tensor) -> tuple[list, list, list, list, list, list]:
    """Kernel, strides, dilations, begin and end pads, and the end pads a floor-mode pool needs instead.

    Padding (or cropping) each axis to the last of these gives onnxruntime's
    output size; with ceil_mode a last window that starts in the end padding is dropped.
    """
    kernel = list(node.attributes.get_ints("kernel_shape"))
    strides, dilations, begin, end = _geometry(node, x, kernel)
    ceil_mode = node.attributes.get_int("ceil_mode", 0)
    floor_ends = []
    for n, k, s, d, b, e in zip(x.shape[2:], kernel, strides, dilations, begin, end):
        span = n + b + e - (k - 1) * d - 1
        count = (-(-span // s) if ceil_mode else span // s) + 1
        if ceil_mode and (count - 1) * s >= n + b:
            count -= 1
        floor_ends.append((count - 1) * s + (k - 1) * d + 1 - n - b)
    return kernel, strides, dilations, begin, end, floor_ends


def _max_pool_limit(node: ir.Node) -> str | None:
    return "Indices output" if len(node.outputs) > 1 and node.outputs[1].name else _kernel_rank_limit(node)


@op("MaxPool", limit=_max_pool_limit)
def _max_pool(node, inputs):
    x = inputs[0]
    kernel, strides, dilations, begin, _, floor_ends = _pool_window(node, x)
    lowest = torch.finfo(x.dtype).min if x.is_floating_point() else torch.iinfo(x.dtype).min
    padded = F.pad(x, _torch_pads(begin, floor_ends), value=lowest)
    return _MAX_POOL[len(kernel)](padded, kernel, strides, 0, dilations)


def _window_sum(x: torch.Tensor, kernel, strides, dilations) -> torch.Tensor:
    """Sum over each pooling window: a depthwise convolution with ones (dilations included)."""
    ones = x.new_ones((x.shape[1], 1, *kernel))
    return _CONV[len(kernel)](x, ones, None, strides, 0, dilations, x.shape[1])


@op("AveragePool", limit=_kernel_rank_limit)
def _average_pool(node, inputs):
    x = inputs[0]
    kernel, strides, dilations, begin, end, floor_ends = _pool_window(node, x)
    window = (kernel, strides, dilations)
    # what each window divides by: its input elements, and its declared pads with count_include_pad
    counted = x.new_ones((1, 1, *x.shape[2:]))
    if node.attributes.get_int("count_include_pad", 0):
        counted = F.pad(counted, _torch_pads(begin, end), value=1.0)
        counted = F.pad(counted, _torch_pads([0] * len(end), [f - e for f, e in zip(floor_ends, end)]))
    else:
        counted = F.pad(counted, _torch_pads(begin, floor_ends))
    return _window_sum(F.pad(x, _torch_pads(begin, floor_ends)), *window) / _window_sum(counted, *window)


@op("GlobalAveragePool", "GlobalMaxPool")
def _global_pool(node, inputs):
    x = inputs[0]
    dims = tuple(range(2, x.dim()))
    return x.mean(dims, keepdim=True) if node.op_type == "GlobalAveragePool" else x.amax(dims, keepdim=True)


def _pad_indices(mode: str, size: int, begin: int, end: int, device) -> torch.Tensor:
    """Source index of each position of an axis padded by `mode` (negative pads crop)."""
    index = torch.arange(-begin, size + end, device=device)
    if mode == "edge":
        return index.clamp(0, size - 1)
    if mode == "wrap":
        return index.remainder(size)
    period = max(2 * (size - 1), 1)  # reflect: mirror about the first and last elements
    index = index.abs().remainder(period)
    return torch.where(index >= size, period - index, index)


@op("Pad")
def _pad(node, inputs):
    x, pads, value, axes = optional_inputs(inputs, 4)
    pads = int_values(pads)
    axes = [a % x.dim() for a in int_values(axes)] if axes is not None else list(range(x.dim()))
    begin = dict(zip(axes, pads[: len(axes)]))
    end = dict(zip(axes, pads[len(axes) :]))
    mode = node.attributes.get_string("mode", "constant")
    if mode == "constant":
        fill = value.item() if value is not None else 0
        everywhere = range(x.dim())
        pads = _torch_pads([begin.get(a, 0) for a in everywhere], [end.get(a, 0) for a in everywhere])
        return F.pad(x, pads, value=fill)
    for axis in axes:
        x = x.index_select(axis, _pad_indices(mode, x.shape[axis], begin[axis], end[axis], x.device))
    return x


_ROUNDINGS = {
    "round_prefer_floor": lambda x: torch.ceil(x - 0.5),
    "round_prefer_ceil": lambda x: torch.floor(x + 0.5),
    "floor": torch.floor,
    "ceil": torch.ceil,
}


def _source_coordinates(mode: str, out: torch.Tensor, scale: float, size: int, count: int, roi) -> torch.Tensor:
    """Where each output position samples the input axis (coordinate_transformation_mode)."""
    if mode == "align_corners":
        return out * ((size - 1) / (count - 1)) if count > 1 else out * 0
    if mode == "asymmetric":
        return out / scale
    if mode == "pytorch_half_pixel" and count == 1:
        return out * 0
    if mode == "tf_crop_and_resize":
        start, end = roi
        if count == 1:
            return out * 0 + 0.5 * (start + end) * (size - 1)
        return start * (size - 1) + out * ((end - start) * (size - 1) / (count - 1))
    half_pixel = (out + 0.5) / scale - 0.5
    if mode == "half_pixel_symmetric":
        return half_pixel + size / 2 * (1 - count / (scale * size))
    return half_pixel


def _cubic_weights(t: torch.Tensor, a: float) -> torch.Tensor:
    """Keys' cubic convolution weights of taps -1, 0, 1, 2 at fraction `t`."""
    far = lambda d: ((a * d - 5 * a) * d + 8 * a) * d - 4 * a  # noqa: E731, |d| in [1, 2]
    near = lambda d: ((a + 2) * d - (a + 3)) * d * d + 1  # noqa: E731, |d| in [0, 1]
    return torch.stack([far(t + 1), near(t), near(1 - t), far(2 - t)], -1)


def _taps(node: ir.Node, x: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Input indices and weights, (outputs, taps), that interpolate each output position."""
    mode = node.attributes.get_string("mode", "nearest")
    if mode == "nearest":
        rounding = _ROUNDINGS[node.attributes.get_string("nearest_mode", "round_prefer_floor")]
        return rounding(x).clamp(0, size - 1).long()[:, None], torch.ones_like(x)[:, None]
    if mode == "linear":
        x = x.clamp(0, size - 1)
        low = x.floor()
        indices = torch.stack([low, (low + 1).clamp(max=size - 1)], -1).long()
        return indices, torch.stack([1 - (x - low), x - low], -1)
    low = x.floor()
    indices = low[:, None].long() + torch.arange(-1, 3, device=x.device)
    weights = _cubic_weights(x - low, node.attributes.get_float("cubic_coeff_a", -0.75))
    if node.attributes.get_int("exclude_outside", 0):
        weights = torch.where((indices >= 0) & (indices < size), weights, 0.0)
        weights = weights / weights.sum(-1, keepdim=True)
    return indices.clamp(0, size - 1), weights


@op("Resize", limit=lambda node: "antialias" if node.attributes.get_int("antialias", 0) else None)
def _resize(node, inputs):
    x, roi, scales, sizes = [None if t is None or t.numel() == 0 else t for t in optional_inputs(inputs, 4)]
    attributes = node.attributes
    axes = [a % x.dim() for a in attributes.get_ints("axes", range(x.dim()))]
    shape = [x.shape[a] for a in axes]
    coordinates = attributes.get_string("coordinate_transformation_mode", "half_pixel")
    bounds = roi.tolist() if roi is not None else [0.0] * len(axes) + [1.0] * len(axes)
    rois = list(zip(bounds[: len(axes)], bounds[len(axes) :]))
    if sizes is not None:
        counts = int_values(sizes)
        policy = attributes.get_string("keep_aspect_ratio_policy", "stretch")
        if policy == "stretch":
            factors = [m / n for m, n in zip(counts, shape)]
        else:
            factor = (min if policy == "not_larger" else max)(m / n for m, n in zip(counts, shape))
            factors, counts = [factor] * len(axes), [math.floor(factor * n + 0.5) for n in shape]
    else:
        factors = scales.tolist()
        counts = [
            math.floor(n * (end - start if coordinates == "tf_crop_and_resize" else 1.0) * f)
            for n, f, (start, end) in zip(shape, factors, rois)
        ]
    fill = attributes.get_float("extrapolation_value", 0.0)
    for axis, size, count, factor, axis_roi in zip(axes, shape, counts, factors, rois):
        if count == size and factor == 1.0 and coordinates != "tf_crop_and_resize":
            continue
        out = torch.arange(count, dtype=torch.float32, device=x.device)
        source = _source_coordinates(coordinates, out, factor, size, count, axis_roi)
        indices, weights = _taps(node, source, size)
        along = [1] * x.dim()
        along[axis] = count
        taps = range(indices.shape[1])
        y = sum(x.index_select(axis, indices[:, t]) * weights[:, t].reshape(along).to(x.dtype) for t in taps)
        if coordinates == "tf_crop_and_resize":
            y = torch.where(((source < 0) | (source > size - 1)).reshape(along), fill, y)
        x = y
    return x

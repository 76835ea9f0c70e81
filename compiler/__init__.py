"""hetmap: map ONNX networks onto heterogeneous analog/digital accelerators."""

__version__ = "0.1.0"

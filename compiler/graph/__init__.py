"""The model as a graph: ONNX I/O, shapes, parity runs, data sets, weight layouts."""

"""Training in torch: the ONNX interpreter and its op registry, the supernetwork, adaptation."""

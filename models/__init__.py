"""Reference models bundled with hetmap: small trained networks exported to ONNX, with their data, so the demo and tests map real models."""

from importlib import resources
from pathlib import Path

DEFAULT_MODEL = "cnn"


def reference_path(filename: str) -> Path:
    """Path of a bundled file such as "cnn.onnx" or "cnn.test.npz"; one clear error if it is missing."""
    path = Path(str(resources.files(__name__) / filename))
    if not path.is_file():
        available = sorted(p.name for p in path.parent.iterdir() if p.suffix in (".onnx", ".npz", ".json"))
        raise FileNotFoundError(
            f"no bundled reference file {filename!r} in {path.parent}; available: {', '.join(available) or 'none'}"
            " (python -m hetmap.models.train rebuilds them)"
        )
    return path

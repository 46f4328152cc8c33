"""semobridge_export: a fitted SeMoBridge model as one fused graph from uint8 pixels to class scores.

Formats (see FORMATS / `semobridge-export --help`): ONNX (fp32, fp16, dynamic int8), a
torch.export program (.pt2) and TensorRT engines.
"""
import importlib
import os

# ONNX Runtime (1.2x+ on Linux) writes a device id and an event database under ~/.cache unless this is
# set before it is first imported; nothing we ship writes outside the paths the user gave.
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

_EXPORTS = {
    "export": "exporter", "FORMATS": "formats", "format_table": "formats", "INPUT_KINDS": "fused", "OUTPUT_NAMES": "fused",
    "FusedClassifier": "fused", "CLASS_NAMES_KEY": "metadata", "FORMAT_VERSION": "metadata", "METADATA_KEY": "metadata",
    "build_metadata": "metadata", "read_metadata": "metadata", "Preprocess": "preprocess", "load_program": "program",
    "library_scores": "reference", "reference_scores": "reference", "session": "reference", "Profile": "tensorrt",
    "TensorRTError": "tensorrt", "build_engine": "tensorrt",
}


def __getattr__(name: str):
    """The public names load on first use, so that `semobridge-export --help` does not import PyTorch."""
    if name not in _EXPORTS:
        raise AttributeError(f"module 'semobridge_export' has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)


__all__ = [
    "CLASS_NAMES_KEY",
    "FORMATS",
    "FORMAT_VERSION",
    "INPUT_KINDS",
    "METADATA_KEY",
    "OUTPUT_NAMES",
    "FusedClassifier",
    "Preprocess",
    "Profile",
    "TensorRTError",
    "build_engine",
    "build_metadata",
    "export",
    "format_table",
    "library_scores",
    "load_program",
    "read_metadata",
    "reference_scores",
    "session",
]

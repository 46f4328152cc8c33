"""semobridge_export: a fitted SeMoBridge model as one fused graph from uint8 pixels to class scores.

Formats (see FORMATS / `semobridge-export --help`): ONNX (fp32, fp16, dynamic int8), a
torch.export program (.pt2) and TensorRT engines.
"""
import os

# ONNX Runtime (1.2x+ on Linux) writes a device id and an event database under ~/.cache unless this is
# set before it is first imported; nothing we ship writes outside the paths the user gave.
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

from .exporter import export  # noqa: E402
from .formats import FORMATS, format_table  # noqa: E402
from .fused import INPUT_KINDS, OUTPUT_NAMES, FusedClassifier  # noqa: E402
from .metadata import CLASS_NAMES_KEY, FORMAT_VERSION, METADATA_KEY, build_metadata, read_metadata  # noqa: E402
from .preprocess import Preprocess  # noqa: E402
from .program import load_program  # noqa: E402
from .reference import library_scores, reference_scores, session  # noqa: E402
from .tensorrt import Profile, TensorRTError, build_engine  # noqa: E402

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

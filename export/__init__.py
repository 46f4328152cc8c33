"""semobridge_export: a fitted SeMoBridge model as one fused graph from uint8 pixels to class scores.

Formats (see FORMATS / `semobridge-export --help`): ONNX (fp32, fp16, dynamic int8), a
torch.export program (.pt2) and TensorRT engines.
"""
from .exporter import export
from .formats import FORMATS, format_table
from .fused import INPUT_KINDS, OUTPUT_NAMES, FusedClassifier
from .metadata import CLASS_NAMES_KEY, FORMAT_VERSION, METADATA_KEY, build_metadata, read_metadata
from .preprocess import Preprocess
from .program import load_program
from .reference import library_scores, reference_scores, session
from .tensorrt import Profile, TensorRTError, build_engine

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

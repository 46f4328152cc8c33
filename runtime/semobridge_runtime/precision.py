"""On the CPU, the int8 artifact exported beside a model, when its export measured that it labels as fp32 does."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from . import files
from .contract import int8_path, sidecar_path
from .errors import ModelError, SemobridgeError
from .metadata import ModelInfo

INT8_MIN_AGREEMENT = 0.99  # share of the fit images on which the int8 graph's label equals the fp32 graph's


def sidecar(path: Path) -> ModelInfo | None:
    """The exporter's `<stem>.json` beside a model file, or None if absent, unreadable or not metadata this runtime
    reads."""
    source = sidecar_path(path)
    try:
        return ModelInfo.from_json(files.read_text(source, "metadata sidecar", files.TEXT_BYTES, ModelError), str(source))
    except SemobridgeError:
        return None


def int8_beside(path: Path, providers: Sequence[str]) -> Path | None:
    """`<stem>_int8.onnx` beside `<stem>.onnx` when ONNX Runtime runs on the CPU only (`providers`, as chosen),
    its export recorded a label agreement with the fp32 graph of at least INT8_MIN_AGREEMENT, and it has the
    same classes; else None (the model is loaded as given)."""
    candidate = int8_path(path)
    if path.suffix != ".onnx" or list(providers) != ["CPUExecutionProvider"] or not candidate.is_file():
        return None
    fp32, int8 = sidecar(path), sidecar(candidate)
    if fp32 is None or int8 is None or int8.precision != "int8" or int8.class_names != fp32.class_names:
        return None
    return candidate if int8.int8 is not None and int8.int8.label_agreement >= INT8_MIN_AGREEMENT else None

"""On the CPU, the int8 artifact exported beside a model, when its export measured that it labels as fp32 does."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

from . import files
from .errors import SemobridgeError

INT8_MIN_AGREEMENT = 0.99  # share of the fit images on which the int8 graph's label equals the fp32 graph's


def sidecar(path: Path) -> dict[str, Any] | None:
    """The exporter's `<stem>.json` beside a model file, or None if absent or unreadable."""
    try:
        return json.loads(files.read_text(path.with_suffix(".json"), "metadata sidecar"))
    except (SemobridgeError, ValueError):
        return None


def int8_beside(path: Path, providers: Sequence[str]) -> Path | None:
    """`<stem>_int8.onnx` beside `<stem>.onnx` when ONNX Runtime runs on the CPU only (`providers`, as chosen),
    its export recorded a label agreement with the fp32 graph of at least INT8_MIN_AGREEMENT, and it has the
    same classes; else None (the model is loaded as given)."""
    candidate = path.with_name(f"{path.stem}_int8.onnx")
    if path.suffix != ".onnx" or list(providers) != ["CPUExecutionProvider"] or not candidate.is_file():
        return None
    fp32, int8 = sidecar(path), sidecar(candidate)
    if fp32 is None or int8 is None or int8.get("precision") != "int8" or int8.get("class_names") != fp32.get("class_names"):
        return None
    agreement = (int8.get("int8") or {}).get("label_agreement")
    return candidate if isinstance(agreement, (int, float)) and agreement >= INT8_MIN_AGREEMENT else None

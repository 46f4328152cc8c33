"""The `semobridge` metadata every exported model carries (in the file and as `<stem>.json`)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from semobridge.modelfile import METADATA_KEY
from semobridge.modelfile import read_export_metadata as read_metadata  # noqa: F401  (export's name for it)
from semobridge.validate import limits

from .fused import FusedClassifier

FORMAT_VERSION = 1
CLASS_NAMES_KEY = "semobridge.class_names"  # class names joined by "\n", for the C runtime
PRECISIONS = ("fp32", "fp16", "int8")


def input_spec(fused: FusedClassifier, fixed_size: tuple[int, int] | None = None) -> dict[str, Any]:
    """Name, kind, shape (strings for dynamic dims) and layout of the graph input."""
    S = fused.image_size
    if fused.input_kind == "float":
        return {"name": "image", "kind": "float", "dtype": "float32", "shape": ["N", 3, S, S], "layout": "NCHW"}
    h, w = fixed_size if fixed_size else ("H", "W")
    return {"name": "image", "kind": "uint8", "dtype": "uint8", "shape": ["N", h, w, 3], "layout": "NHWC"}


def output_specs(fused: FusedClassifier) -> list[dict[str, Any]]:
    C, d = fused.num_classes, fused.embedding_dim
    return [
        {"name": "scores", "dtype": "float32", "shape": ["N", C]},
        {"name": "label", "dtype": "int64", "shape": ["N"]},
        {"name": "embedding", "dtype": "float32", "shape": ["N", d]},
    ]


def build_metadata(fused: FusedClassifier, fixed_size: tuple[int, int] | None = None, precision: str = "fp32") -> dict[str, Any]:
    """The metadata dict of an export of `fused`."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r} is not one of {', '.join(PRECISIONS)}")
    info = fused.head.info
    return {
        "format_version": FORMAT_VERSION,
        "class_names": list(info.class_names),
        "num_classes": fused.num_classes,
        "embedding_dim": fused.embedding_dim,
        "input": input_spec(fused, fixed_size),
        "outputs": output_specs(fused),
        "image_size": fused.image_size,
        "mean": [float(v) for v in info.mean],
        "std": [float(v) for v in info.std],
        "resize": fused.preprocess.describe() if fused.preprocess is not None else "none (input already preprocessed)",
        "backbone": {**info.backbone, "pretrained": Path(info.backbone["pretrained"]).name},  # no user paths
        "shots": info.shots,
        "variant": info.variant,
        "params": dict(info.params),
        "val_accuracy": info.val_accuracy,
        "library_version": info.library_version,
        "precision": precision,
        "limits": limits(),
    }


def with_precision(meta: dict[str, Any], precision: str) -> dict[str, Any]:
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r} is not one of {', '.join(PRECISIONS)}")
    return {**meta, "precision": precision}


def metadata_props(meta: dict[str, Any]) -> dict[str, str]:
    """The ONNX metadata_props entries for `meta`."""
    return {METADATA_KEY: json.dumps(meta), CLASS_NAMES_KEY: "\n".join(meta["class_names"])}


def sidecar_path(model_path: Path) -> Path:
    """`model.onnx` -> `model.json`, `model_fp16.engine` -> `model_fp16.json`."""
    return Path(model_path).with_suffix(".json")

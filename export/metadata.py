"""The `semobridge` metadata every exported model carries (in the file and as `<stem>.json`)."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from semobridge.backbones import Backbone
from semobridge.modelfile import METADATA_KEY
from semobridge.modelfile import read_export_metadata as read_metadata  # noqa: F401  (export's name for it)
from semobridge.validate import limits

from .fused import FusedClassifier

FORMAT_VERSION = 1
CLASS_NAMES_KEY = "semobridge.class_names"  # class names joined by "\n", for the C runtime
TEXT_METADATA_KEY = "semobridge.text"  # the text tower's metadata (text.onnx)
PRECISIONS = ("fp32", "fp16", "int8")
CLASS_FILE_FORMAT = "semobridge-classes/1"  # docs/classes.md
#: what class enrolment reads beside the model (paths relative to the model file)
ENROLMENT_FILES = {"head": "head.safetensors", "text_model": "text.onnx"}


def input_spec(fused: FusedClassifier, fixed_size: tuple[int, int] | None = None) -> dict[str, Any]:
    """Name, kind, shape (strings for dynamic dims) and layout of the graph input."""
    S = fused.image_size
    if fused.input_kind == "float":
        return {"name": "image", "kind": "float", "dtype": "float32", "shape": ["N", 3, S, S], "layout": "NCHW"}
    h, w = fixed_size if fixed_size else ("H", "W")
    return {"name": "image", "kind": "uint8", "dtype": "uint8", "shape": ["N", h, w, 3], "layout": "NHWC"}


def output_specs(fused: FusedClassifier) -> list[dict[str, Any]]:
    d = fused.embedding_dim
    return [
        {"name": "scores", "dtype": "float32", "shape": ["N", "C"]},
        {"name": "label", "dtype": "int64", "shape": ["N"]},
        {"name": "embedding", "dtype": "float32", "shape": ["N", d]},
        {"name": "features", "dtype": "float32", "shape": ["N", d]},
        {"name": "bridged_features", "dtype": "float32", "shape": ["N", d]},
    ]


def head_input_specs(fused: FusedClassifier) -> list[dict[str, Any]]:
    """The class-set inputs (float32, C classes; the fitted classes are their defaults)."""
    return [
        {"name": name, "dtype": "float32", "shape": ["C", *tensor.shape[1:]]}
        for name, tensor in fused.fitted_classes().items()
    ]


def bridge_hash(fused: FusedClassifier) -> str:
    """SHA-256 (first 16 hex digits) of W+ as float32: class files are valid only with the W+ they were bridged with."""
    pinv = fused.head.bridge.pinv.detach().float().cpu().contiguous().numpy()
    return hashlib.sha256(pinv.astype("<f4").tobytes()).hexdigest()[:16]


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
        "open_set": info.open_set,  # temperature and "unknown" threshold (semobridge_runtime.openset); None: not calibrated
        "library_version": info.library_version,
        "precision": precision,
        "limits": limits(),
        "head_inputs": head_input_specs(fused),
        "bridge_hash": bridge_hash(fused),
        "class_file_format": CLASS_FILE_FORMAT,
        "prompts": {"templates": list(info.templates), "descriptions": dict(info.descriptions)},
        "enrolment": dict(ENROLMENT_FILES),
    }


def text_metadata(backbone: Backbone, tokenizer: dict[str, Any], embedding_dim: int,
                  precision: str = "fp32") -> dict[str, Any]:
    """The metadata of the text tower (text.onnx): what the runtime needs to tokenize and check it."""
    return {
        "format_version": FORMAT_VERSION,
        "backbone": backbone.identity(),
        "input": {"name": "tokens", "dtype": "int64", "shape": ["M", tokenizer["context_length"]]},
        "output": {"name": "text_embedding", "dtype": "float32", "shape": ["M", embedding_dim]},
        "tokenizer": tokenizer,
        "precision": precision,
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

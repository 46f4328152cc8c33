"""The `semobridge` metadata every exported model carries (in the file and as `<stem>.json`), built from the
fitted head as the runtime's schema (semobridge_runtime.metadata: ModelInfo, TextInfo) that every reader uses."""
from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path
from typing import Any

from semobridge_runtime.contract import (BRIDGED_FEATURES, CLASS_FILE_FORMAT, CLASS_NAMES_KEY, EMBEDDING, FEATURES,
                                         IMAGE_INPUT, KNOWN, LABEL, METADATA_KEY, OPEN_SET_SCORE, PROBABILITIES, SCORES,
                                         TEXT_EMBEDDING,
                                         TEXT_METADATA_KEY, TEXT_TOKENS, sidecar_path)
from semobridge_runtime.limits import ImageLimits
from semobridge_runtime.metadata import (FORMAT_VERSION, PRECISIONS, Backbone, Calibration, Enrolment, InputSpec,
                                         ModelInfo, Prompts, TensorSpec, TextInfo, TokenizerSpec)

from semobridge.backbones import Backbone as ClipBackbone
from semobridge.modelfile import read_export_metadata as read_metadata  # noqa: F401  (export's name for it)
from semobridge.validate import limits

from .fused import FusedClassifier

__all__ = ["CLASS_NAMES_KEY", "FORMAT_VERSION", "METADATA_KEY", "PRECISIONS", "TEXT_METADATA_KEY", "ModelInfo", "TextInfo",
           "build_metadata", "metadata_props", "read_metadata", "sidecar_path", "text_metadata", "with_precision"]


def input_spec(fused: FusedClassifier, fixed_size: tuple[int, int] | None = None) -> InputSpec:
    """Name, kind, shape (strings for dynamic dims) and layout of the graph input."""
    S = fused.image_size
    if fused.input_kind == "float":
        return InputSpec(name=IMAGE_INPUT, kind="float", dtype="float32", shape=("N", 3, S, S), layout="NCHW")
    h, w = fixed_size if fixed_size else ("H", "W")
    return InputSpec(name=IMAGE_INPUT, kind="uint8", dtype="uint8", shape=("N", h, w, 3), layout="NHWC")


def output_specs(fused: FusedClassifier) -> tuple[TensorSpec, ...]:
    d = fused.embedding_dim
    return (TensorSpec(SCORES, "float32", ("N", "C")), TensorSpec(LABEL, "int64", ("N",)),
            TensorSpec(EMBEDDING, "float32", ("N", d)), TensorSpec(FEATURES, "float32", ("N", d)),
            TensorSpec(BRIDGED_FEATURES, "float32", ("N", d)),
            TensorSpec(PROBABILITIES, "float32", ("N", "C")), TensorSpec(KNOWN, "bool", ("N",)),  # the decision
            TensorSpec(OPEN_SET_SCORE, "float32", ("N",)))


def head_input_specs(fused: FusedClassifier) -> tuple[TensorSpec, ...]:
    """The class-set inputs (float32, C classes; the fitted classes are their defaults)."""
    return tuple(TensorSpec(name, "float32", ("C", *tensor.shape[1:])) for name, tensor in fused.fitted_classes().items())


def bridge_hash(fused: FusedClassifier) -> str:
    """SHA-256 (first 16 hex digits) of W+ as float32: class files are valid only with the W+ they were bridged with."""
    pinv = fused.head.bridge.pinv.detach().float().cpu().contiguous().numpy()
    return hashlib.sha256(pinv.astype("<f4").tobytes()).hexdigest()[:16]


def build_metadata(fused: FusedClassifier, fixed_size: tuple[int, int] | None = None, precision: str = "fp32") -> ModelInfo:
    """The metadata of an export of `fused`."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r} is not one of {', '.join(PRECISIONS)}")
    info = fused.head.info
    return ModelInfo(
        format_version=FORMAT_VERSION,
        class_names=tuple(info.class_names),
        embedding_dim=fused.embedding_dim,
        input=input_spec(fused, fixed_size),
        outputs=output_specs(fused),
        image_size=fused.image_size,
        mean=tuple(float(v) for v in info.mean),
        std=tuple(float(v) for v in info.std),
        resize=fused.preprocess.describe() if fused.preprocess is not None else "none (input already preprocessed)",
        backbone=Backbone(info.backbone["name"], Path(info.backbone["pretrained"]).name, info.backbone["weights_hash"]),
        shots=info.shots,
        variant=info.variant,
        params=dict(info.params),
        val_accuracy=info.val_accuracy,
        # temperature and "unknown" threshold (semobridge_runtime.openset); None: not calibrated
        open_set=Calibration.from_dict(info.open_set, "the fitted head") if info.open_set is not None else None,
        library_version=info.library_version,
        precision=precision,
        limits=ImageLimits(**limits()),
        head_inputs=head_input_specs(fused),
        bridge_hash=bridge_hash(fused),
        class_file_format=CLASS_FILE_FORMAT,
        prompts=Prompts(tuple(info.templates), {k: tuple(v) for k, v in info.descriptions.items()}),
        enrolment=Enrolment(),
    )


def text_metadata(backbone: ClipBackbone, tokenizer: dict[str, Any], embedding_dim: int,
                  precision: str = "fp32") -> TextInfo:
    """The metadata of the text tower (text.onnx): what the runtime needs to tokenize and check it."""
    return TextInfo(
        format_version=FORMAT_VERSION,
        backbone=Backbone(**backbone.identity()),
        input=TensorSpec(TEXT_TOKENS, "int64", ("M", tokenizer["context_length"])),
        output=TensorSpec(TEXT_EMBEDDING, "float32", ("M", embedding_dim)),
        tokenizer=TokenizerSpec(**tokenizer),
        precision=precision,
    )


def with_precision(meta: ModelInfo, precision: str) -> ModelInfo:
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r} is not one of {', '.join(PRECISIONS)}")
    return dataclasses.replace(meta, precision=precision)


def metadata_props(meta: ModelInfo) -> dict[str, str]:
    """The ONNX metadata_props entries for `meta`."""
    return {METADATA_KEY: meta.to_json(), CLASS_NAMES_KEY: "\n".join(meta.class_names)}

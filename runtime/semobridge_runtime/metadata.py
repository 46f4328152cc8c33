"""The `semobridge` metadata that every exported model carries."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import files
from .classes import check_name
from .errors import InputError, ModelError
from .limits import ImageLimits

METADATA_KEY = "semobridge"
SUPPORTED_FORMAT_VERSION = 1


@dataclass(frozen=True)
class ModelInfo:
    """What the runtime needs to know about an exported model."""

    class_names: tuple[str, ...]
    input_kind: str  # "uint8" (NHWC RGB pixels) or "float" (normalised NCHW)
    input_name: str
    image_size: int
    embedding_dim: int
    limits: ImageLimits  # the model's own (metadata "limits"), else the defaults
    raw: dict[str, Any]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


def parse_metadata(text: str | None, source: str) -> ModelInfo:
    """Parse the metadata JSON; `source` names the file in error messages."""
    if text is None:
        raise ModelError(
            f"{source} has no '{METADATA_KEY}' metadata, so it is not a semobridge export; "
            "export it with semobridge's exporter (or pass the fused model, not a bare backbone)"
        )
    try:
        raw = json.loads(text)
        version = int(raw["format_version"])
        names = tuple(str(n) for n in raw["class_names"])
        spec = raw["input"]
        kind = str(spec["kind"])
        input_name = str(spec.get("name", "image"))
        image_size, embedding_dim = int(raw["image_size"]), int(raw["embedding_dim"])
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ModelError(f"{source}: malformed '{METADATA_KEY}' metadata ({exc!r}); re-export the model") from exc
    if version > SUPPORTED_FORMAT_VERSION:
        raise ModelError(
            f"{source} uses metadata format {version}, newer than this runtime supports "
            f"({SUPPORTED_FORMAT_VERSION}); upgrade semobridge-runtime"
        )
    if kind not in ("uint8", "float"):
        raise ModelError(f"{source}: unknown input kind {kind!r}; upgrade semobridge-runtime")
    if not names:
        raise ModelError(f"{source}: metadata lists no class names; re-export the model")
    try:
        for i, name in enumerate(raw["class_names"]):
            check_name(name, names[:i])
    except InputError as exc:
        raise ModelError(f"{source}: the metadata's class names are unusable ({exc})", hint="re-export the model") from None
    limits = ImageLimits.from_metadata(raw.get("limits"), source)
    return ModelInfo(names, kind, input_name, image_size, embedding_dim, limits, raw)


def read_sidecar(model_path: Path) -> ModelInfo:
    """Read `<stem>.json` or `model.json` next to a model file (used for TensorRT engines)."""
    for candidate in (model_path.with_suffix(".json"), model_path.with_name("model.json")):
        if candidate.exists():
            return parse_metadata(files.read_text(candidate, "metadata sidecar", files.TEXT_BYTES, ModelError),
                                  str(candidate))
    raise ModelError(
        f"no metadata sidecar for {model_path}: put the exporter's model.json "
        f"(or {model_path.with_suffix('.json').name}) next to it"
    )

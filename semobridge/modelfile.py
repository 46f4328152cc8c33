"""The model file's metadata: ModelInfo, its validation, and reading it without PyTorch.

A model file is safetensors: an 8-byte little-endian header length, a JSON header (tensor
dtypes, shapes and offsets, and our metadata under `__metadata__["semobridge"]`), the tensors.
"""
from __future__ import annotations

import json
import math
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
from semobridge_runtime import tensorfile
from semobridge_runtime.contract import METADATA_KEY, MODEL_FILE_FORMAT
from semobridge_runtime.errors import SemobridgeError as RuntimeSemobridgeError
from semobridge_runtime.metadata import ModelInfo as ExportInfo
from semobridge_runtime.openset import OpenSet

from . import __version__
from .errors import InputError, ModelError
from .files import GRAPH_BYTES, read_bytes
from .params import RANGES
from .validate import MAX_SIDE, MIN_FIT_CLASSES, blend_values, class_names

FORMAT = MODEL_FILE_FORMAT


class ModelFileError(ModelError):
    """A model file that is missing, not ours, malformed, or made for another backbone."""


@dataclass
class ModelInfo:
    """Everything about a fitted model that is not a tensor."""

    class_names: list[str]
    backbone: dict[str, str]  # name, pretrained, weights_hash
    image_size: int
    mean: list[float]
    std: list[float]
    params: dict[str, float]
    variant: str = "training-free"  # or "trained" (SeMoBridge-T)
    shots: int | None = None
    seed: int | None = None
    val_accuracy: float | None = None
    val_source: str = "none"
    augment: str = ""
    dataset: str = ""
    csb: bool = False
    protocol: str = ""  # "paper" or "consistent" (semobridge.protocol); "" in files from before
    steps: int | None = None  # SeMoBridge-T updates applied
    kept_step: int | None = None  # updates applied to reach the kept W⁺ and class bias
    # the prompts of the fit, reused to enrol new classes on the device: templates with "{}"
    # for the class name, and the descriptions of the model's classes (lower-case name -> sentences)
    templates: list[str] = field(default_factory=list)
    descriptions: dict[str, list[str]] = field(default_factory=dict)
    # the open-set calibration (semobridge.calibrate): score, temperature, threshold, accept, source, ECE
    # before and after; None in files from before it existed, and when the fit had no held-out images
    open_set: dict | None = None
    library_version: str = __version__
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_metadata(cls, values: Any, source: str) -> "ModelInfo":
        """Validated ModelInfo from a model file's metadata; a ModelFileError naming the problem otherwise."""
        if not isinstance(values, dict):
            raise ModelFileError(f"{source}: the metadata is a JSON {type(values).__name__}, not an object", hint=_REFIT)
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise ModelFileError(
                f"{source}: unknown metadata key(s) {', '.join(unknown)} (written by semobridge "
                f"{values.get('library_version', '?')}, this is {__version__})", hint="upgrade semobridge, or fit again")
        missing = [n for n, f in known.items() if f.default is MISSING and f.default_factory is MISSING and n not in values]
        if missing:
            raise ModelFileError(f"{source}: metadata lacks {', '.join(missing)}", hint=_REFIT)
        for name, value in values.items():
            _check_type(name, value, _TYPES[name], source)
        _check_preprocessing(values, source)
        backbone = values["backbone"]
        if set(backbone) != {"name", "pretrained", "weights_hash"} or not all(isinstance(v, str) for v in backbone.values()):
            raise ModelFileError(f"{source}: 'backbone' must hold the strings name, pretrained and weights_hash", hint=_REFIT)
        try:
            class_names(values["class_names"], f"{source}: class_names", MIN_FIT_CLASSES)
            blend_values(values["params"], RANGES, f"{source}: params")
        except InputError as exc:
            raise ModelFileError(str(exc), hint=_REFIT) from None
        if values.get("open_set") is not None:
            try:
                OpenSet.from_dict(values["open_set"], source)
            except RuntimeSemobridgeError as exc:  # the runtime's error classes (the same as this package's)
                raise ModelFileError(str(exc), hint=_REFIT) from None
        return cls(**values)

    def describe(self) -> str:
        """A few lines for people: variant, classes, backbone, blend, validation accuracy."""
        acc = f"{percent(self.val_accuracy)} ({self.val_source})" if self.val_accuracy is not None else f"n/a ({self.val_source})"
        b = self.backbone
        names = ", ".join(self.class_names[:6]) + (", ..." if len(self.class_names) > 6 else "")
        return "\n".join([
            f"{self.variant} SeMoBridge, {len(self.class_names)} classes ({names}), {self.shots} shots",
            f"backbone: {b['name']} ({b['pretrained']}, weights {b['weights_hash']})",
            f"protocol: {self.protocol or 'unrecorded'}"
            + (f", kept step {self.kept_step} of {self.steps}" if self.kept_step is not None else ""),
            "blend: " + ", ".join(f"{k}={v:.4g}" for k, v in self.params.items()),
            f"val accuracy: {acc}",
            _describe_open_set(self.open_set),
        ])

    def to_metadata(self) -> dict[str, str]:
        """The safetensors `__metadata__` entry (one key: several would be ordered arbitrarily)."""
        return {METADATA_KEY: json.dumps({"format": FORMAT, **asdict(self)})}


def _describe_open_set(values: dict | None) -> str:
    if not values:
        return ("unknown: off, not calibrated (written before calibration existed, or nothing held out: one shot per "
                "class and no validation split)")
    return (f"probabilities: temperature {values['temperature']:.4g}, ECE {100 * values.get('ece_before', float('nan')):.2f} % -> "
            f"{100 * values.get('ece_after', float('nan')):.2f} % ({values['source']})\n"
            f"unknown: {_SCORE_NAMES.get(values.get('score'), values.get('score'))} below {values['threshold']:.4f} "
            f"({100 * values['accept']:.0f} % of held-out known images accepted)")


_SCORE_NAMES = {"max_probability": "top probability", "mcm": "MCM"}  # openset.SCORES as the descriptions name them


_REFIT = "fit the model again with `semobridge fit`"
_TYPES: dict[str, tuple[type, ...]] = {
    "class_names": (list,), "backbone": (dict,), "image_size": (int,), "mean": (list,), "std": (list,),
    "params": (dict,), "variant": (str,), "shots": (int, type(None)), "seed": (int, type(None)),
    "val_accuracy": (float, int, type(None)), "val_source": (str,), "augment": (str,), "dataset": (str,),
    "csb": (bool,), "protocol": (str,), "steps": (int, type(None)), "kept_step": (int, type(None)), "templates": (list,), "descriptions": (dict,), "open_set": (dict, type(None)), "library_version": (str,), "extra": (dict,),
}


def _check_type(name: str, value: Any, types: tuple[type, ...], source: str) -> None:
    if isinstance(value, bool) and bool not in types:
        ok = False
    else:
        ok = isinstance(value, types)
    if name in ("mean", "std") and ok:
        ok = len(value) in (0, 3) and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
    if not ok:
        raise ModelFileError(f"{source}: metadata {name!r} has the wrong type or shape ({value!r:.80})", hint=_REFIT)


def _check_preprocessing(values: dict, source: str) -> None:
    """The image size and normalisation the backbone was fitted with: a size within the image limits (0: fitted
    from embeddings), a finite mean and a positive finite std (a std of 0 would divide by zero)."""
    size = values["image_size"]
    if not 0 <= size <= MAX_SIDE:
        raise ModelFileError(f"{source}: metadata image_size {size} is outside 0..{MAX_SIDE}", hint=_REFIT)
    if not all(math.isfinite(v) for v in values["mean"]):
        raise ModelFileError(f"{source}: metadata mean {values['mean']} is not finite", hint=_REFIT)
    if not all(math.isfinite(v) and v > 0 for v in values["std"]):
        raise ModelFileError(f"{source}: metadata std {values['std']} is not positive and finite (the images are "
                             "divided by it)", hint=_REFIT)


def percent(value: float | None) -> str:
    """Accuracies are shown one way everywhere: a percentage with two decimals."""
    return "n/a" if value is None else f"{100 * value:.2f} %"


def read_model(path: str | Path) -> tuple[ModelInfo, dict[str, np.ndarray]]:
    """The validated ModelInfo and tensors (read-only float32 arrays) of a model file, every byte checked:
    a regular file under files.MODEL_BYTES, the safetensors layout (no truncation, tensor offsets inside the
    file), our metadata, every tensor present with shapes that agree, and no NaN or infinite value."""
    path = Path(path)
    if not path.exists():
        raise ModelFileError(f"model file {path} does not exist",
                             hint="give the path of a .safetensors file written by `semobridge fit`")
    try:
        tensors, meta = tensorfile.read(path, "model file")
    except tensorfile.Malformed as exc:
        raise ModelFileError(f"{path} is not a semobridge model file: it is truncated or malformed ({exc.reason})",
                             hint=_REFIT) from None
    except ModelError as exc:
        raise ModelFileError(str(exc), hint=exc.hint or _REFIT) from None
    try:
        values = json.loads(meta[METADATA_KEY])
    except (KeyError, ValueError, RecursionError):
        raise ModelFileError(f"{path} is not a semobridge model file (no readable {FORMAT!r} metadata)", hint=_REFIT) from None
    if not isinstance(values, dict) or values.pop("format", None) != FORMAT:
        raise ModelFileError(f"{path} is not a semobridge model file (no {FORMAT!r} metadata)", hint=_REFIT)
    info = ModelInfo.from_metadata(values, str(path))
    check_tensors({name: {"dtype": tensorfile.NAMES.get(a.dtype), "shape": list(a.shape)} for name, a in tensors.items()},
                  len(info.class_names), str(path))
    return info, tensors


def read_export_metadata(path: str | Path) -> ExportInfo:
    """The metadata an exported ONNX graph carries (semobridge-export), without its weights; ModelError unless it is
    metadata of a format this version reads (semobridge_runtime.metadata)."""
    import onnx

    path = Path(path)
    data = read_bytes(path, "exported graph", GRAPH_BYTES, ModelError)
    try:
        model = onnx.load_model_from_string(data)
    except Exception as exc:  # protobuf raises several types for a file that is not ONNX
        raise ModelError(f"{path} is not a readable ONNX file ({type(exc).__name__})", hint="export it again") from None
    props = {p.key: p.value for p in model.metadata_props}
    if METADATA_KEY not in props:
        raise ModelError(f"{path} has no readable {METADATA_KEY!r} metadata: it was not written by semobridge-export",
                         hint="export the model with semobridge-export")
    return ExportInfo.from_json(props[METADATA_KEY], str(path))


def describe_export(meta: ExportInfo) -> str:
    """A few lines for people about an exported graph."""
    names, spec, b = list(meta.class_names), meta.input, meta.backbone
    limits = asdict(meta.limits)
    rows = [
        ("classes", f"{len(names)}: " + ", ".join(names[:6]) + (", ..." if len(names) > 6 else "")),
        ("variant", f"{meta.variant} SeMoBridge, {meta.shots} shots, {meta.precision}"),
        ("backbone", f"{b.name} ({b.pretrained}, weights {b.weights_hash})" if b is not None else "None"),
        ("input", f"{spec.name} {spec.dtype} {list(spec.shape)} {spec.layout}"),
        ("resize", meta.resize),
        ("limits", ", ".join(f"{k} {v:,}" for k, v in limits.items())),
        ("val accuracy", percent(meta.val_accuracy)),
        ("unknown", _describe_open_set(meta.open_set.to_dict() if meta.open_set else None).split("unknown: ")[-1]),
        ("library", meta.library_version),
    ]
    return "\n".join(f"{k:<13} {v}" for k, v in rows)


def read_info(path: str | Path) -> ModelInfo:
    """The validated ModelInfo of a model file (the whole file checked, see read_model), without PyTorch."""
    return read_model(path)[0]


#: Tensors of a model file -> their shape in terms of C (classes), d and d_t (None: any).
TENSORS: dict[str, tuple[str, ...]] = {
    "bridge.pinv": ("d", "d_t"),
    "bridge.text_projection": ("d_t", "d"),
    "bridge.eos_length": ("1",),
    "text_classifier": ("C", "d"),
    "bridged_prototypes": ("C", "d"),
    "image_prototypes": ("C", "d"),
    "class_kl": ("C",),
    "class_weights": ("C",),
}
OPTIONAL_TENSORS = {"class_bias": ("C", "d_t")}


def check_tensors(header: dict[str, dict], num_classes: int, source: str) -> None:
    """Every tensor present, float32, with shapes that agree with each other and with the class names."""
    specs = {**TENSORS, **{k: v for k, v in OPTIONAL_TENSORS.items() if k in header}}
    missing = sorted(set(TENSORS) - set(header))
    if missing:
        raise ModelFileError(f"{source}: missing tensor(s) {', '.join(missing)}", hint=_REFIT)
    sizes: dict[str, int] = {"C": num_classes, "1": 1}
    for name, dims in specs.items():
        entry = header[name]
        shape = entry.get("shape") if isinstance(entry, dict) else None
        if entry.get("dtype") != "F32" or not isinstance(shape, list) or len(shape) != len(dims):
            raise ModelFileError(f"{source}: tensor {name} is not float32 with {len(dims)} dimension(s)", hint=_REFIT)
        for dim, value in zip(dims, shape):
            if sizes.setdefault(dim, value) != value:
                what = "the number of class names" if dim == "C" else f"the other tensors ({dim} = {sizes[dim]})"
                raise ModelFileError(f"{source}: tensor {name} has shape {shape}, which does not match {what}", hint=_REFIT)

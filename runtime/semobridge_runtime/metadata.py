"""The `semobridge` metadata every exported model carries: one typed, versioned schema.

semobridge-export writes it (`ModelInfo.to_dict()`/`to_json()`: in the graph under METADATA_KEY and as the
`<stem>.json` sidecar), and everything else reads it through `ModelInfo.from_json()`/`from_dict()` (both
runtimes' backends, class enrolment, class files, serving, `semobridge info`); the C library reads the same
keys (runtime/c/src/semobridge.c, checked by tests/test_contract.py).

Versions: `format_version` is FORMAT_VERSION for what this runtime writes. A reader refuses a newer version
("upgrade semobridge-runtime") and one it never knew (below 1: "re-export the model"). A field that an older
reader may ignore is added with a default, without a new version; a change that an older reader would
misread (a field it must understand, a new meaning) raises FORMAT_VERSION. Keys unknown to this reader are
ignored. Metadata of format 1 written before a field existed reads with that field's default:
  outputs, head_inputs: ()           (head_inputs empty: the classes are baked into the graph)
  mean, std: (); resize: ""          (for people only)
  backbone: None; bridge_hash, class_file_format, enrolment: None   (classes cannot be changed)
  shots, val_accuracy, open_set: None (open_set None: not calibrated, T = 1, unknown off)
  params: {}; variant, library_version: ""; precision: "fp32"; limits: the defaults (limits.py)
  prompts: no templates, no descriptions; int8, openvino, openvino_int8, tensorrt: None (not measured, not an engine)

Adding a field: give it a type and a default in its dataclass below (JSON key = field name); nested
dataclasses, `X | None`, tuple[X, ...] and dict[str, X] of str/int/float/bool are decoded and checked by type.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

from . import files
from .names import check_names
from .contract import ENROLMENT_FILES, IMAGE_INPUT, METADATA_KEY, TEXT_METADATA_KEY, sidecar_path
from .errors import InputError, ModelError
from .limits import ImageLimits
from .tensorfile import unique_keys
from .openset import OpenSet

__all__ = ["FORMAT_VERSION", "METADATA_KEY", "PRECISIONS", "ModelInfo", "TextInfo", "parse_metadata", "read_sidecar"]

FORMAT_VERSION = 1  # what this runtime reads at most, and what semobridge-export writes
PRECISIONS = ("fp32", "fp16", "int8", "bf16")  # bf16: what OpenVINO runs (a served config says it; no file is bf16)
INPUT_KINDS = ("uint8", "float")  # NHWC RGB pixels, or normalised NCHW floats
_OMIT = {"omit_if_none": True}  # a field written only when set (absent keys read as None)
_REEXPORT = "re-export the model with semobridge-export"


class Malformed(ValueError):
    """A value of the wrong type or range at a metadata path ("input.shape[1]")."""


@dataclass(frozen=True)
class TensorSpec:
    """A graph input or output: name, dtype and shape (strings name dynamic dims)."""

    name: str
    dtype: str = "float32"
    shape: tuple[int | str, ...] = ()


@dataclass(frozen=True, kw_only=True)
class InputSpec:
    """The image input: uint8 NHWC pixels ("uint8") or normalised NCHW floats ("float")."""

    name: str = IMAGE_INPUT
    kind: str
    dtype: str = ""
    shape: tuple[int | str, ...] = ()
    layout: str = ""

    def __post_init__(self) -> None:
        if self.kind not in INPUT_KINDS:
            raise ModelError(f"unknown input kind {self.kind!r}", hint="upgrade semobridge-runtime")


@dataclass(frozen=True)
class Backbone:
    """The CLIP model the export was fitted on (pretrained: the weights' file name or tag, no user path)."""

    name: str
    pretrained: str = ""
    weights_hash: str = ""


@dataclass(frozen=True)
class Prompts:
    """The fit's prompts, reused to enrol classes: templates with "{}", descriptions by lower-case class name."""

    templates: tuple[str, ...] = ()
    descriptions: dict[str, tuple[str, ...]] = field(default_factory=dict)


@dataclass(frozen=True)
class Enrolment:
    """What class enrolment reads beside the model (paths relative to the model file)."""

    head: str = ENROLMENT_FILES["head"]
    text_model: str = ENROLMENT_FILES["text_model"]


@dataclass(frozen=True)
class Calibration:
    """The open-set calibration ("open_set"): the decision (openset.OpenSet) and the ECE it measured."""

    decision: OpenSet
    ece_before: float | None = None
    ece_after: float | None = None

    @classmethod
    def from_dict(cls, values: Any, source: str) -> Calibration:
        ece = {k: values.get(k) for k in ("ece_before", "ece_after")} if isinstance(values, dict) else {}
        if any(v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))) for v in ece.values()):
            raise ModelError(f"{source}: unusable 'open_set' calibration (ECE {ece})", hint=_REEXPORT)
        return cls(OpenSet.from_dict(values, source), *(None if v is None else float(v) for v in ece.values()))

    def to_dict(self) -> dict[str, Any]:
        ece = {k: getattr(self, k) for k in ("ece_before", "ece_after") if getattr(self, k) is not None}
        return {**self.decision.to_dict(), **ece}


@dataclass(frozen=True)
class Int8Check:
    """The int8 artifact's label agreement with the fp32 graph, measured at export ("int8")."""

    label_agreement: float
    images: int = 0
    measured_on: str = ""


@dataclass(frozen=True)
class OpenVinoCheck:
    """OpenVINO's labels and embeddings against the fp32 graph's, measured at export ("openvino")."""

    precision: str = "bf16"
    label_agreement: float | None = None
    min_cosine: float | None = None
    images: int = 0
    measured_on: str = ""


@dataclass(frozen=True)
class OpenVinoInt8:
    """The OpenVINO static int8 IR exported beside the model (contract.openvino_int8_path: NNCF's post-training
    quantisation of the graph past the preprocessing, calibrated on the fit images) ("openvino_int8"): the SHA-256 of
    its two files, which pair it with this model (an IR of another export is refused), and its labels and embeddings
    against the fp32 graph's, measured at export with its float operations at `float_precision` (OpenVINO's choice
    on the exporting CPU: "bf16" or "f32")."""

    xml_sha256: str
    bin_sha256: str
    label_agreement: float | None = None
    min_cosine: float | None = None
    images: int = 0
    measured_on: str = ""
    float_precision: str = ""


@dataclass(frozen=True)
class TensorRTBuild:
    """How a TensorRT engine was built ("tensorrt", in engine sidecars only)."""

    version: str = ""
    profile: dict[str, tuple[tuple[int, ...], ...]] = field(default_factory=dict)  # input -> (min, opt, max) shapes
    cache_key: str = ""
    dla_core: int | None = field(default=None, metadata=_OMIT)  # the DLA core it runs on; None: the GPU

    def __post_init__(self) -> None:
        if self.dla_core is not None and self.dla_core < 0:
            raise ModelError(f"metadata tensorrt.dla_core {self.dla_core!r} is not a DLA core number",
                             hint="rebuild the engine with semobridge-build-engine")


@dataclass(frozen=True)
class ModelInfo:
    """An exported model's metadata (what the runtimes, serving and `semobridge info` know about it)."""

    class_names: tuple[str, ...]
    embedding_dim: int
    input: InputSpec
    image_size: int
    format_version: int = FORMAT_VERSION
    outputs: tuple[TensorSpec, ...] = ()
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()
    resize: str = ""
    backbone: Backbone | None = None
    shots: int | None = None
    variant: str = ""
    params: dict[str, float] = field(default_factory=dict)
    val_accuracy: float | None = None
    open_set: Calibration | None = None  # None: not calibrated (T = 1, "unknown" off)
    library_version: str = ""
    precision: str = "fp32"
    limits: ImageLimits = ImageLimits()  # the model's own image limits, else the defaults
    head_inputs: tuple[TensorSpec, ...] = ()  # the class-set inputs; empty: the classes are baked in
    bridge_hash: str | None = None  # W+ the class files must have been bridged with
    class_file_format: str | None = None
    prompts: Prompts = Prompts()
    enrolment: Enrolment | None = None  # None: exported without what class enrolment needs
    int8: Int8Check | None = field(default=None, metadata=_OMIT)
    openvino: OpenVinoCheck | None = field(default=None, metadata=_OMIT)
    openvino_int8: OpenVinoInt8 | None = field(default=None, metadata=_OMIT)
    tensorrt: TensorRTBuild | None = field(default=None, metadata=_OMIT)

    #: the order of the keys written (num_classes is derived from class_names, written for people and Triton)
    _ORDER = ("format_version", "class_names", "num_classes", "embedding_dim", "input", "outputs", "image_size", "mean",
              "std", "resize", "backbone", "shots", "variant", "params", "val_accuracy", "open_set", "library_version",
              "precision", "limits", "head_inputs", "bridge_hash", "class_file_format", "prompts", "enrolment")

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ModelError(f"precision {self.precision!r} is not one of {', '.join(PRECISIONS)}",
                             hint="upgrade semobridge-runtime")

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def input_kind(self) -> str:
        """"uint8" (NHWC RGB pixels) or "float" (normalised NCHW)."""
        return self.input.kind

    @property
    def input_name(self) -> str:
        return self.input.name

    @property
    def head_input_names(self) -> tuple[str, ...]:
        return tuple(spec.name for spec in self.head_inputs)

    # ------------------------------------------------------------------ writing
    def to_dict(self) -> dict[str, Any]:
        """The JSON object (what `from_dict` reads back equal)."""
        values = _encode(self)
        values["num_classes"] = self.num_classes
        return {**{k: values.pop(k) for k in self._ORDER if k in values}, **values}

    def to_json(self, indent: int | None = None) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    # ------------------------------------------------------------------ reading
    @classmethod
    def from_json(cls, text: str | None, source: str) -> ModelInfo:
        """Parse the metadata JSON; `source` names the file in error messages. ModelError when absent, malformed,
        of a format this runtime does not know, or with unusable class names."""
        if text is None:
            raise ModelError(
                f"{source} has no '{METADATA_KEY}' metadata, so it is not a semobridge export; "
                "export it with semobridge's exporter (or pass the fused model, not a bare backbone)"
            )
        return cls.from_dict(_parse_json(text, source, METADATA_KEY), source)

    @classmethod
    def from_dict(cls, values: Any, source: str) -> ModelInfo:
        """From the parsed JSON object (see from_json)."""
        info = _read(cls, values, source, METADATA_KEY)
        if not info.class_names:
            raise ModelError(f"{source}: metadata lists no class names; re-export the model")
        try:
            check_names(info.class_names, "the class names")  # O(C): a model of 100,000 classes loads in ~1 s
        except InputError as exc:
            raise ModelError(f"{source}: the metadata's class names are unusable ({exc})", hint="re-export the model") from None
        return info


@dataclass(frozen=True, kw_only=True)
class TokenizerSpec:
    """How the runtime reproduces the backbone's tokenizer (open_clip's SimpleTokenizer; tokenizer.py)."""

    kind: str = "clip-bpe"
    vocabulary: str  # the vocabulary file beside text.onnx
    context_length: int
    clean: str
    start_token: int | None = None
    end_token: int | None = None


@dataclass(frozen=True)
class TextInfo:
    """The text tower's metadata (text.onnx, under TEXT_METADATA_KEY): what class enrolment needs to tokenize
    prompts and to check the tower belongs to the model's backbone. Versioned as ModelInfo."""

    backbone: Backbone
    input: TensorSpec
    output: TensorSpec
    tokenizer: TokenizerSpec
    format_version: int = FORMAT_VERSION
    precision: str = "fp32"

    _ORDER = ("format_version", "backbone", "input", "output", "tokenizer", "precision")

    def to_dict(self) -> dict[str, Any]:
        values = _encode(self)
        return {k: values[k] for k in self._ORDER}

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_json(cls, text: str | None, source: str) -> TextInfo:
        """ModelError naming `source` unless `text` is text-tower metadata of a format this runtime reads."""
        if text is None:
            raise ModelError(f"{source} has no '{TEXT_METADATA_KEY}' metadata: it is not a semobridge text tower",
                             hint="use the text.onnx exported with the model")
        return _read(cls, text, source, TEXT_METADATA_KEY)


# ---------------------------------------------------------------------- decoding and encoding by type
#: types with their own JSON form: (decode(value, source), encode(value))
_CUSTOM: dict[type, tuple[Any, Any]] = {
    ImageLimits: (ImageLimits.from_metadata, dataclasses.asdict),
    Calibration: (Calibration.from_dict, Calibration.to_dict),
}


def _decode(tp: Any, value: Any, where: str, source: str) -> Any:
    """`value` (parsed JSON) as type `tp`; Malformed naming `where` when it is not one."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        for option in options[:-1]:
            try:
                return _decode(option, value, where, source)
            except Malformed:
                pass
        return _decode(options[-1], value, where, source)
    if tp in _CUSTOM:
        return _CUSTOM[tp][0](value, f"{source}" + (f" ({where})" if where else ""))
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise Malformed(f"{where or 'the metadata'} is not an object")
        hints = typing.get_type_hints(tp)
        kwargs = {}
        for f in dataclasses.fields(tp):
            if f.name in value:
                kwargs[f.name] = _decode(hints[f.name], value[f.name], f"{where}.{f.name}".lstrip("."), source)
            elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise Malformed(f"{where + '.' if where else ''}{f.name} is missing")
        return tp(**kwargs)
    if origin is tuple:
        if not isinstance(value, list):
            raise Malformed(f"{where} is not a list")
        return tuple(_decode(args[0], v, f"{where}[{i}]", source) for i, v in enumerate(value))
    if origin is dict:
        if not isinstance(value, dict):
            raise Malformed(f"{where} is not an object")
        return {k: _decode(args[1], v, f"{where}.{k}", source) for k, v in value.items()}
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise Malformed(f"{where} is not a number")
        return float(value)
    if tp in (int, str, bool):
        if not isinstance(value, tp) or (tp is int and isinstance(value, bool)):
            raise Malformed(f"{where} is not {'an' if tp is int else 'a'} {tp.__name__}")
        return value
    raise TypeError(f"metadata field type {tp!r} has no decoder")  # a schema error, caught by tests/test_contract.py


def _encode(value: Any) -> Any:
    """The JSON form of a schema value (`_decode`'s inverse)."""
    if type(value) in _CUSTOM:
        return _CUSTOM[type(value)][1](value)
    if dataclasses.is_dataclass(value):
        return {f.name: _encode(getattr(value, f.name)) for f in dataclasses.fields(value)
                if not (f.metadata.get("omit_if_none") and getattr(value, f.name) is None)}
    if isinstance(value, tuple):
        return [_encode(v) for v in value]
    if isinstance(value, dict):
        return {k: _encode(v) for k, v in value.items()}
    return value


def _parse_json(text: str, source: str, key: str) -> Any:
    try:
        return json.loads(text, object_pairs_hook=unique_keys)
    except (ValueError, RecursionError) as exc:
        raise ModelError(f"{source}: malformed '{key}' metadata ({exc!r}); re-export the model") from exc


def _read(cls: type, values: Any, source: str, key: str) -> Any:
    """`values` (a JSON object, or its text) as `cls` after checking its format_version; ModelError otherwise."""
    if isinstance(values, str):
        values = _parse_json(values, source, key)
    if not isinstance(values, dict):
        raise ModelError(f"{source}: malformed '{key}' metadata (a JSON {type(values).__name__}, not an object); "
                         "re-export the model")
    version = values.get("format_version")
    known = isinstance(version, int) and not isinstance(version, bool)
    if known and version > FORMAT_VERSION:
        raise ModelError(f"{source} uses metadata format {version}, newer than this runtime supports "
                         f"({FORMAT_VERSION}); upgrade semobridge-runtime")
    if not (known and version >= 1):
        raise ModelError(f"{source}: unknown metadata format_version {version!r} (this runtime reads 1 up to "
                         f"{FORMAT_VERSION}); re-export the model")
    try:
        return _decode(cls, values, "", source)
    except (Malformed, RecursionError) as exc:
        raise ModelError(f"{source}: malformed '{key}' metadata ({exc}); re-export the model") from None
    except ModelError as exc:
        message = str(exc) if str(exc).startswith(source) else f"{source}: {exc}"
        raise ModelError(message, hint=exc.hint or _REEXPORT) from None


def parse_metadata(text: str | None, source: str) -> ModelInfo:
    """ModelInfo.from_json: the metadata JSON text of a model file; `source` names the file in error messages."""
    return ModelInfo.from_json(text, source)


def read_sidecar(model_path: Path) -> ModelInfo:
    """Read `<stem>.json` or `model.json` next to a model file (used for TensorRT engines)."""
    for candidate in (sidecar_path(model_path), model_path.with_name("model.json")):
        if candidate.exists():
            return parse_metadata(files.read_text(candidate, "metadata sidecar", files.TEXT_BYTES, ModelError),
                                  str(candidate))
    raise ModelError(
        f"no metadata sidecar for {model_path}: put the exporter's model.json "
        f"(or {sidecar_path(model_path).name}) next to it"
    )

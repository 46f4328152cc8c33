"""The exported model's contract: the names every artifact, runtime and the C library share, and the fused
graph's interface, checked at load (one image input, `scores`/`label`/`embedding` outputs).

The names are defined here once; export writes them, the runtimes read them, and runtime/c/src/contract.h
(generated from this module by runtime/c/tools/contract_header.py) gives them to the C library
(tests/test_contract.py keeps the header equal to this module). The metadata's schema is in metadata.py.

A graph that carries semobridge metadata but whose tensors do not match it (edited by hand,
exported by another tool, metadata copied from another model) is refused here with a
ModelError, instead of failing inside the inference library at the first predict.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from .errors import ModelError

if TYPE_CHECKING:
    from .metadata import ModelInfo

# ------------------------------------------------------------------ metadata keys and file formats
METADATA_KEY = "semobridge"  # our metadata's key: ONNX metadata_props, safetensors __metadata__, Triton parameters
CLASS_NAMES_KEY = "semobridge.class_names"  # ONNX metadata_props: the class names joined by "\n" (for C)
TEXT_METADATA_KEY = "semobridge.text"  # the text tower's (text.onnx) metadata
MODEL_FILE_FORMAT = "semobridge-model/1"  # semobridge's model file (`semobridge fit`; head.safetensors)
CLASS_FILE_FORMAT = "semobridge-classes/1"  # class files (docs/classes.md)
CLASS_FILE_NAMES = "class_names"  # a class file's uint8 tensor of the UTF-8 class names joined by "\n"
CLASS_FILE_OPEN_SET = ("temperature", "threshold")  # a class file's open-set metadata keys (decimal strings)
CLASS_FILE_SCORE = "score"  # a class file's abstention score (one of openset.SCORES; absent: "max_probability")

# ------------------------------------------------------------------ the fused graph's tensors
IMAGE_INPUT = "image"  # the image input: uint8 [N, H, W, 3] or float [N, 3, S, S]
#: the class-set inputs ([C, d], [C, d], [C, d], [C]), in class-file order (docs/classes.md)
HEAD_INPUTS = ("text_classifier", "bridged_prototypes", "image_prototypes", "class_kl")
SCORES, LABEL, EMBEDDING, FEATURES = "scores", "label", "embedding", "features"
BRIDGED_FEATURES = "bridged_features"  # bridge(q), what enrolment averages into P_c
#: the open-set decision the graph computes (openset.py): calibrated probabilities [N, C] and known [N] (bool), from
#: float32 scalar inputs that default to the fit's calibration; graphs exported before it have neither
PROBABILITIES, KNOWN = "probabilities", "known"
TEMPERATURE, THRESHOLD = "temperature", "threshold"
#: the chosen abstention score (openset.open_set_score): its value [N] (float32), the input that selects it (float32
#: scalar: 0 the top calibrated probability, 1 MCM; openset.mcm_weight); graphs exported before it have neither (their
#: decision's score is the top calibrated probability)
OPEN_SET_SCORE, MCM_WEIGHT = "open_set_score", "mcm_weight"
DECISION_OUTPUTS = (PROBABILITIES, KNOWN, OPEN_SET_SCORE)
DECISION_INPUTS = (TEMPERATURE, THRESHOLD, MCM_WEIGHT)
OUTPUTS = (SCORES, LABEL, EMBEDDING, FEATURES, BRIDGED_FEATURES, *DECISION_OUTPUTS)  # the fused graph's, in order
RUN_OUTPUTS = (SCORES, LABEL, EMBEDDING)  # what the runtimes and the servers return
TEXT_TOKENS, TEXT_EMBEDDING = "tokens", "text_embedding"  # the text tower's (text.onnx) input and output: n(e W)

# ------------------------------------------------------------------ artifact file names
SIDECAR_SUFFIX = ".json"  # `<stem>.json` beside every artifact: its metadata
INT8_SUFFIX = "_int8"  # `<stem>_int8.onnx`: the CPU int8 artifact beside `<stem>.onnx`
#: `<stem>_openvino_int8.xml` + `.bin`: the OpenVINO static int8 IR beside `<stem>.onnx` (its graph past the preprocessing)
OPENVINO_INT8_SUFFIX = "_openvino_int8"
ENGINE_SUFFIXES = (".engine", ".plan")  # TensorRT engines
#: what class enrolment reads beside the model (metadata "enrolment"; paths relative to the model file)
ENROLMENT_FILES = {"head": "head.safetensors", "text_model": "text.onnx"}


def sidecar_path(model_path: str | Path) -> Path:
    """`model.onnx` -> `model.json`, `model_fp16.engine` -> `model_fp16.json`."""
    return Path(model_path).with_suffix(SIDECAR_SUFFIX)


def int8_path(model_path: str | Path) -> Path:
    """`model.onnx` -> `model_int8.onnx`."""
    path = Path(model_path)
    return path.with_name(f"{path.stem}{INT8_SUFFIX}{path.suffix}")


def openvino_int8_path(model_path: str | Path) -> Path:
    """`model.onnx` -> `model_openvino_int8.xml` (its weights: ir_weights_path)."""
    path = Path(model_path)
    return path.with_name(f"{path.stem}{OPENVINO_INT8_SUFFIX}.xml")


def ir_weights_path(xml_path: str | Path) -> Path:
    """An OpenVINO IR's weights file: beside its .xml, the same name with .bin (as openvino.save_model writes it)."""
    return Path(xml_path).with_suffix(".bin")


_REEXPORT = "re-export the model with semobridge-export (its metadata must describe this graph)"


@dataclass(frozen=True)
class Tensor:
    """A graph input or output as a backend reports it."""

    name: str
    dtype: str  # numpy's name: "uint8", "float32", "int64", ...
    shape: tuple[int | None, ...]  # None: dynamic


def check_graph(info: ModelInfo, inputs: Sequence[Tensor], outputs: Sequence[Tensor], source: str,
                classes: int | None = None) -> None:
    """Raise ModelError unless the graph's tensors are the ones `info` (the metadata) describes; `classes`: the
    number of classes the graph scores with its own class set, when the backend could measure it."""
    size = info.image_size
    want_input = (Tensor(info.input_name, "uint8", (None, None, None, 3)) if info.input_kind == "uint8"
                  else Tensor(info.input_name, "float32", (None, 3, size, size)))
    if len(inputs) != 1:
        raise ModelError(f"{source}: the graph has {len(inputs)} inputs {[t.name for t in inputs]}, "
                         f"expected one ({_describe(want_input)})", hint=_REEXPORT)
    _check(inputs[0], want_input, "input", source)
    found = {t.name: t for t in outputs}
    for want in (Tensor(SCORES, "float32", (None, info.num_classes)), Tensor(LABEL, "int64", (None,)),
                 Tensor(EMBEDDING, "float32", (None, info.embedding_dim))):
        if want.name not in found:
            raise ModelError(f"{source}: the graph has no '{want.name}' output (it has {sorted(found)}); "
                             f"a semobridge model outputs scores, label and embedding", hint=_REEXPORT)
        _check(found[want.name], want, "output", source)
    if classes is not None and classes != info.num_classes:
        raise ModelError(f"{source}: the graph holds {classes} classes but its metadata names {info.num_classes}",
                         hint=_REEXPORT)


def _check(got: Tensor, want: Tensor, role: str, source: str) -> None:
    """Same dtype and rank, and equal dims wherever both are static (the input's name is not checked)."""
    fits = got.dtype == want.dtype and len(got.shape) == len(want.shape) and all(
        g is None or w is None or g == w for g, w in zip(got.shape, want.shape))
    if not fits:
        raise ModelError(f"{source}: {role} '{got.name}' is {_describe(got)} but the metadata describes "
                         f"{_describe(want)}", hint=_REEXPORT)


def _describe(tensor: Tensor) -> str:
    dims = ", ".join("?" if d is None else str(d) for d in tensor.shape)
    return f"{tensor.dtype} [{dims}]"

"""Enrolment: a class name and its shots' image embeddings -> the class's head tensors.

What it reads beside the model (named in the model's metadata, "enrolment"): the fitted head
(head.safetensors: W⁺, W, L and the fitted classes; a semobridge model file) and the text tower
(text.onnx, with its tokenizer's vocabulary). The prompts are the fit's: its templates filled
with the class name, plus the fit's descriptions of that class if it had any.
"""

from __future__ import annotations

import json
import threading
from os import PathLike
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np

from . import files, head, tensorfile
from .classes import ClassSet, Identity, check_name
from .errors import InputError, ModelError
from .metadata import ModelInfo
from .tokenizer import Tokenizer

if TYPE_CHECKING:  # imported on first use: the import of onnxruntime takes a while
    from .backends.session import SessionSettings

HEAD_FORMAT = "semobridge-model/1"  # semobridge's model file (semobridge/model.py)
TEXT_METADATA_KEY = "semobridge.text"


def _enrolment_path(model_path: Path, info: ModelInfo, key: str) -> Path:
    files = info.raw.get("enrolment") or {}
    if key not in files:
        raise ModelError(f"{model_path} was exported without class enrolment; re-export it with semobridge-export")
    path = model_path.parent / files[key]
    if not path.is_file():
        raise ModelError(f"{path} is missing: adding, removing and renaming classes need it beside {model_path.name} "
                         "(semobridge-export writes it with the default formats, onnx,text)")
    return path


class FittedHead:
    """The fitted head of an export: the bridge's fixed parts and the fitted class set."""

    def __init__(self, model_path: Path, info: ModelInfo):
        path = _enrolment_path(model_path, info, "head")
        tensors, meta = tensorfile.read(path, "model head")
        try:
            fields = json.loads(meta.get("semobridge", "{}"))
            if not isinstance(fields, dict) or fields.get("format") != HEAD_FORMAT:
                raise ValueError(f"format {fields.get('format') if isinstance(fields, dict) else None!r}")
            self.pinv = np.asarray(tensors["bridge.pinv"], np.float32)
            self.text_projection = np.asarray(tensors["bridge.text_projection"], np.float32)
            self.eos_length = float(tensors["bridge.eos_length"][0])
            names = tuple(fields["class_names"])
            fitted = ClassSet(names, *(tensors[n] for n in ("text_classifier", "bridged_prototypes", "image_prototypes", "class_kl")))
        except (ValueError, KeyError, TypeError, IndexError, RecursionError) as exc:  # RecursionError: nested too deep
            raise ModelError(f"{path} is not the head of this model ({exc}); re-export the model") from exc
        backbone = fields.get("backbone")
        if names != info.class_names or not isinstance(backbone, dict) or backbone.get("weights_hash") != info.raw["backbone"]["weights_hash"]:
            raise ModelError(f"{path} belongs to another export than {model_path.name}; re-export the model")
        self.fitted = fitted


class TextSide:
    """Prompts of a class -> its text classifier T_c, through the exported text tower."""

    def __init__(self, model_path: Path, info: ModelInfo, fitted: FittedHead, text_model: Path | None,
                 settings: SessionSettings):
        path = Path(text_model) if text_model is not None else _enrolment_path(model_path, info, "text_model")
        files.check_regular(path, "text model", files.GRAPH_BYTES, ModelError)
        from .backends.session import open_session

        self._session = open_session(path, settings, "text model")
        try:
            meta = json.loads(self._session.get_modelmeta().custom_metadata_map[TEXT_METADATA_KEY])
            tokenizer = meta["tokenizer"]
        except Exception as exc:  # ORT raises several unrelated types for unreadable files
            raise ModelError(f"{path} is not a semobridge text model ({exc}); re-export the model") from exc
        if meta["backbone"]["weights_hash"] != info.raw["backbone"]["weights_hash"]:
            raise ModelError(f"{path} is the text tower of another backbone than {model_path.name}'s; use the one exported with it")
        self._tokenizer = Tokenizer(path.parent / tokenizer["vocabulary"], tokenizer["context_length"], tokenizer["clean"])
        self._input = self._session.get_inputs()[0].name
        prompts = info.raw.get("prompts") or {}
        self.templates: list[str] = list(prompts.get("templates", []))
        self.descriptions: dict[str, list[str]] = dict(prompts.get("descriptions", {}))
        self._W = fitted.text_projection

    def prompts(self, name: str) -> list[str]:
        """The fit's templates filled with `name`, then the fit's descriptions of it (if any)."""
        return [t.format(name) for t in self.templates] + list(self.descriptions.get(name.lower(), []))

    def eos(self, prompts: Sequence[str]) -> np.ndarray:
        """Pooled EOS tokens [M, d_t] of the prompts."""
        return self._session.run(None, {self._input: self._tokenizer(list(prompts))})[0]

    def classifier(self, name: str, prompts: Sequence[str] | None = None) -> np.ndarray:
        """T_c [d] from `prompts`, or from the fit's prompts for `name`."""
        if prompts is None:
            prompts = self.prompts(name)
            if not prompts:
                raise InputError(f"no prompt for class {name!r}: this model records no prompt templates (it was fitted "
                                 "from embeddings), so pass prompts=[...], e.g. ['a photo of a blue mug.']")
        elif isinstance(prompts, str) or not prompts or not all(isinstance(p, str) and p.strip() for p in prompts):
            raise InputError(f"prompts for class {name!r} must be a non-empty list of non-empty strings, got {prompts!r}")
        return head.text_classifier(self.eos(list(prompts)), self._W)


def class_tensors(features: np.ndarray, text_classifier: np.ndarray, fitted: FittedHead,
                  classes: ClassSet) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(T_c, P_c, I_c) of a new class from its text classifier and its shots' image embeddings F [K, d] (not
    normalised); with no shots (K = 0), P_c and I_c are the stand-ins of a class from its name alone
    (head.stand_in_prototypes over `classes`, the set it joins)."""
    T = text_classifier
    if len(features) == 0:
        return (T, *head.stand_in_prototypes(T, classes.text_classifier, classes.bridged_prototypes, classes.image_prototypes))
    P = head.bridged_prototype(features, fitted.pinv, fitted.text_projection, fitted.eos_length)
    return T, P, head.image_prototype(features)


class Enrolment:
    """The class set of a loaded model, and its edits.

    `classes` is None while the model uses its own (fitted) classes; every edit replaces it with a
    new ClassSet under a lock, so a reader that takes `classes` once sees one whole set. The
    fitted head and the text tower are read on first need.
    """

    def __init__(self, model_path: Path, info: ModelInfo, head_inputs: Sequence[str], outputs: Sequence[str],
                 providers: Sequence[str], text_model: str | PathLike | None = None,
                 sessions: SessionSettings | None = None):
        """`providers`: the model's (the text tower runs on those of them ONNX Runtime has); `sessions`: the
        settings of the model's sessions (Classifier.load's threads, spinning)."""
        self.classes: ClassSet | None = None
        self._path, self._info, self._providers, self._sessions = model_path, info, providers, sessions
        self._head_inputs, self._outputs = tuple(head_inputs), tuple(outputs)
        self._text_model = Path(text_model) if text_model is not None else None
        self._fitted: FittedHead | None = None
        self._text: TextSide | None = None
        self._lock = threading.Lock()

    def identity(self) -> Identity:
        if not self._head_inputs:
            raise ModelError(f"{self._path} has its classes baked in; re-export it with semobridge-export to change them")
        return Identity.of(self._info.raw, str(self._path))

    def fitted(self) -> FittedHead:
        if self._fitted is None:
            self.identity()
            self._fitted = FittedHead(self._path, self._info)
        return self._fitted

    def current(self) -> ClassSet:
        classes = self.classes
        return classes if classes is not None else self.fitted().fitted

    def names(self) -> tuple[str, ...]:
        classes = self.classes
        return classes.names if classes is not None else self._info.class_names

    def add(self, name: str, features: Callable[[], np.ndarray], prompts: Sequence[str] | None = None) -> None:
        """Enrol `name` from its shots' embeddings (`features()` computes them; none: from its name and prompts
        alone) and its prompts."""
        check_name(name, self.names())
        fitted = self.fitted()
        if "features" not in self._outputs:
            raise ModelError(f"{self._path} has no 'features' output; re-export it with semobridge-export")
        shots, T = features(), self.text().classifier(name, prompts)
        self._edit(lambda classes: classes.added(name, *class_tensors(shots, T, fitted, classes)))

    def text(self) -> TextSide:
        """The text tower (read on first use)."""
        if self._text is None:
            from .backends.session import SessionSettings

            settings = (self._sessions or SessionSettings()).beside(self._providers)
            self._text = TextSide(self._path, self._info, self.fitted(), self._text_model, settings)
        return self._text

    def remove(self, name: str) -> None:
        self._edit(lambda classes: classes.removed(name))

    def rename(self, old: str, new: str) -> None:
        self._edit(lambda classes: classes.renamed(old, new))

    def save(self, path: str | PathLike) -> None:
        self.current().save(path, self.identity())

    def load(self, path: str | PathLike) -> None:
        classes = ClassSet.load(path, self.identity())
        self._edit(lambda _: classes)

    def _edit(self, change: Callable[[ClassSet], ClassSet]) -> None:
        with self._lock:
            self.classes = change(self.current())

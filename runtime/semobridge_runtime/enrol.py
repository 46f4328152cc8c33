"""Enrolment: a class name, its prompts and its shots -> the class's head tensors.

What it reads beside the model (named in the model's metadata, "enrolment"): the fitted head
(head.safetensors, a semobridge model file: the fitted classes) and the text tower (text.onnx,
with its tokenizer's vocabulary). The prompts are the fit's: its templates filled with the class
name, plus the fit's descriptions of that class if it had any. The maths of the head is in the
graphs (traced from semobridge): the text tower gives each prompt's text embedding and the model
each shot's features and bridged features; enrolment averages and normalises them (head.py).
"""

from __future__ import annotations

import json
import threading
import warnings
from dataclasses import replace
from os import PathLike
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np

from . import calibration, files, head, openset, tensorfile
from .classes import ClassSet, Identity, check_name
from .contract import (BRIDGED_FEATURES, FEATURES, HEAD_INPUTS, METADATA_KEY, MODEL_FILE_FORMAT, OPEN_SET_SCORE, TEXT_EMBEDDING,
                       TEXT_METADATA_KEY)
from .errors import InputError, ModelError
from .metadata import ModelInfo, TextInfo
from .tokenizer import Tokenizer

if TYPE_CHECKING:  # imported on first use: the import of onnxruntime takes a while
    from .backends.session import SessionSettings

TEXT_OUTPUT = TEXT_EMBEDDING  # the text tower's output: n(e W) per prompt
SHOT_OUTPUTS = (FEATURES, BRIDGED_FEATURES)  # what enrolment runs the model for: F and bridge(F) per shot


def _enrolment_path(model_path: Path, info: ModelInfo, key: str) -> Path:
    if info.enrolment is None:
        raise ModelError(f"{model_path} was exported without class enrolment; re-export it with semobridge-export")
    path = model_path.parent / getattr(info.enrolment, key)
    if not path.is_file():
        raise ModelError(f"{path} is missing: adding, removing and renaming classes need it beside {model_path.name} "
                         "(semobridge-export writes it with the default formats, onnx,text)")
    return path


class FittedHead:
    """The fitted class set of an export (the graph's class-set defaults, which ONNX Runtime cannot read back)."""

    def __init__(self, model_path: Path, info: ModelInfo):
        path = _enrolment_path(model_path, info, "head")
        tensors, meta = tensorfile.read(path, "model head")
        try:
            fields = json.loads(meta.get(METADATA_KEY, "{}"), object_pairs_hook=tensorfile.unique_keys)
            if not isinstance(fields, dict) or fields.get("format") != MODEL_FILE_FORMAT:
                raise ValueError(f"format {fields.get('format') if isinstance(fields, dict) else None!r}")
            names = tuple(fields["class_names"])
            self.blend = calibration.Blend(tuple(float(fields["params"][k]) for k in calibration.PARAMS))
            fitted = ClassSet(names, *(tensors[n] for n in HEAD_INPUTS))
        except (ValueError, KeyError, TypeError, IndexError, RecursionError) as exc:  # RecursionError: nested too deep
            raise ModelError(f"{path} is not the head of this model ({exc}); re-export the model") from exc
        backbone = fields.get("backbone")
        weights = info.backbone.weights_hash if info.backbone is not None else None
        if names != info.class_names or not isinstance(backbone, dict) or backbone.get("weights_hash") != weights:
            raise ModelError(f"{path} belongs to another export than {model_path.name}; re-export the model")
        data = calibration.CalibrationData.of(tensors, len(names), fitted.embedding_dim, str(path))
        fitted_open = info.open_set.decision if info.open_set is not None else None
        self.accept = fitted_open.accept if fitted_open is not None else openset.ACCEPT
        #: the fitted classes with the model's calibration and, from exports that keep them, its calibration data
        self.fitted = ClassSet(names, fitted.text_classifier, fitted.bridged_prototypes, fitted.image_prototypes,
                               fitted.class_kl, None, *((fitted_open.temperature, fitted_open.threshold) if fitted_open
                                                        else (None, None)), data,
                               fitted_open.score if fitted_open else openset.SCORE)

    def recalibrated(self, classes: ClassSet, scores: Sequence[str] = openset.SCORES) -> ClassSet:
        """`classes` with T, score (one of `scores`: those the graph computes) and θ recomputed from its calibration
        data (calibration.recalibrate); a set without calibration data keeps its T, score and θ; a set whose data
        holds no held-out image gets none (the model's apply)."""
        if classes.calibration is None:
            return classes
        found = calibration.recalibrate(classes, classes.calibration, self.blend, self.accept, scores)
        if found is None:
            return replace(classes, temperature=None, threshold=None, score=openset.SCORE)
        return replace(classes, temperature=found.temperature, threshold=found.threshold, score=found.score)


class TextSide:
    """Prompts of a class -> its text classifier T_c, through the exported text tower."""

    def __init__(self, model_path: Path, info: ModelInfo, text_model: Path | None, settings: SessionSettings):
        path = Path(text_model) if text_model is not None else _enrolment_path(model_path, info, "text_model")
        files.check_regular(path, "text model", files.GRAPH_BYTES, ModelError)
        from .backends.session import open_session

        self._session = open_session(path, settings, "text model")
        try:
            text = self._session.get_modelmeta().custom_metadata_map.get(TEXT_METADATA_KEY)
        except Exception as exc:  # ORT raises several unrelated types for unreadable files
            raise ModelError(f"{path} is not a semobridge text model ({exc}); re-export the model") from exc
        meta = TextInfo.from_json(text, str(path))
        if info.backbone is None or meta.backbone.weights_hash != info.backbone.weights_hash:
            raise ModelError(f"{path} is the text tower of another backbone than {model_path.name}'s; use the one exported with it")
        if TEXT_OUTPUT not in {o.name for o in self._session.get_outputs()}:
            raise ModelError(f"{path} is the text tower of an older export (it has no '{TEXT_OUTPUT}' output: it "
                             "gives the pooled token before the projection, whose maths the runtime no longer holds)",
                             hint="re-export the model with semobridge-export (class files made with it still load)")
        tokenizer = meta.tokenizer
        self._tokenizer = Tokenizer(path.parent / tokenizer.vocabulary, tokenizer.context_length, tokenizer.clean)
        self._input = self._session.get_inputs()[0].name
        self.templates: list[str] = list(info.prompts.templates)
        self.descriptions: dict[str, list[str]] = {k: list(v) for k, v in info.prompts.descriptions.items()}

    def prompts(self, name: str) -> list[str]:
        """The fit's templates filled with `name`, then the fit's descriptions of it (if any)."""
        return [t.format(name) for t in self.templates] + list(self.descriptions.get(name.lower(), []))

    def embeddings(self, prompts: Sequence[str]) -> np.ndarray:
        """Text embeddings n(e W) [M, d] of the prompts (unit rows)."""
        return self._session.run([TEXT_OUTPUT], {self._input: self._tokenizer(list(prompts))})[0]

    def classifier(self, name: str, prompts: Sequence[str] | None = None) -> np.ndarray:
        """T_c [d] from `prompts`, or from the fit's prompts for `name`."""
        if prompts is None:
            prompts = self.prompts(name)
            if not prompts:
                raise InputError(f"no prompt for class {name!r}: this model records no prompt templates (it was fitted "
                                 "from embeddings), so pass prompts=[...], e.g. ['a photo of a blue mug.']")
        elif isinstance(prompts, str) or not prompts or not all(isinstance(p, str) and p.strip() for p in prompts):
            raise InputError(f"prompts for class {name!r} must be a non-empty list of non-empty strings, got {prompts!r}")
        return head.prototype(self.embeddings(list(prompts)))


def class_tensors(text_classifier: np.ndarray, shots: Sequence[np.ndarray] | None,
                  classes: ClassSet) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(T_c, P_c, I_c) of a new class from its text classifier and its shots' (features [K, d], bridged_features
    [K, d]), the fused graph's outputs; with no shots (None), P_c and I_c are the stand-ins of a class from its
    name alone (head.stand_in_prototypes over `classes`, the set it joins)."""
    T = text_classifier
    if shots is None:
        return (T, *head.stand_in_prototypes(T, classes.text_classifier, classes.bridged_prototypes, classes.image_prototypes))
    features, bridged = shots
    return T, head.prototype(bridged), head.prototype(features)


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
        return Identity.of(self._info, str(self._path))

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

    def add(self, name: str, shots: Callable[[], Sequence[np.ndarray]] | None,
            prompts: Sequence[str] | None = None) -> None:
        """Enrol `name` from its prompts and its shots: `shots()` runs the model on them for SHOT_OUTPUTS (None: from
        its name and prompts alone). A class of that name enrolled from its name alone is upgraded in place: its
        stand-in prototypes replaced by its shots' (its text classifier kept unless `prompts` are given)."""
        current = self.current() if self.classes is not None or self._head_inputs else None
        upgrade = current is not None and name in current.names and current.is_name_only(name)
        if not upgrade:
            check_name(name, self.names())
        self.fitted()  # baked-in classes or a missing head file: refused before the images run
        missing = [o for o in SHOT_OUTPUTS if o not in self._outputs] if shots is not None else []
        if missing:
            raise ModelError(f"{self._path} has no {' or '.join(repr(o) for o in missing)} output: it was exported "
                             "before enrolment took the bridge from the model's graph",
                             hint="re-export it with semobridge-export (removing, renaming and class files work as "
                                  "they are)")
        if upgrade:
            if shots is None:
                raise InputError(f"{name!r} is already a class from its name alone",
                                 hint="pass images of it to give it real prototypes, or remove it first")
            ran = tuple(shots())
            T = self.text().classifier(name, prompts) if prompts is not None else None  # None: its own stays
            self._edit(lambda classes: classes.upgraded(name, *class_tensors(
                classes.text_classifier[classes.index(name)] if T is None else T, ran, classes), shots=ran))
            return
        ran, T = tuple(shots()) if shots is not None else None, self.text().classifier(name, prompts)
        self._edit(lambda classes: classes.added(name, *class_tensors(T, ran, classes), shots=ran))

    def text(self) -> TextSide:
        """The text tower (read on first use)."""
        if self._text is None:
            from .backends.session import SessionSettings

            settings = (self._sessions or SessionSettings()).beside(self._providers)
            self._text = TextSide(self._path, self._info, self._text_model, settings)
        return self._text

    def remove(self, name: str) -> None:
        self._edit(lambda classes: classes.removed(name))

    def rename(self, old: str, new: str) -> None:
        self._edit(lambda classes: classes.renamed(old, new), recalibrate=False)

    def save(self, path: str | PathLike) -> None:
        self.current().save(path, self.identity())

    def load(self, path: str | PathLike) -> None:
        """Use a class file's set with the T and θ it carries; a file without them (written before class files
        carried them) uses the model's, and keeps them through edits (said once, as a warning)."""
        classes = ClassSet.load(path, self.identity())
        if classes.temperature is None and classes.calibration is None:
            fitted = self.fitted().fitted
            warnings.warn(f"class file {path} carries no open-set calibration (written before class files kept it): the "
                          "model's temperature and threshold apply, also after edits; enrol its classes again from the "
                          "model's own to recalibrate", stacklevel=4)
            classes = replace(classes, temperature=fitted.temperature, threshold=fitted.threshold, score=fitted.score)
        self._edit(lambda _: classes, recalibrate=False)

    def _edit(self, change: Callable[[ClassSet], ClassSet], recalibrate: bool = True) -> None:
        with self._lock:
            changed = change(self.current())
            scores = openset.SCORES if OPEN_SET_SCORE in self._outputs else (openset.SCORE,)  # an older graph: no MCM
            self.classes = self.fitted().recalibrated(changed, scores) if recalibrate else changed

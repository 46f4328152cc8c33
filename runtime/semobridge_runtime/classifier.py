"""`Classifier`: load an exported model and classify or embed images."""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass, replace
from os import PathLike
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np

from . import files, openset
from .backends import Backend
from .backends.choice import BACKENDS, choose
from .classes import ClassSet
from .contract import (DECISION_OUTPUTS, EMBEDDING, ENGINE_SUFFIXES, KNOWN, MCM_WEIGHT, OPEN_SET_SCORE, PROBABILITIES,
                       RUN_OUTPUTS)
from .enrol import SHOT_OUTPUTS, Enrolment
from .errors import InputError, ModelError
from .images import FastJpeg
from .inputs import Group, float_batch, uint8_groups
from .limits import ImageLimits, overrides
from .metadata import ModelInfo
from .video import STREAM_TIMEOUT_S, FrameStream, open_stream

if TYPE_CHECKING:  # imported where a model loads: the import of onnxruntime takes a while
    from .backends.session import SessionSettings


def check_top_k(top_k: object) -> None:
    if not isinstance(top_k, int) or top_k < 1:
        raise InputError(f"top_k must be a positive int, got {top_k!r}")


@dataclass(frozen=True)
class TopK:
    """The k best classes per image, best first."""

    indices: np.ndarray  # int64 [N, k]
    names: list[list[str]]
    scores: np.ndarray  # float32 [N, k]
    probabilities: np.ndarray  # float32 [N, k], calibrated


@dataclass(frozen=True)
class Prediction:
    """Results for N images, in the order they were given.

    An image the model calls unknown (its open_set_score, the model's abstention score, below the threshold) has
    label -1, class name None and known False; its scores, probabilities and top_k are still given.
    """

    labels: np.ndarray  # int64 [N]; -1: unknown
    class_names: list[str | None]  # predicted class name per image; None: unknown
    scores: np.ndarray  # float32 [N, C], the blend scores
    top_k: TopK
    embeddings: np.ndarray  # float32 [N, d], L2-normalised
    known: np.ndarray  # bool [N]
    probabilities: np.ndarray  # float32 [N, C], softmax(scores / T): rows sum to 1
    open_set_score: np.ndarray  # float32 [N], the abstention score `known` thresholds (Classifier.score names it)

    def __len__(self) -> int:
        return len(self.labels)

    @classmethod
    def of(cls, scores: np.ndarray, labels: np.ndarray, embeddings: np.ndarray, class_names: Sequence[str],
           top_k: int, probabilities: np.ndarray, known: np.ndarray, open_set_score: np.ndarray) -> Prediction:
        """The prediction for a model's outputs (also what RemoteClassifier returns); top_k checked by the caller.

        labels: the graph's argmax (or a server's, -1 already for unknown); probabilities, known, open_set_score: the
        graph's open-set decision (export/fused.py). An image that is not known gets label -1."""
        known = np.asarray(known, bool) & (np.asarray(labels) >= 0)
        labels = np.where(known, labels, openset.UNKNOWN).astype(np.int64)
        probs = np.asarray(probabilities, np.float32)
        k = min(top_k, scores.shape[1])
        order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        top = TopK(order, [[class_names[i] for i in row] for row in order], np.take_along_axis(scores, order, 1),
                   np.take_along_axis(probs, order, 1))
        names = [class_names[i] if i >= 0 else None for i in labels]
        return cls(labels, names, scores, top, embeddings, known, probs, np.asarray(open_set_score, np.float32))


def unknown_threshold(unknown: object, info: ModelInfo, source: str, decides: bool = True) -> tuple[float, float | None]:
    """(temperature, threshold) for Classifier.load's `unknown`: "auto" (the model's calibration), None (off) or a
    threshold of one's own on the model's abstention score (model_score). A model exported without calibration, or
    before its graph computed the decision (`decides` False: no probabilities and known outputs), runs with unknown
    off and, for "auto", says so once (a warning); its probabilities are softmax(scores / T) with the metadata's T,
    else T = 1."""
    fitted = info.open_set.decision if info.open_set is not None else None
    temperature = fitted.temperature if fitted is not None else 1.0
    if isinstance(unknown, str) and unknown == "auto":
        if fitted is None or not decides:
            why = ("carries no open-set calibration (exported before it existed, or fitted without held-out images): "
                   "every image gets a class, and probabilities are uncalibrated (T = 1)"
                   + (", unless a class file brings its own calibration" if decides else "") if fitted is None else
                   "was exported before its graph decided 'unknown': every image gets a class")
            warnings.warn(f"{source} {why}; re-export the model to answer 'unknown'", stacklevel=3)
            return temperature, None
        return temperature, fitted.threshold
    if unknown is None:
        return temperature, None
    if isinstance(unknown, str):
        raise InputError(f"unknown={unknown!r} is not understood",
                         hint="pass unknown='auto' (the model's threshold), None (off) or a number in [0, 1]")
    threshold = openset.check_threshold(unknown)
    if not decides:
        raise ModelError(f"{source} was exported before its graph decided 'unknown': it cannot apply unknown={unknown!r}",
                         hint="re-export the model with semobridge-export, or load it with unknown=None")
    return temperature, threshold


def model_score(info: ModelInfo, scored: bool, source: str) -> str:
    """The abstention score (openset.SCORES) of a model: its calibration's, max_probability when uncalibrated.
    `scored`: the graph computes the chosen score (an OPEN_SET_SCORE output, an MCM_WEIGHT input); a graph exported
    before it decides on the top calibrated probability, so a model whose metadata chose another is refused."""
    score = info.open_set.decision.score if info.open_set is not None else openset.SCORE
    check_scored(score, scored, source)
    return score


def check_scored(score: str, scored: bool, source: str) -> None:
    """ModelError where a graph exported before the chosen score (no MCM_WEIGHT input) would have to apply `score`."""
    if score != openset.SCORE and not scored:
        raise ModelError(f"{source} chose the open-set score {score!r}, but its graph was exported before it computed "
                         f"that score (it has no '{MCM_WEIGHT}' input and no '{OPEN_SET_SCORE}' output)",
                         hint="re-export the model with semobridge-export")


class Classifier:
    """A loaded model and its class set.

    One instance may serve several threads: predictions read the class set once per call, and
    class edits (add_class, remove_class, rename_class, load_classes) swap in a new set atomically.
    """

    def __init__(self, backend: Backend, limits: ImageLimits, path: Path, text_model: str | PathLike | None = None,
                 sessions: SessionSettings | None = None) -> None:
        """`sessions`: the ONNX Runtime settings of the sessions it opens besides the backend's (the text tower)."""
        self._backend = backend
        self._limits = limits
        self._path = path
        self._temperature, self._threshold = 1.0, None  # the model's open-set decision (load sets it)
        self._auto = False  # unknown="auto": a class set's own calibration replaces the model's threshold
        self._decides = {PROBABILITIES, KNOWN} <= set(backend.outputs)  # the graph computes the decision
        self._scored = OPEN_SET_SCORE in backend.outputs  # ... on the chosen score (fed MCM_WEIGHT); else max probability
        self._score = model_score(backend.info, self._scored, str(path))  # the model's abstention score
        self._enrolment = Enrolment(path, backend.info, backend.head_inputs, backend.outputs, backend.providers,
                                     text_model, sessions)
        self._why = "given"  # why this backend runs (Classifier.load's choice)

    @classmethod
    def load(cls, path: str | PathLike, backend: str = "auto", providers: Sequence[str] | None = None,
             intra_op_num_threads: int | None = None, allow_spinning: bool = True, prefer_int8: bool = True, *,
             classes: str | PathLike | None = None, text_model: str | PathLike | None = None,
             openvino_precision: str = "auto", openvino_cache: str | PathLike | None = None,
             max_side: int | None = None, max_pixels: int | None = None,
             max_aspect: float | None = None, release_after_bytes: int | None = None,
             fast_jpeg: bool = False, unknown: str | float | None = "auto") -> Classifier:
        """Load an `.onnx` model (ONNX Runtime) or a `.engine`/`.plan` file (TensorRT).

        backend: "auto", "onnxruntime", "openvino" or "tensorrt". "auto": TensorRT for engine files; for .onnx
            OpenVINO on CPUs with matrix engines (AMX) where the export measured its labels, else ONNX Runtime
            (backends/choice.py; the repr says which runs and why).
        providers: ONNX Runtime execution providers; default TensorRT, CUDA, CPU as available.
        intra_op_num_threads: 0..256 (0 or None: ONNX Runtime's default, one per core).
        allow_spinning: ONNX Runtime's CPU threads spin between calls (its default, lowest latency);
            False lets them sleep, leaving the cores to the app's other threads and sessions.
        prefer_int8: on the CPU only, load `model_int8.onnx` from beside `model.onnx` instead when its export
            measured the same labels as fp32 on >= 99% of the fit images (see `precision.int8_beside`; the
            repr says which precision runs). False: load `path` as given.
        classes: a class file (save_classes, semobridge-classes) to use instead of the fitted classes.
        text_model: the text tower for add_class (default: the export's text.onnx; e.g. text_int8.onnx).
        openvino_precision: the OpenVINO encoder's precision ("auto": bf16 where the CPU computes it, "f32",
            "bf16", "f16", or "int8": the static int8 IR that semobridge-export --int8-cpu wrote beside the model with
            nncf installed); the preprocessing runs in f32 whatever this says. Any but "auto" with backend="auto"
            loads OpenVINO (it is asked for).
        openvino_cache: a folder for OpenVINO's compiled-model cache (faster later loads); None writes nothing.
        max_side, max_pixels, max_aspect: the largest images accepted (longest side, height x width,
            longest / shortest side); None keeps the model's (its metadata's "limits", else 16384,
            2**26 and 32). Larger images are refused before they are decoded or run.
        release_after_bytes: ONNX Runtime's CPU arena keeps the memory of the largest run for the next; after a
            run on at least this many bytes of pixels it gives back what it holds unused (None: never, its default).
        fast_jpeg: decode JPEG files (and PIL JPEGs not yet loaded) DCT-scaled to 1/2, 1/4 or 1/8 while their
            shorter side stays >= twice the model's input side, then resize exactly as always: several times faster
            on camera photos, pixels slightly different from a full decode (runtime/README.md).
        unknown: "auto": an image whose abstention score (`Prediction.open_set_score`) is below the model's
            calibrated threshold is unknown (label -1); None: every image gets a class; a number in [0, 1]: your
            own threshold on that score. The score is the one the fit chose for the model (or that a loaded class
            set names): the top calibrated probability ("max_probability") or MCM ("mcm"); `Classifier.score` and
            the repr name it (docs/method.md, "The open set"). Models exported before calibration existed
            run with unknown off and say so once.
        """
        from .backends.session import SessionSettings

        path, raised = Path(path), overrides(max_side, max_pixels, max_aspect)
        sessions = SessionSettings(providers, intra_op_num_threads, allow_spinning)  # every ONNX Runtime session's
        if openvino_precision != "auto" and backend in BACKENDS and backend != "openvino":  # it asks for OpenVINO
            if backend != "auto" or path.suffix in ENGINE_SUFFIXES:
                raise InputError(f"openvino_precision={openvino_precision!r} applies to the OpenVINO backend, not to "
                                 f"{path.name} on backend={backend!r}",
                                 hint="leave openvino_precision='auto', or load the .onnx model with backend='openvino'")
            backend = "openvino"
        choice = choose(path, backend, sessions.providers, prefer_int8)  # refuses an unknown backend
        if not path.is_file():
            raise ModelError(f"model file not found: {path}" if not path.is_dir() else
                             f"{path} is a directory, not a model file", hint="pass the exported model.onnx")
        files.check_regular(path, "model file", files.GRAPH_BYTES, ModelError)  # not a FIFO or device, bounded
        path = choice.path
        if choice.backend == "onnxruntime":
            from .backends.ort import OnnxRuntimeBackend
            loaded: Backend = OnnxRuntimeBackend(path, sessions, release_after_bytes)
        elif choice.backend == "openvino":
            from .backends.openvino import OpenVINOBackend
            loaded = OpenVINOBackend(path, openvino_precision, sessions.intra_op_num_threads, openvino_cache)
        else:
            from .backends.trt import TensorRTBackend
            loaded = TensorRTBackend(path)
        limits = replace(loaded.info.limits, **raised)
        if fast_jpeg:
            limits = FastJpeg(**asdict(limits), draft_side=2 * loaded.info.image_size)
        clf = cls(loaded, limits, path, text_model, sessions)
        clf._why = choice.reason
        clf._temperature, clf._threshold = unknown_threshold(unknown, loaded.info, str(path), clf._decides)
        # "auto" (anything else was refused), on a graph that decides: clf.threshold is then the one applied
        clf._auto = isinstance(unknown, str) and clf._decides
        if classes is not None:
            clf.load_classes(classes)
        elif loaded.needs_classes:  # no defaults in the graph: feed the fitted classes
            clf._enrolment.classes = clf._enrolment.fitted().fitted
        return clf

    @property
    def info(self) -> ModelInfo:
        return self._backend.info

    @property
    def path(self) -> Path:
        """The model file loaded (`model_int8.onnx` when prefer_int8 chose it)."""
        return self._path

    def _decision(self, classes: ClassSet | None) -> tuple[float, float | None, str]:
        """(T, θ, score) for predictions with `classes`: the class set's calibration where it carries one (recomputed
        by every edit), else the model's; θ as `unknown` said (the calibrated one for "auto"), on `score`. A threshold
        of one's own (unknown=VALUE) stays on the model's score, the one it was given for: a class set that chose
        another score (MCM's values sit just above 1 / C) would silently turn it into "everything unknown"."""
        if classes is None or classes.temperature is None:
            return self._temperature, self._threshold, self._score
        own = self._threshold is not None and not self._auto  # unknown=VALUE
        return (classes.temperature, classes.threshold if self._auto else self._threshold,
                self._score if own else classes.score)

    @property
    def temperature(self) -> float:
        """T of the probabilities softmax(scores / T) (the class set's, recomputed when classes are edited)."""
        return self._decision(self._enrolment.classes)[0]

    @property
    def threshold(self) -> float | None:
        """The abstention score (`score`) below which an image is unknown (the class set's for unknown="auto",
        recomputed when classes are edited); None: unknown is off."""
        return self._decision(self._enrolment.classes)[1]

    @property
    def score(self) -> str:
        """The abstention score (openset.SCORES) that `threshold` applies to and `Prediction.open_set_score` gives:
        "max_probability" (the top calibrated probability) or "mcm" (Maximum Concept Matching); the model's, or a
        loaded class set's."""
        return self._decision(self._enrolment.classes)[2]

    @property
    def class_names(self) -> list[str]:
        return list(self._enrolment.names())

    @property
    def classes(self) -> ClassSet:
        """The class set in use: names and the graph's class-set inputs (read-only arrays; `.feeds()`)."""
        return self._enrolment.current()

    def add_class(self, name: str, images: Any, prompts: Sequence[str] | None = None) -> None:
        """Enrol a class from a few images of it (paths, arrays or PIL images, as predict takes), or from its
        name alone (`images` empty or None).

        Its text classifier comes from the fit's prompt templates (and descriptions) filled with
        `name`, or from `prompts` if given; its prototypes from the images' embeddings, computed by
        this model's own graph; without images, from its text classifier (docs/method.md, "A class from
        its name"; add it again with images to upgrade it in place). Every class's weight, and the set's open-set
        temperature and threshold (docs/classes.md, "Unknown"), are recomputed over the new class set.
        """
        if images is None or (isinstance(images, (list, tuple)) and not images):
            self._enrolment.add(name, None, prompts)
            return
        self._enrolment.add(name, lambda: self._run(images, SHOT_OUTPUTS, self._enrolment.classes), prompts)

    def embed_text(self, texts: Sequence[str]) -> np.ndarray:
        """L2-normalised text embeddings n(eos · W), float32 [M, d] (the text tower's output): compare them with
        `embed`'s image embeddings (cosine = dot product) for text-to-image search."""
        if isinstance(texts, str) or not isinstance(texts, Sequence) or not texts or not all(
                isinstance(t, str) and t.strip() for t in texts):
            raise InputError(f"embed_text takes a non-empty list of non-empty strings, got {texts!r:.80}",
                             hint='e.g. clf.embed_text(["a red mug"])')
        return self._enrolment.text().embeddings(list(texts))

    def remove_class(self, name: str) -> None:
        """Forget a class; every remaining class's weight is recomputed."""
        self._enrolment.remove(name)

    def rename_class(self, old: str, new: str) -> None:
        self._enrolment.rename(old, new)

    def save_classes(self, path: str | PathLike) -> None:
        """Write the class set to a class file (atomic: on failure an existing file stays as it was)."""
        self._enrolment.save(path)

    def load_classes(self, path: str | PathLike) -> None:
        """Use the classes of a class file (written for this model's backbone and bridge)."""
        before = self._enrolment.classes
        self._enrolment.load(path)
        try:
            if self._decides:  # a score this graph cannot compute is refused now, and the classes kept as they were
                check_scored(self.score, self._scored, f"{self._path} with the class file {path}")
        except ModelError:
            self._enrolment.classes = before
            raise

    @property
    def providers(self) -> tuple[str, ...]:
        """Execution providers actually in use, in priority order."""
        return self._backend.providers

    @property
    def fixed_size(self) -> tuple[int, int] | None:
        """(height, width) every image must have, for --fixed-size exports; else None."""
        return self._backend.fixed_hw

    @property
    def limits(self) -> ImageLimits:
        """The largest images this classifier takes (see `load`)."""
        return self._limits

    @property
    def max_batch(self) -> int | None:
        """Images per model run (larger inputs are split); None when unlimited."""
        return self._backend.max_batch

    @property
    def precision(self) -> str:
        """The precision the encoder runs at: the file's (fp32, fp16, int8), or under OpenVINO the one it compiled
        (bf16 on CPUs that compute bf16)."""
        runs = getattr(self._backend, "precision", None)  # OpenVINO's name: "f32", "bf16", "f16"
        return {"f32": "fp32", "f16": "fp16"}.get(runs, runs) if runs else self.info.precision

    def __repr__(self) -> str:
        agreement = self.info.int8.label_agreement if self.info.int8 is not None else None
        runs = getattr(self._backend, "precision", None)  # OpenVINO: the precision its encoder runs at
        _, threshold, score = self._decision(self._enrolment.classes)
        return (f"Classifier(backend={self._backend.name!r}, providers={list(self.providers)}, "
                f"classes={len(self.class_names)}, input={self.info.input_kind!r}, precision={self.info.precision!r}"
                + (f", int8_label_agreement={agreement:.1%}" if agreement is not None else "")
                + (f", runs={runs!r}" if runs else "")
                + f", unknown={'off' if threshold is None else f'{score} < {threshold:.4g}'}, why={self._why!r})")

    def predict(self, images: Any, top_k: int = 5) -> Prediction:
        """Classify images: one HxWx3 uint8 array, an [N,H,W,3] batch, a list, paths, PIL images or `Frame`s
        (camera buffers with padded rows, BGR, RGBA, BGRA or NV12; see semobridge_runtime.frames).

        Raises InputError for images it cannot take (the message says why and how to fix them),
        ModelError when this model cannot take images at all (float variant), BackendError when
        the inference library fails.
        """
        check_top_k(top_k)
        classes = self._enrolment.classes  # one class set for the whole call, whatever edits happen meanwhile
        names = classes.names if classes is not None else self.info.class_names
        if not self._decides:  # exported before the graph decided: closed set, probabilities from the scores
            scores, labels, embeddings = self._run(images, RUN_OUTPUTS, classes)
            _, known, probs = openset.decide(scores, self._decision(classes)[0], None, labels)
            return Prediction.of(scores, labels, embeddings, names, top_k, probs, known, openset.abstention_score(probs))
        if not self._scored:  # exported before the chosen score: the graph decides on the top probability
            *outputs, probs, known = self._run(images, (*RUN_OUTPUTS, PROBABILITIES, KNOWN), classes)
            return Prediction.of(*outputs, names, top_k, probs, known, openset.abstention_score(probs))
        outputs = self._run(images, (*RUN_OUTPUTS, *DECISION_OUTPUTS), classes)
        return Prediction.of(*outputs[:3], names, top_k, *outputs[3:])

    def _decision_feeds(self, classes: ClassSet | None) -> dict[str, np.ndarray]:
        """The graph's temperature, threshold and MCM weight inputs (contract.DECISION_INPUTS, float32 scalars; the
        weight where the graph has it) for `classes` (see _decision); unknown off feeds openset.THRESHOLD_OFF."""
        temperature, threshold, score = self._decision(classes)
        check_scored(score, self._scored, f"{self._path}'s class set")  # (an edit recalibrated it to another score)
        off = openset.THRESHOLD_OFF if threshold is None else threshold
        feeds = {"temperature": np.array(temperature, np.float32), "threshold": np.array(off, np.float32)}
        if self._scored:
            feeds[MCM_WEIGHT] = np.array(openset.mcm_weight(score), np.float32)
        return feeds

    def stream(self, source: str | PathLike, *, every: int | None = None, fps: float | None = None,
               smooth: float | None = None, options: Mapping[str, str] | None = None,
               timeout: float = STREAM_TIMEOUT_S) -> FrameStream:
        """Classify frames of a video file, a stream URL (rtsp://...) or a camera (/dev/videoN), as they are decoded.

        Iterate the result for one `FrameResult` (frame, time_s, label, class_name, score, scores) per classified
        frame: every `every`-th frame, or `fps` frames a second of video, or else every frame; `smooth` (0 < a <= 1)
        averages the scores over the classified frames (s_k = a p_k + (1 - a) s_(k-1)). `options`: FFmpeg options
        for the source (e.g. {"rtsp_transport": "udp"}, {"video_size": "1280x720"}); `timeout`: seconds a stream
        may take to open and then to deliver each read. The exact rules are in semobridge_runtime.video.
        Needs the `video` extra (PyAV); opens the source now and releases it when iterated to the end or closed.
        """
        return open_stream(self, source, every=every, fps=fps, smooth=smooth, options=options, timeout=timeout)

    def embed(self, images: Any) -> np.ndarray:
        """L2-normalised image embeddings, float32 [N, d]."""
        return self._run(images, (EMBEDDING,), self._enrolment.classes)[0]

    def _run(self, images: Any, outputs: Sequence[str], classes: ClassSet | None) -> list[np.ndarray]:
        backend = self._backend
        feeds = classes.feeds() if classes is not None else None
        if self._decides:
            feeds = {**(feeds or {}), **self._decision_feeds(classes)}
        if self.info.input_kind == "float":
            size = backend.fixed_hw[0] if backend.fixed_hw else self.info.image_size
            batch = float_batch(images, size)
            count, groups = len(batch), [Group(np.arange(len(batch)), batch)]
        else:
            count, groups = uint8_groups(images, backend.fixed_hw, self._limits)
        step = backend.max_batch or max(len(g.batch) for g in groups)
        results: list[np.ndarray | None] = [None] * len(outputs)
        for group in groups:
            for start in range(0, len(group.batch), step):
                chunk = group.batch[start:start + step]
                for j, value in enumerate(backend.run(chunk, outputs, feeds)):
                    if results[j] is None:
                        results[j] = np.empty((count, *value.shape[1:]), value.dtype)
                    results[j][group.indices[start:start + step]] = value
        return results

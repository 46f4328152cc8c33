"""`Classifier`: load an exported model and classify or embed images."""

from __future__ import annotations

from dataclasses import dataclass, replace
from os import PathLike
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .backends import Backend
from .errors import InputError, ModelError
from .inputs import Group, float_batch, uint8_groups
from .limits import ImageLimits, overrides
from .metadata import ModelInfo

ENGINE_SUFFIXES = (".engine", ".plan")


def check_top_k(top_k: object) -> None:
    if not isinstance(top_k, int) or top_k < 1:
        raise InputError(f"top_k must be a positive int, got {top_k!r}")


@dataclass(frozen=True)
class TopK:
    """The k best classes per image, best first."""

    indices: np.ndarray  # int64 [N, k]
    names: list[list[str]]
    scores: np.ndarray  # float32 [N, k]


@dataclass(frozen=True)
class Prediction:
    """Results for N images, in the order they were given."""

    labels: np.ndarray  # int64 [N]
    class_names: list[str]  # predicted class name per image
    scores: np.ndarray  # float32 [N, C]
    top_k: TopK
    embeddings: np.ndarray  # float32 [N, d], L2-normalised

    def __len__(self) -> int:
        return len(self.labels)

    @classmethod
    def of(cls, scores: np.ndarray, labels: np.ndarray, embeddings: np.ndarray, class_names: Sequence[str],
           top_k: int) -> Prediction:
        """The prediction for a model's outputs (also what RemoteClassifier returns); top_k checked by the caller."""
        k = min(top_k, scores.shape[1])
        order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        top = TopK(order, [[class_names[i] for i in row] for row in order], np.take_along_axis(scores, order, 1))
        return cls(labels, [class_names[i] for i in labels], scores, top, embeddings)


class Classifier:
    """A loaded model. Immutable after loading, so one instance may serve several threads."""

    def __init__(self, backend: Backend, limits: ImageLimits) -> None:
        self._backend = backend
        self._limits = limits

    @classmethod
    def load(cls, path: str | PathLike, backend: str = "auto", providers: Sequence[str] | None = None,
             intra_op_num_threads: int | None = None, allow_spinning: bool = True, *,
             max_side: int | None = None, max_pixels: int | None = None,
             max_aspect: float | None = None) -> Classifier:
        """Load an `.onnx` model (ONNX Runtime) or a `.engine`/`.plan` file (TensorRT).

        backend: "auto" (by file suffix), "onnxruntime" or "tensorrt".
        providers: ONNX Runtime execution providers; default TensorRT, CUDA, CPU as available.
        intra_op_num_threads: 0..256 (0 or None: ONNX Runtime's default, one per core).
        allow_spinning: ONNX Runtime's CPU threads spin between calls (its default, lowest latency);
            False lets them sleep, leaving the cores to the app's other threads and sessions.
        max_side, max_pixels, max_aspect: the largest images accepted (longest side, height x width,
            longest / shortest side); None keeps the model's (its metadata's "limits", else 16384,
            2**26 and 32). Larger images are refused before they are decoded or run.
        """
        path, raised = Path(path), overrides(max_side, max_pixels, max_aspect)
        if backend not in ("auto", "onnxruntime", "tensorrt"):
            raise InputError(f"unknown backend {backend!r}", hint="use 'auto', 'onnxruntime' or 'tensorrt'")
        if not path.is_file():
            raise ModelError(f"model file not found: {path}" if not path.is_dir() else
                             f"{path} is a directory, not a model file", hint="pass the exported model.onnx")
        if backend == "auto":
            backend = "tensorrt" if path.suffix in ENGINE_SUFFIXES else "onnxruntime"
        if backend == "onnxruntime":
            from .backends.ort import OnnxRuntimeBackend
            loaded: Backend = OnnxRuntimeBackend(path, providers, intra_op_num_threads, allow_spinning)
        else:
            from .backends.trt import TensorRTBackend
            loaded = TensorRTBackend(path)
        return cls(loaded, replace(loaded.info.limits, **raised))

    @property
    def info(self) -> ModelInfo:
        return self._backend.info

    @property
    def class_names(self) -> list[str]:
        return list(self._backend.info.class_names)

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

    def __repr__(self) -> str:
        return (f"Classifier(backend={self._backend.name!r}, providers={list(self.providers)}, "
                f"classes={self.info.num_classes}, input={self.info.input_kind!r})")

    def predict(self, images: Any, top_k: int = 5) -> Prediction:
        """Classify images: one HxWx3 uint8 array, an [N,H,W,3] batch, a list, paths or PIL images.

        Raises InputError for images it cannot take (the message says why and how to fix them),
        ModelError when this model cannot take images at all (float variant), BackendError when
        the inference library fails.
        """
        check_top_k(top_k)
        scores, labels, embeddings = self._run(images, ("scores", "label", "embedding"))
        return Prediction.of(scores, labels, embeddings, self.info.class_names, top_k)

    def embed(self, images: Any) -> np.ndarray:
        """L2-normalised image embeddings, float32 [N, d]."""
        return self._run(images, ("embedding",))[0]

    def _run(self, images: Any, outputs: Sequence[str]) -> list[np.ndarray]:
        backend = self._backend
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
                for j, value in enumerate(backend.run(chunk, outputs)):
                    if results[j] is None:
                        results[j] = np.empty((count, *value.shape[1:]), value.dtype)
                    results[j][group.indices[start:start + step]] = value
        return results

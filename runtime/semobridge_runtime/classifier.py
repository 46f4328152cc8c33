"""`Classifier`: load an exported model and classify or embed images."""

from __future__ import annotations

from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .backends import Backend
from .errors import InputError, ModelError
from .inputs import Group, float_batch, uint8_groups
from .metadata import ModelInfo

ENGINE_SUFFIXES = (".engine", ".plan")


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


class Classifier:
    """A loaded model. Immutable after loading, so one instance may serve several threads."""

    def __init__(self, backend: Backend) -> None:
        self._backend = backend

    @classmethod
    def load(cls, path: str | PathLike, backend: str = "auto", providers: Sequence[str] | None = None,
             intra_op_num_threads: int | None = None, allow_spinning: bool = True, prefer_int8: bool = True) -> Classifier:
        """Load an `.onnx` model (ONNX Runtime) or a `.engine`/`.plan` file (TensorRT).

        backend: "auto" (by file suffix), "onnxruntime" or "tensorrt".
        providers: ONNX Runtime execution providers; default TensorRT, CUDA, CPU as available.
        allow_spinning: ONNX Runtime's CPU threads spin between calls (its default, lowest latency);
            False lets them sleep, leaving the cores to the app's other threads and sessions.
        prefer_int8: on the CPU only, load `model_int8.onnx` from beside `model.onnx` instead when its export
            measured the same labels as fp32 on >= 99% of the fit images (see `precision.int8_beside`; the
            repr says which precision runs). False: load `path` as given.
        """
        path = Path(path)
        if not path.is_file():
            raise ModelError(f"model file not found: {path}")
        if backend == "auto":
            backend = "tensorrt" if path.suffix in ENGINE_SUFFIXES else "onnxruntime"
        if backend == "onnxruntime":
            from .backends.ort import OnnxRuntimeBackend, choose_providers
            from .precision import int8_beside
            path = (prefer_int8 and int8_beside(path, choose_providers(providers))) or path
            return cls(OnnxRuntimeBackend(path, providers, intra_op_num_threads, allow_spinning))
        if backend == "tensorrt":
            from .backends.trt import TensorRTBackend
            return cls(TensorRTBackend(path))
        raise ValueError(f"unknown backend {backend!r}; use 'auto', 'onnxruntime' or 'tensorrt'")

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
    def max_batch(self) -> int | None:
        """Images per model run (larger inputs are split); None when unlimited."""
        return self._backend.max_batch

    def __repr__(self) -> str:
        raw = self.info.raw
        agreement = (raw.get("int8") or {}).get("label_agreement")
        return (f"Classifier(backend={self._backend.name!r}, providers={list(self.providers)}, "
                f"classes={self.info.num_classes}, input={self.info.input_kind!r}, precision={raw.get('precision', 'fp32')!r}"
                + (f", int8_label_agreement={agreement:.1%}" if agreement is not None else "") + ")")

    def predict(self, images: Any, top_k: int = 5) -> Prediction:
        """Classify images: one HxWx3 uint8 array, an [N,H,W,3] batch, a list, paths or PIL images."""
        if not isinstance(top_k, int) or top_k < 1:
            raise InputError(f"top_k must be a positive int, got {top_k!r}")
        scores, labels, embeddings = self._run(images, ("scores", "label", "embedding"))
        k = min(top_k, scores.shape[1])
        order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        names = self.info.class_names
        top = TopK(order, [[names[i] for i in row] for row in order], np.take_along_axis(scores, order, 1))
        return Prediction(labels, [names[i] for i in labels], scores, top, embeddings)

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
            count, groups = uint8_groups(images, backend.fixed_hw)
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

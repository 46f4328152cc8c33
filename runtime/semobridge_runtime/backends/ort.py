"""ONNX Runtime backend for `.onnx` models."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from ..contract import METADATA_KEY, SCORES, Tensor, check_graph
from ..errors import BackendError
from ..metadata import parse_metadata
from ..contract import DECISION_INPUTS
from .session import SessionSettings, open_session, ort

_DTYPES = {"tensor(uint8)": "uint8", "tensor(float)": "float32", "tensor(int64)": "int64",
           "tensor(float16)": "float16", "tensor(double)": "float64", "tensor(int32)": "int32"}


def _tensors(args: Sequence[ort.NodeArg]) -> list[Tensor]:
    return [Tensor(a.name, _DTYPES.get(a.type, a.type), tuple(d if isinstance(d, int) else None for d in a.shape))
            for a in args]


class OnnxRuntimeBackend:
    """Runs a fused semobridge ONNX graph with one shared (thread-safe) InferenceSession."""

    name = "onnxruntime"
    needs_classes = False  # the class-set inputs default to the fitted classes

    def __init__(self, path: Path, settings: SessionSettings = SessionSettings(),
                 release_after_bytes: int | None = None) -> None:
        self._session = open_session(path, settings)
        self._path = path
        self._release_after_bytes, self._release = release_after_bytes, ort.RunOptions()
        self._release.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")
        metadata = self._session.get_modelmeta().custom_metadata_map.get(METADATA_KEY)
        self.info = parse_metadata(metadata, str(path))
        inputs = _tensors(self._session.get_inputs())
        check_graph(self.info, inputs, _tensors(self._session.get_outputs()), str(path), self._classes(inputs[0]))
        self.providers = tuple(self._session.get_providers())
        first = self._session.get_inputs()[0]
        self._input = first.name
        self.head_inputs = tuple(i.name for i in self._session.get_overridable_initializers()
                                 if i.name not in DECISION_INPUTS)  # the class set; the decision's are not
        self.outputs = tuple(o.name for o in self._session.get_outputs())
        shape = [d if isinstance(d, int) else None for d in first.shape]
        self.max_batch = shape[0]
        height, width = shape[1:3] if self.info.input_kind == "uint8" else shape[2:4]
        self.fixed_hw = (height, width) if height and width else None

    def _classes(self, image: Tensor) -> int | None:
        """How many classes the graph scores with its own class set: the width of `scores` for an empty batch
        (about a millisecond); None where the batch size is static or the graph refuses an empty batch."""
        if image.shape[0] is not None:
            return None
        size = self.info.image_size
        dims = [d if d is not None else size for d in image.shape[1:]] if self.info.input_kind == "float" else \
            [d if d is not None else 1 for d in image.shape[1:]]
        try:
            scores = self._session.run([SCORES], {image.name: np.zeros((0, *dims), image.dtype)})[0]
        except Exception:  # noqa: BLE001  (ORT's own types; the graph's shape rules are its own)
            return None
        return int(scores.shape[1]) if scores.ndim == 2 else None

    def run(self, batch: np.ndarray, outputs: Sequence[str], classes: Mapping[str, np.ndarray] | None = None) -> list[np.ndarray]:
        n = len(batch)
        if self.max_batch is not None and n < self.max_batch:  # static batch: pad, then drop padding
            padding = np.zeros((self.max_batch - n, *batch.shape[1:]), batch.dtype)
            batch = np.concatenate([batch, padding])
        try:
            big = self._release_after_bytes is not None and batch.nbytes >= self._release_after_bytes
            values = self._session.run(list(outputs), {self._input: batch, **(classes or {})},
                                       self._release if big else None)  # big: the arena shrinks after the run
        except Exception as exc:  # ORT's own exception types derive from Exception only
            raise BackendError(f"ONNX Runtime failed running {self._path} on a batch of shape {batch.shape}: "
                               f"{exc}") from exc
        return [out[:n] for out in values]

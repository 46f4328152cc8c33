"""ONNX Runtime backend for `.onnx` models."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

# ONNX Runtime (1.29+ on Linux/macOS) writes a device id and an event cache under
# ~/.cache/Microsoft/DeveloperTools and uploads usage events, from the moment it initialises
# (`import onnxruntime`); only this variable, set before that, stops it. An explicit value wins.
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
import onnxruntime as ort  # noqa: E402  (after the telemetry opt-out)

from ..contract import SCORES, Tensor, check_graph  # noqa: E402
from ..errors import BackendError, ModelError  # noqa: E402
from ..limits import check_threads  # noqa: E402
from ..contract import METADATA_KEY  # noqa: E402
from ..metadata import parse_metadata  # noqa: E402

ort.disable_telemetry_events()  # also stops events when the app initialised ONNX Runtime before us

PREFERRED_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")
_DTYPES = {"tensor(uint8)": "uint8", "tensor(float)": "float32", "tensor(int64)": "int64",
           "tensor(float16)": "float16", "tensor(double)": "float64", "tensor(int32)": "int32"}


def choose_providers(requested: Sequence[str] | None) -> list[str]:
    """TensorRT, then CUDA, then CPU among those available; or check the caller's explicit list."""
    available = ort.get_available_providers()
    if requested is None:
        return [p for p in PREFERRED_PROVIDERS if p in available]
    missing = [p for p in requested if p not in available]
    if missing:
        raise BackendError(f"execution providers {missing} are not available in this onnxruntime build "
                           f"(available: {available})", hint="install onnxruntime-gpu for CUDA/TensorRT")
    return list(requested)


def _tensors(args: Sequence[ort.NodeArg]) -> list[Tensor]:
    return [Tensor(a.name, _DTYPES.get(a.type, a.type), tuple(d if isinstance(d, int) else None for d in a.shape))
            for a in args]


class OnnxRuntimeBackend:
    """Runs a fused semobridge ONNX graph with one shared (thread-safe) InferenceSession."""

    name = "onnxruntime"
    needs_classes = False  # the class-set inputs default to the fitted classes

    def __init__(self, path: Path, providers: Sequence[str] | None = None,
                 intra_op_num_threads: int | None = None, allow_spinning: bool = True,
                 release_after_bytes: int | None = None) -> None:
        options = ort.SessionOptions()
        if intra_op_num_threads is not None:
            options.intra_op_num_threads = check_threads(intra_op_num_threads, "intra_op_num_threads")
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if allow_spinning else "0")
        options.log_severity_level = 3  # not the warning that the class-set inputs (by design) have defaults
        chosen = choose_providers(providers)
        try:
            self._session = ort.InferenceSession(str(path), sess_options=options, providers=chosen)
        except Exception as exc:  # ORT raises several unrelated types for unreadable files
            raise ModelError(f"ONNX Runtime cannot load {path} ({exc}); the file is truncated, corrupt "
                             "or not ONNX: re-export or re-download it") from exc
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
        self.head_inputs = tuple(i.name for i in self._session.get_overridable_initializers())
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

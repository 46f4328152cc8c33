"""ONNX Runtime backend for `.onnx` models."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import onnxruntime as ort

from ..errors import ModelError
from ..metadata import METADATA_KEY, parse_metadata

PREFERRED_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")
_ELEMENT_TYPES = {"uint8": "tensor(uint8)", "float": "tensor(float)"}


def choose_providers(requested: Sequence[str] | None) -> list[str]:
    """TensorRT, then CUDA, then CPU among those available; or check the caller's explicit list."""
    available = ort.get_available_providers()
    if requested is None:
        return [p for p in PREFERRED_PROVIDERS if p in available]
    missing = [p for p in requested if p not in available]
    if missing:
        raise ValueError(f"execution providers {missing} are not available in this onnxruntime build "
                         f"(available: {available}); install onnxruntime-gpu for CUDA/TensorRT")
    return list(requested)


class OnnxRuntimeBackend:
    """Runs a fused semobridge ONNX graph with one shared (thread-safe) InferenceSession."""

    name = "onnxruntime"
    needs_classes = False  # the class-set inputs default to the fitted classes

    def __init__(self, path: Path, providers: Sequence[str] | None = None,
                 intra_op_num_threads: int | None = None, allow_spinning: bool = True) -> None:
        options = ort.SessionOptions()
        if intra_op_num_threads is not None:
            if intra_op_num_threads < 0:
                raise ValueError(f"intra_op_num_threads must be >= 0 (0: ONNX Runtime's default), not {intra_op_num_threads}")
            options.intra_op_num_threads = intra_op_num_threads
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if allow_spinning else "0")
        options.log_severity_level = 3  # not the warning that the class-set inputs (by design) have defaults
        try:
            self._session = ort.InferenceSession(str(path), sess_options=options,
                                                 providers=choose_providers(providers))
        except Exception as exc:  # ORT raises several unrelated types for unreadable files
            raise ModelError(f"ONNX Runtime cannot load {path} ({exc}); the file is truncated, corrupt "
                             "or not ONNX: re-export or re-download it") from exc
        metadata = self._session.get_modelmeta().custom_metadata_map.get(METADATA_KEY)
        self.info = parse_metadata(metadata, str(path))
        self.providers = tuple(self._session.get_providers())
        inputs = self._session.get_inputs()
        if len(inputs) != 1 or inputs[0].type != _ELEMENT_TYPES[self.info.input_kind]:
            raise ModelError(f"{path}: graph inputs {[(i.name, i.type) for i in inputs]} do not match "
                             f"its metadata (one {self.info.input_kind} input); re-export the model")
        self._input = inputs[0].name
        self.head_inputs = tuple(i.name for i in self._session.get_overridable_initializers())
        self.outputs = tuple(o.name for o in self._session.get_outputs())
        shape = [d if isinstance(d, int) else None for d in inputs[0].shape]
        self.max_batch = shape[0]
        height, width = shape[1:3] if self.info.input_kind == "uint8" else shape[2:4]
        self.fixed_hw = (height, width) if height and width else None

    def run(self, batch: np.ndarray, outputs: Sequence[str], classes: Mapping[str, np.ndarray] | None = None) -> list[np.ndarray]:
        n = len(batch)
        if self.max_batch is not None and n < self.max_batch:  # static batch: pad, then drop padding
            padding = np.zeros((self.max_batch - n, *batch.shape[1:]), batch.dtype)
            batch = np.concatenate([batch, padding])
        return [out[:n] for out in self._session.run(list(outputs), {self._input: batch, **(classes or {})})]

"""TensorRT backend for serialized engines (`.engine`/`.plan`).

UNVERIFIED: written from the TensorRT 10 Python API documentation; TensorRT could
not be installed where this runtime was developed. Metadata comes from the
exporter's JSON sidecar next to the engine.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from ..contract import Tensor, check_graph
from ..errors import BackendError, ModelError
from ..metadata import read_sidecar
from .engine_io import EngineIO


def _import_tensorrt() -> tuple[Any, Any]:
    try:
        import tensorrt as trt
        try:
            from cuda.bindings import runtime as cudart
        except ImportError:
            from cuda import cudart
    except ImportError as exc:
        raise BackendError(f"loading a TensorRT engine needs TensorRT 10 and cuda-python ({exc})",
                           hint="pip install 'semobridge-runtime[tensorrt]', or load the .onnx model instead") from None
    return trt, cudart


class TensorRTBackend:
    """Runs a TensorRT engine; one execution context, serialised by a lock."""

    name = "tensorrt"
    providers = ("TensorRT",)
    needs_classes = True  # an engine's class-set inputs have no defaults (the fitted classes come from head.safetensors)

    def __init__(self, path: Path) -> None:
        trt, cudart = _import_tensorrt()
        self.info = read_sidecar(path)
        self._runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self._engine = engine = self._runtime.deserialize_cuda_engine(path.read_bytes())
        if engine is None:
            raise ModelError(f"TensorRT cannot deserialize {path}: it is corrupt or was built for another "
                             "TensorRT version or GPU", hint="rebuild the engine on this machine")
        tensors = {mode: [] for mode in (trt.TensorIOMode.INPUT, trt.TensorIOMode.OUTPUT)}
        for name in (engine.get_tensor_name(i) for i in range(engine.num_io_tensors)):
            shape = tuple(d if d >= 0 else None for d in engine.get_tensor_shape(name))
            dtype = np.dtype(trt.nptype(engine.get_tensor_dtype(name))).name
            tensors[engine.get_tensor_mode(name)].append(Tensor(name, dtype, shape))
        check_graph(self.info, tensors[trt.TensorIOMode.INPUT], tensors[trt.TensorIOMode.OUTPUT], str(path))
        self._input = tensors[trt.TensorIOMode.INPUT][0].name
        self._io = EngineIO(trt, cudart, engine)
        self._lock = threading.Lock()
        inputs = [t.name for t in tensors[trt.TensorIOMode.INPUT]]
        self.head_inputs = tuple(inputs[1:])
        self.outputs = tuple(t.name for t in tensors[trt.TensorIOMode.OUTPUT])
        shape = list(engine.get_tensor_shape(self._input))
        self.max_batch = shape[0] if shape[0] > 0 else engine.get_tensor_profile_shape(self._input, 0)[2][0]
        height, width = shape[1:3] if self.info.input_kind == "uint8" else shape[2:4]
        self.fixed_hw = (height, width) if height > 0 and width > 0 else None

    def run(self, batch: np.ndarray, outputs: Sequence[str], classes: Mapping[str, np.ndarray] | None = None) -> list[np.ndarray]:
        if self.head_inputs and not classes:
            raise ModelError("this engine takes its class set as inputs", hint="load it through Classifier.load")
        with self._lock:
            return self._io.run({self._input: batch, **{name: classes[name] for name in self.head_inputs}}, outputs)

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

from ..errors import ModelError
from ..metadata import read_sidecar


def _import_tensorrt() -> tuple[Any, Any]:
    try:
        import tensorrt as trt
        try:
            from cuda.bindings import runtime as cudart
        except ImportError:
            from cuda import cudart
    except ImportError as exc:
        raise ModelError(f"loading a TensorRT engine needs TensorRT 10 and cuda-python ({exc}): "
                         "pip install 'semobridge-runtime[tensorrt]', or load the .onnx model instead") from None
    return trt, cudart


class TensorRTBackend:
    """Runs a TensorRT engine; one execution context, serialised by a lock."""

    name = "tensorrt"
    providers = ("TensorRT",)
    needs_classes = True  # an engine's class-set inputs have no defaults (the fitted classes come from head.safetensors)

    def __init__(self, path: Path) -> None:
        self._trt, self._cudart = _import_tensorrt()
        self.info = read_sidecar(path)
        self._runtime = self._trt.Runtime(self._trt.Logger(self._trt.Logger.WARNING))
        self._engine = self._runtime.deserialize_cuda_engine(path.read_bytes())
        if self._engine is None:
            raise ModelError(f"TensorRT cannot deserialize {path}: it is corrupt or was built for another "
                             "TensorRT version or GPU; rebuild the engine on this machine")
        self._context = self._engine.create_execution_context()
        self._lock = threading.Lock()
        self._input = self.info.input_name
        names = [self._engine.get_tensor_name(i) for i in range(self._engine.num_io_tensors)]
        inputs = [n for n in names if self._engine.get_tensor_mode(n) == self._trt.TensorIOMode.INPUT]
        self.head_inputs = tuple(n for n in inputs if n != self._input)
        self.outputs = tuple(n for n in names if n not in inputs)
        shape = list(self._engine.get_tensor_shape(self._input))
        self.max_batch = shape[0] if shape[0] > 0 else \
            self._engine.get_tensor_profile_shape(self._input, 0)[2][0]
        height, width = shape[1:3] if self.info.input_kind == "uint8" else shape[2:4]
        self.fixed_hw = (height, width) if height > 0 and width > 0 else None

    def _check(self, result: tuple) -> Any:
        err, *values = result
        if err != self._cudart.cudaError_t.cudaSuccess:
            raise RuntimeError(f"CUDA call failed: {self._cudart.cudaGetErrorName(err)[1]}")
        return values[0] if values else None

    def run(self, batch: np.ndarray, outputs: Sequence[str], classes: Mapping[str, np.ndarray] | None = None) -> list[np.ndarray]:
        cudart = self._cudart
        h2d, d2h = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        if self.head_inputs and not classes:
            raise ModelError("this engine takes its class set as inputs; load it through Classifier.load")
        with self._lock:
            hosts = {self._input: np.ascontiguousarray(batch)}
            hosts |= {name: np.ascontiguousarray(classes[name], np.float32) for name in self.head_inputs}
            for name, host in hosts.items():
                self._context.set_input_shape(name, host.shape)
            inputs = tuple(hosts)
            for name in self.outputs:
                dtype = self._trt.nptype(self._engine.get_tensor_dtype(name))
                hosts[name] = np.empty(tuple(self._context.get_tensor_shape(name)), dtype)
            stream = self._check(cudart.cudaStreamCreate())
            devices: dict[str, int] = {}
            try:
                for name, host in hosts.items():
                    devices[name] = self._check(cudart.cudaMalloc(host.nbytes))
                    self._context.set_tensor_address(name, devices[name])
                for name in inputs:
                    source = hosts[name]
                    self._check(cudart.cudaMemcpyAsync(devices[name], source.ctypes.data, source.nbytes, h2d, stream))
                if not self._context.execute_async_v3(int(stream)):
                    raise RuntimeError("TensorRT execution failed; see the TensorRT log above")
                for name in outputs:
                    self._check(cudart.cudaMemcpyAsync(hosts[name].ctypes.data, devices[name],
                                                       hosts[name].nbytes, d2h, stream))
                self._check(cudart.cudaStreamSynchronize(stream))
            finally:
                for pointer in devices.values():
                    cudart.cudaFree(pointer)
                cudart.cudaStreamDestroy(stream)
        return [hosts[name] for name in outputs]

"""Run a TensorRT engine on host arrays: one execution context, one CUDA stream, reused device buffers.

UNVERIFIED: written from the TensorRT 10 and cuda-python documentation; TensorRT could not be
installed where this runtime was developed, so none of this has run.
"""

from __future__ import annotations

import weakref
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from .. import files
from ..errors import BackendError, ModelError


def cuda_runtime() -> Any:
    """cuda-python's CUDA runtime API (`cuda.bindings.runtime`; `cuda.cudart` before cuda-python 12.6).

    Raises ImportError without cuda-python."""
    try:
        from cuda.bindings import runtime
    except ImportError:
        from cuda import cudart as runtime
    return runtime


def import_tensorrt() -> tuple[Any, Any]:
    """TensorRT and cuda-python's runtime API, or a BackendError that says how to install them."""
    try:
        import tensorrt as trt

        return trt, cuda_runtime()
    except ImportError as exc:
        raise BackendError(f"loading a TensorRT engine needs TensorRT 10 and cuda-python ({exc})",
                           hint="pip install 'semobridge-runtime[tensorrt]', or load the .onnx model instead") from None


class EngineIO:
    """A serialized engine: copies inputs in, runs, copies outputs out.

    The stream is created once; each tensor's device buffer is allocated when a call needs more
    bytes than it has (so once per new, larger input shape) and reused by every later call.
    Not thread-safe: one call at a time (the caller holds a lock).
    """

    def __init__(self, path: Path, dla_core: int | None = None) -> None:
        """dla_core: the DLA core an engine built for DLA runs on (semobridge-build-engine --dla-core; its metadata)."""
        trt, cudart = import_tensorrt()
        self._cudart = cudart
        self._runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))  # kept: it must outlive the engine
        if dla_core is not None:
            self._runtime.DLA_core = dla_core
        self.engine = engine = self._runtime.deserialize_cuda_engine(files.read_bytes(path, "engine", files.GRAPH_BYTES,
                                                                                      ModelError))
        if engine is None:
            raise ModelError(f"TensorRT cannot deserialize {path}: it is corrupt or was built for another "
                             "TensorRT version or GPU", hint="rebuild the engine on this machine")
        self._context = engine.create_execution_context()
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        self.inputs = tuple(n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT)
        self.outputs = tuple(n for n in names if n not in self.inputs)
        self.dtypes = {n: np.dtype(trt.nptype(engine.get_tensor_dtype(n))) for n in names}
        self._stream = self._check(cudart.cudaStreamCreate(), "creating a CUDA stream")
        self._buffers: dict[str, tuple[int, int]] = {}  # tensor name -> (device pointer, bytes)
        weakref.finalize(self, _release, cudart, self._stream, self._buffers)

    @property
    def stream(self) -> int:
        """Address of the CUDA stream that every copy and run is enqueued on."""
        return int(self._stream)

    def _check(self, result: tuple, what: str) -> Any:
        err, *values = result
        if err != self._cudart.cudaError_t.cudaSuccess:
            raise BackendError(f"CUDA failed {what}: {self._cudart.cudaGetErrorName(err)[1]}",
                               hint="check the GPU (nvidia-smi) and its free memory")
        return values[0] if values else None

    def _buffer(self, name: str, nbytes: int) -> int:
        pointer, size = self._buffers.get(name, (0, 0))
        if nbytes > size:
            if pointer:
                self._check(self._cudart.cudaFree(pointer), f"freeing the buffer of '{name}'")
                del self._buffers[name]
            pointer = self._check(self._cudart.cudaMalloc(nbytes), f"allocating {nbytes} bytes for '{name}'")
            self._buffers[name] = (pointer, nbytes)
            self._context.set_tensor_address(name, pointer)
        return pointer

    def upload(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Set the input shapes, make room for every tensor and enqueue the copies of `inputs` (name -> array) to
        the GPU. Returns a host array per tensor (the inputs as copied, empty outputs); keep it until the stream is done."""
        hosts = {name: np.ascontiguousarray(inputs[name], self.dtypes[name]) for name in self.inputs}
        for name, host in hosts.items():
            self._context.set_input_shape(name, host.shape)
        for name in self.outputs:
            hosts[name] = np.empty(tuple(self._context.get_tensor_shape(name)), self.dtypes[name])
        h2d = self._cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
        for name, host in hosts.items():
            pointer = self._buffer(name, max(host.nbytes, 1))
            if name in self.inputs:
                self._check(self._cudart.cudaMemcpyAsync(pointer, host.ctypes.data, host.nbytes, h2d, self._stream),
                            f"copying '{name}' to the GPU")
        return hosts

    def execute(self) -> None:
        """Enqueue one run of the engine on what was uploaded last."""
        if not self._context.execute_async_v3(self.stream):
            raise BackendError("TensorRT execution failed", hint="see the TensorRT log above")

    def run(self, inputs: Mapping[str, np.ndarray], outputs: Sequence[str]) -> list[np.ndarray]:
        """Run on `inputs` (name -> array) and return the named outputs as new host arrays."""
        hosts = self.upload(inputs)
        self.execute()
        d2h = self._cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        for name in outputs:
            self._check(self._cudart.cudaMemcpyAsync(hosts[name].ctypes.data, self._buffers[name][0], hosts[name].nbytes,
                                                     d2h, self._stream), f"copying '{name}' from the GPU")
        self._check(self._cudart.cudaStreamSynchronize(self._stream), "waiting for the engine")
        return [hosts[name] for name in outputs]


def _release(cudart: Any, stream: Any, buffers: dict[str, tuple[int, int]]) -> None:
    for pointer, _ in buffers.values():
        cudart.cudaFree(pointer)
    cudart.cudaStreamDestroy(stream)

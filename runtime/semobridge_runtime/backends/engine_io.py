"""Run a TensorRT engine on host arrays: one execution context, one CUDA stream, reused device buffers.

UNVERIFIED: written from the TensorRT 10 and cuda-python documentation; TensorRT could not be
installed where this runtime was developed, so none of this has run.
"""

from __future__ import annotations

import weakref
from typing import Any, Sequence

import numpy as np

from ..errors import BackendError


class EngineIO:
    """Copies inputs in, runs the engine, copies outputs out.

    The stream is created once; each tensor's device buffer is allocated when a call needs more
    bytes than it has (so once per new, larger input shape) and reused by every later call.
    Not thread-safe: one call at a time (the caller holds a lock).
    """

    def __init__(self, trt: Any, cudart: Any, engine: Any) -> None:
        self._cudart = cudart
        self._context = engine.create_execution_context()
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        self._inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self._outputs = [n for n in names if n not in self._inputs]
        self._dtypes = {n: np.dtype(trt.nptype(engine.get_tensor_dtype(n))) for n in names}
        self._stream = self._check(cudart.cudaStreamCreate(), "creating a CUDA stream")
        self._buffers: dict[str, tuple[int, int]] = {}  # tensor name -> (device pointer, bytes)
        weakref.finalize(self, _release, cudart, self._stream, self._buffers)

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

    def run(self, inputs: dict[str, np.ndarray], outputs: Sequence[str]) -> list[np.ndarray]:
        """Run on `inputs` (name -> array) and return the named outputs as new host arrays."""
        cudart, stream = self._cudart, self._stream
        h2d, d2h = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        hosts = {name: np.ascontiguousarray(inputs[name], self._dtypes[name]) for name in self._inputs}
        for name, host in hosts.items():
            self._context.set_input_shape(name, host.shape)
        for name in self._outputs:
            hosts[name] = np.empty(tuple(self._context.get_tensor_shape(name)), self._dtypes[name])
        pointers = {name: self._buffer(name, max(host.nbytes, 1)) for name, host in hosts.items()}
        for name in self._inputs:
            self._check(cudart.cudaMemcpyAsync(pointers[name], hosts[name].ctypes.data, hosts[name].nbytes, h2d,
                                               stream), f"copying '{name}' to the GPU")
        if not self._context.execute_async_v3(int(stream)):
            raise BackendError("TensorRT execution failed", hint="see the TensorRT log above")
        for name in outputs:
            self._check(cudart.cudaMemcpyAsync(hosts[name].ctypes.data, pointers[name], hosts[name].nbytes, d2h,
                                               stream), f"copying '{name}' from the GPU")
        self._check(cudart.cudaStreamSynchronize(stream), "waiting for the engine")
        return [hosts[name] for name in outputs]


def _release(cudart: Any, stream: Any, buffers: dict[str, tuple[int, int]]) -> None:
    for pointer, _ in buffers.values():
        cudart.cudaFree(pointer)
    cudart.cudaStreamDestroy(stream)

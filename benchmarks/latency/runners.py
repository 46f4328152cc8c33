"""Runners: one per way of calling a model (PyTorch eager or exported, CUDA graph, ONNX Runtime, TensorRT), each
giving a host-to-host timer and, on CUDA, a device timer."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from .timing import Timer, cuda_events, staged_call, wall_clock


class Runner(Protocol):
    def host(self, images: np.ndarray) -> Timer:
        """One call from host uint8 images to host outputs."""

    def device(self, images: np.ndarray) -> Timer | None:
        """One call on device-resident input (CUDA events), None on the CPU."""


def _outputs(out: Any) -> tuple[torch.Tensor, ...]:
    return out if isinstance(out, tuple) else (out,)


class TorchRunner:
    """A PyTorch module (eager or a torch.export program) on `device`."""

    def __init__(self, module: nn.Module, device: str):
        self.module, self.on = module, torch.device(device)

    def _call(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        with torch.inference_mode(), self.on:  # preprocessing builds its weights on the default device
            return _outputs(self.module(x))

    def host(self, images: np.ndarray) -> Timer:
        x = torch.from_numpy(images)
        return wall_clock(lambda: [o.cpu() for o in self._call(x.to(self.on))])

    def device(self, images: np.ndarray) -> Timer | None:
        if self.on.type != "cuda":
            return None
        x = torch.from_numpy(images).to(self.on)
        return cuda_events(lambda: self._call(x))


class CudaGraphRunner:
    """A PyTorch module captured as one CUDA graph per input shape (static input and output buffers)."""

    def __init__(self, module: nn.Module):
        self.module = module
        self._graph: tuple[tuple[int, ...], torch.Tensor, torch.cuda.CUDAGraph, tuple[torch.Tensor, ...]] | None = None

    def _captured(self, images: np.ndarray) -> tuple[torch.Tensor, torch.cuda.CUDAGraph, tuple[torch.Tensor, ...]]:
        if self._graph is None or self._graph[0] != images.shape:
            self._graph = None  # free the previous shape's graph and pool first
            static = torch.from_numpy(images).cuda()
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side), torch.inference_mode(), torch.device("cuda"):
                for _ in range(3):
                    self.module(static)
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph), torch.inference_mode(), torch.device("cuda"):
                out = _outputs(self.module(static))
            self._graph = (images.shape, static, graph, out)
        return self._graph[1:]

    def host(self, images: np.ndarray) -> Timer:
        static, graph, out = self._captured(images)
        return staged_call(images, static, graph.replay, out)

    def device(self, images: np.ndarray) -> Timer | None:
        return cuda_events(self._captured(images)[1].replay)


class OrtRunner:
    """An ONNX Runtime session; on CUDA providers also with device-resident input through IO binding.

    CPU sessions run with intra-op spinning off unless `spinning`: the benchmark interleaves sessions call by
    call, and a session's spinning threads slow the next session's call down (benchmarks/spinning.py measures it).
    `threads`: intra-op threads (None: one per core).
    """

    def __init__(self, path: Path, providers: list, cuda: bool, spinning: bool = False, threads: int | None = None):
        from semobridge_runtime.backends.session import SessionSettings, open_session

        self.session = open_session(path, SessionSettings(tuple(providers), threads, allow_spinning=spinning or cuda))
        self.input = self.session.get_inputs()[0].name
        self.cuda = cuda

    def host(self, images: np.ndarray) -> Timer:
        feed = {self.input: images}
        return wall_clock(lambda: self.session.run(None, feed))

    def device(self, images: np.ndarray) -> Timer | None:
        if not self.cuda:
            return None
        self._bound = torch.from_numpy(images).cuda()  # kept alive: the binding holds only its pointer
        binding = self.session.io_binding()
        binding.bind_input(self.input, "cuda", 0, np.uint8, list(self._bound.shape), self._bound.data_ptr())
        for output in self.session.get_outputs():
            binding.bind_output(output.name, "cuda", 0)
        return cuda_events(lambda: self.session.run_with_iobinding(binding))


class TensorRTRunner:
    """A serialized TensorRT engine through the runtime's EngineIO (its stream and device buffers), fed the class set
    as the runtime feeds it (UNVERIFIED: no TensorRT where written)."""

    def __init__(self, path: Path, classes: dict[str, np.ndarray]):
        from semobridge_runtime.backends.engine_io import EngineIO

        self.io = EngineIO(path)
        self.classes = classes
        self.input = next(n for n in self.io.inputs if n not in classes)

    def host(self, images: np.ndarray) -> Timer:
        feed = {self.input: images, **self.classes}
        return wall_clock(lambda: self.io.run(feed, self.io.outputs))

    def device(self, images: np.ndarray) -> Timer | None:
        self._staged = self.io.upload({self.input: images, **self.classes})  # kept alive while the copies run
        return cuda_events(self.io.execute, torch.cuda.ExternalStream(self.io.stream))


class OpenVinoRunner:
    """The runtime's OpenVINO backend (preprocessing in f32, the encoder at `precision`), fed its fitted class set."""

    def __init__(self, path: Path, precision: str, int8_pairing: Any = None):
        from semobridge_runtime.backends.openvino import OpenVINOBackend

        # the bare encoder outputs the embedding only; "int8": the IR beside `path` that `int8_pairing` names
        self.backend = OpenVINOBackend(path, precision, contract=False, int8_pairing=int8_pairing)

    def host(self, images: np.ndarray) -> Timer:
        outputs = self.backend.outputs
        return wall_clock(lambda: self.backend.run(images, outputs))

    def device(self, images: np.ndarray) -> Timer | None:
        return None

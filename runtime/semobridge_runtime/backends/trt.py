"""TensorRT backend for serialized engines (`.engine`/`.plan`).

UNVERIFIED: written from the TensorRT 10 Python API documentation; TensorRT could
not be installed where this runtime was developed. Metadata comes from the
exporter's JSON sidecar next to the engine.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from ..contract import Tensor, check_graph
from ..errors import ModelError
from ..metadata import read_sidecar
from ..contract import DECISION_INPUTS
from .engine_io import EngineIO, import_tensorrt


class TensorRTBackend:
    """Runs a TensorRT engine; one execution context, serialised by a lock."""

    name = "tensorrt"
    providers = ("TensorRT",)

    def __init__(self, path: Path) -> None:
        import_tensorrt()  # a missing TensorRT first: without it nothing else can be fixed
        self.info = read_sidecar(path)
        self._io = io = EngineIO(path, self.info.tensorrt.dla_core if self.info.tensorrt else None)
        engine = io.engine

        def tensor(name: str) -> Tensor:
            return Tensor(name, io.dtypes[name].name, tuple(d if d >= 0 else None for d in engine.get_tensor_shape(name)))

        head = set(self.info.head_input_names)  # the class set: real engine inputs
        self._decision = tuple(n for n in io.inputs if n in DECISION_INPUTS)  # the open-set scalars: inputs too
        images = [tensor(n) for n in io.inputs if n not in head and n not in DECISION_INPUTS]
        check_graph(self.info, images, [tensor(n) for n in io.outputs], str(path))
        self._input = images[0].name
        self._lock = threading.Lock()
        self.head_inputs = tuple(n for n in io.inputs if n in head)
        self.needs_classes = bool(self.head_inputs)  # they have no defaults: the fitted classes come from head.safetensors
        self.outputs = io.outputs
        shape = list(engine.get_tensor_shape(self._input))
        self.max_batch = shape[0] if shape[0] > 0 else engine.get_tensor_profile_shape(self._input, 0)[2][0]
        height, width = shape[1:3] if self.info.input_kind == "uint8" else shape[2:4]
        self.fixed_hw = (height, width) if height > 0 and width > 0 else None

    def run(self, batch: np.ndarray, outputs: Sequence[str], classes: Mapping[str, np.ndarray] | None = None) -> list[np.ndarray]:
        if self.head_inputs and not classes:
            raise ModelError("this engine takes its class set as inputs", hint="load it through Classifier.load")
        with self._lock:
            return self._io.run({self._input: batch, **{name: classes[name] for name in (*self.head_inputs, *self._decision)}},
                                outputs)


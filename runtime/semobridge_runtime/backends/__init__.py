"""Inference backends: each loads one model file and runs raw batches."""

from __future__ import annotations

from typing import Mapping, Protocol, Sequence

import numpy as np

from ..metadata import ModelInfo


class Backend(Protocol):
    """What `Classifier` needs from a backend. `run` must be safe to call from several threads."""

    name: str
    info: ModelInfo
    providers: tuple[str, ...]
    max_batch: int | None  # largest batch one run takes; None: unlimited
    fixed_hw: tuple[int, int] | None  # static input height/width, if any
    head_inputs: tuple[str, ...]  # the graph's class-set inputs (none: the classes are baked in)
    outputs: tuple[str, ...]  # the graph's output names
    needs_classes: bool  # the class-set inputs have no defaults and must always be fed

    def run(self, batch: np.ndarray, outputs: Sequence[str], classes: Mapping[str, np.ndarray] | None = None) -> list[np.ndarray]:
        """Run one batch of at most `max_batch` images (with a class set, if given) and return the named outputs."""
        ...

"""Fixtures for the runtime tests: model files that follow the fused-graph contract."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

from .contract_model import build_contract_model


@pytest.fixture(scope="session")
def make_model(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """Build a synthetic contract model in its own folder: make_model(kind="float", batch=2, ...)."""

    def make(**options) -> Path:
        return build_contract_model(tmp_path_factory.mktemp("contract") / "model.onnx", **options)

    return make


@pytest.fixture(scope="session")
def contract_onnx(make_model: Callable[..., Path]) -> Path:
    """Always the small synthetic uint8 model (fast enough for valgrind and error tests)."""
    return make_model()


@pytest.fixture(scope="session")
def onnx_model(exported_onnx: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The uint8 model under test: the tiny open_clip model as the exporter writes it, fp32, alone in its folder
    (on the CPU, Classifier.load would pick an int8 artifact beside it; tests/runtime/test_int8_choice.py)."""
    folder = tmp_path_factory.mktemp("fp32")
    for name in ("model.onnx", "model.json"):
        shutil.copy(exported_onnx / name, folder / name)
    return folder / "model.onnx"


@pytest.fixture()
def images() -> list[np.ndarray]:
    """Seeded random RGB images of several sizes (two share a size, to exercise grouping)."""
    rng = np.random.default_rng(7)
    sizes = [(40, 40), (17, 23), (40, 40), (64, 33), (5, 7), (96, 80)]
    return [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in sizes]

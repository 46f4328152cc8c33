"""Fixtures for the runtime tests: model files that follow the fused-graph contract."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

from .contract_model import build_contract_model

C_DIR = Path(__file__).resolve().parents[2] / "runtime" / "c"


@pytest.fixture(scope="session")
def c_build() -> Path:
    """Run `make -C runtime/c` once per session; fail loudly if it does not build."""
    if not (shutil.which("make") and shutil.which("cc")):
        pytest.fail("building runtime/c needs make and a C compiler (apt-get install build-essential)")
    done = subprocess.run(["make", "-C", str(C_DIR), f"PYTHON={sys.executable}"],
                          capture_output=True, text=True, timeout=900)
    if done.returncode != 0:
        pytest.fail(f"make -C runtime/c failed:\n{done.stdout}\n{done.stderr}")
    return C_DIR / "build"


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
def onnx_model(request: pytest.FixtureRequest) -> Path:
    """The tiny open_clip model as the exporter writes it (tests/conftest.py's `exported_onnx`).

    Skipped with the runtime alone (no semobridge, semobridge_export, torch): run
    `python -m pytest tests/runtime --confcutdir tests/runtime` there, as runtime/README.md says.
    """
    try:
        return request.getfixturevalue("exported_onnx") / "model.onnx"
    except pytest.FixtureLookupError:
        pytest.skip("needs the full install (semobridge, semobridge-export, torch) to export the tiny model")


@pytest.fixture()
def images() -> list[np.ndarray]:
    """Seeded random RGB images of several sizes (two share a size, to exercise grouping)."""
    rng = np.random.default_rng(7)
    sizes = [(40, 40), (17, 23), (40, 40), (64, 33), (5, 7), (96, 80)]
    return [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in sizes]

"""Nothing is written outside the paths the user gave: ONNX Runtime's telemetry (a device id and an
event cache under ~/.cache/Microsoft, uploads) stays off in both runtimes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from .test_c_library import write_ppm


@pytest.fixture()
def clean_env(tmp_path: Path) -> tuple[dict[str, str], list[Path]]:
    """An environment whose HOME and XDG_CACHE_HOME are empty folders, without ORT_DISABLE_TELEMETRY, and
    without CI (ONNX Runtime writes no telemetry when CI is set: in CI these tests would guard nothing)."""
    home, cache = tmp_path / "home", tmp_path / "cache"
    home.mkdir()
    cache.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("ORT_DISABLE_TELEMETRY", "CI")}
    return env | {"HOME": str(home), "XDG_CACHE_HOME": str(cache)}, [home, cache]


def written(folders: list[Path]) -> list[str]:
    return [str(p) for folder in folders for p in folder.rglob("*")]


def test_onnxruntime_alone_would_write(clean_env) -> None:
    """The reference: importing onnxruntime without the opt-out writes there (1.29+ outside Windows)."""
    env, folders = clean_env
    subprocess.run([sys.executable, "-c", "import onnxruntime"], env=env, check=True)
    if not written(folders):
        pytest.skip("this onnxruntime build writes no telemetry files: the tests below guard nothing here")


def test_python_runtime_writes_nothing(clean_env, contract_onnx: Path) -> None:
    env, folders = clean_env
    code = ("import numpy as np; from semobridge_runtime import Classifier; "
            f"print(Classifier.load({str(contract_onnx)!r}).predict(np.zeros((8, 8, 3), np.uint8)).labels)")
    subprocess.run([sys.executable, "-c", code], env=env, check=True, capture_output=True)
    assert written(folders) == []


def test_c_library_writes_nothing(clean_env, c_build: Path, contract_onnx: Path, tmp_path: Path) -> None:
    env, folders = clean_env
    ppm = write_ppm(tmp_path / "img.ppm", np.zeros((8, 8, 3), np.uint8))
    subprocess.run([c_build / "examples" / "classify", contract_onnx, ppm], env=env, check=True, capture_output=True)
    assert written(folders) == []


def test_the_int8_harness_writes_nothing_on_import(clean_env) -> None:
    """benchmarks/int8.py imports onnxruntime.quantization at its top: it wrote ~/.cache/Microsoft before the
    benchmarks package imported the opt-out (benchmarks/__init__.py)."""
    env, folders = clean_env
    subprocess.run([sys.executable, "-c", "import benchmarks.int8"], env=env, check=True, capture_output=True,
                   cwd=Path(__file__).parents[2])
    assert written(folders) == []

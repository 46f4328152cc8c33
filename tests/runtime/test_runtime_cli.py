"""`semobridge-run MODEL IMAGE...`."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from semobridge_runtime import Classifier
from semobridge_runtime.cli import main


@pytest.fixture()
def image_files(images: list[np.ndarray], tmp_path: Path) -> list[str]:
    Image = pytest.importorskip("PIL.Image", reason="Pillow is not installed")
    paths = []
    for i, image in enumerate(images[:3]):
        paths.append(str(tmp_path / f"img{i}.png"))
        Image.fromarray(image).save(paths[-1])
    return paths


def test_json_output(onnx_model: Path, image_files: list[str], images: list[np.ndarray], capsys) -> None:
    assert main([str(onnx_model), *image_files, "--json", "--top-k", "2"]) == 0
    rows = json.loads(capsys.readouterr().out)
    expected = Classifier.load(onnx_model).predict(images[:3], top_k=2)
    assert [r["image"] for r in rows] == image_files
    for i, row in enumerate(rows):
        assert row["label"] == expected.class_names[i] and len(row["top_k"]) == 2
        assert [t["index"] for t in row["top_k"]] == expected.top_k.indices[i].tolist()
        np.testing.assert_allclose([t["score"] for t in row["top_k"]], expected.top_k.scores[i], atol=1e-6)


def test_text_output(onnx_model: Path, image_files: list[str], capsys) -> None:
    assert main([str(onnx_model), image_files[0], "--top-k", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == image_files[0] and len(lines) == 2
    assert main([str(onnx_model), image_files[0], "--top-k", "1", "--threads", "1", "--no-spinning"]) == 0
    assert capsys.readouterr().out.splitlines() == lines


def test_errors_exit_2(onnx_model: Path, tmp_path: Path, capsys) -> None:
    assert main([str(tmp_path / "missing.onnx"), "x.png"]) == 2
    assert "model file not found" in capsys.readouterr().err
    assert main([str(onnx_model), str(tmp_path / "missing.png")]) == 2
    assert "no such image file" in capsys.readouterr().err
    assert main([str(onnx_model), "x.png", "--threads", "-1"]) == 2
    assert "intra_op_num_threads must be >= 0" in capsys.readouterr().err


def test_console_script(onnx_model: Path, image_files: list[str]) -> None:
    script = shutil.which("semobridge-run")
    command = [script] if script else [sys.executable, "-m", "semobridge_runtime.cli"]
    out = subprocess.run([*command, str(onnx_model), image_files[0], "--json"],
                         check=True, capture_output=True, text=True).stdout
    assert json.loads(out)[0]["image"] == image_files[0]

"""`semobridge-run MODEL IMAGE...`: output, directories and globs, errors and exit codes."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import click
import numpy as np
import pytest

from semobridge_runtime import Classifier, __version__
from semobridge_runtime.cli import cli, main


@pytest.fixture()
def image_files(images: list[np.ndarray], tmp_path: Path) -> list[str]:
    from PIL import Image

    paths = []
    for i, image in enumerate(images[:3]):
        paths.append(str(tmp_path / f"img{i}.png"))
        Image.fromarray(image).save(paths[-1])
    return paths


def test_json_output(contract_onnx: Path, image_files: list[str], images: list[np.ndarray], capsys) -> None:
    assert main([str(contract_onnx), *image_files, "--json", "--top-k", "2"]) == 0
    rows = json.loads(capsys.readouterr().out)
    expected = Classifier.load(contract_onnx).predict(images[:3], top_k=2)
    assert [r["image"] for r in rows] == image_files
    for i, row in enumerate(rows):
        assert row["label"] == expected.class_names[i] and len(row["top_k"]) == 2
        assert [t["index"] for t in row["top_k"]] == expected.top_k.indices[i].tolist()
        np.testing.assert_allclose([t["score"] for t in row["top_k"]], expected.top_k.scores[i], atol=1e-6)


def test_text_output(contract_onnx: Path, image_files: list[str], capsys) -> None:
    assert main([str(contract_onnx), image_files[0], "--top-k", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == image_files[0] and len(lines) == 2
    assert main([str(contract_onnx), image_files[0], "--top-k", "1", "--threads", "1", "--no-spinning"]) == 0
    assert capsys.readouterr().out.splitlines() == lines


def error_lines(capsys) -> list[str]:
    captured = capsys.readouterr()
    assert captured.out == "" and "Traceback" not in captured.err
    return [line for line in captured.err.splitlines() if not line.startswith("warning: ")]  # e.g. an uncalibrated model


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["{missing}", "x.png"], 3, "missing.onnx: it does not exist"),
        (["{model}", "{tmp}/missing.png"], 2, "no such image file"),
        (["{model}", "x.png", "--threads", "-1"], 2, "intra_op_num_threads must be an integer from 0 to 256"),
        (["{model}", "x.png", "--threads", "100000"], 2, "not 100000"),
        (["{model}", "x.png", "--max-pixels", "0"], 2, "max_pixels must be a positive number"),
        (["{model}", "{wide}"], 2, "wide.png is 1x1000000 (HxW): its longest side 1000000 exceeds"),
        (["{float_model}", "{wide}"], 3, "this is a float-variant model"),
        (["{model}", "{empty}"], 2, "no image files in directory"),
        (["{model}", "{empty}/*.jpg"], 2, "no image files in glob"),
    ],
)
def test_errors_one_line_and_exit_code(contract_onnx: Path, make_model, tmp_path: Path, capsys,
                                       args: list[str], code: int, message: str) -> None:
    from PIL import Image

    wide, empty = tmp_path / "wide.png", tmp_path / "empty"
    Image.fromarray(np.zeros((1, 1_000_000, 3), np.uint8)).save(wide)
    empty.mkdir()
    (empty / "notes.txt").write_text("not an image")
    names = {"model": contract_onnx, "missing": tmp_path / "missing.onnx", "tmp": tmp_path, "wide": wide,
             "empty": empty, "float_model": make_model(kind="float")}
    assert main([a.format(**names) for a in args]) == code
    lines = error_lines(capsys)
    assert lines[0].startswith("semobridge-run: error: ") and message in lines[0]
    assert len(lines) <= 2 and all(line.startswith("hint: ") for line in lines[1:])


def test_backend_error_exits_4(contract_onnx: Path, capsys) -> None:
    if importlib.util.find_spec("tensorrt") is not None:
        pytest.skip("TensorRT is installed: this checks the error without it")
    assert main([str(contract_onnx), "x.png", "--backend", "tensorrt"]) == 4
    lines = error_lines(capsys)
    assert "needs TensorRT 10" in lines[0] and lines[1].startswith("hint: pip install")


def test_directory_and_glob(contract_onnx: Path, images: list[np.ndarray], tmp_path: Path, capsys) -> None:
    from PIL import Image

    folder = tmp_path / "photos"
    (folder / "sub").mkdir(parents=True)
    for name, image in zip(["b.png", "a.JPG", "c.bmp"], images):
        Image.fromarray(image).save(folder / name)
    (folder / "readme.txt").write_text("skipped")
    Image.fromarray(images[3]).save(folder / "sub" / "nested.png")  # not recursive
    assert main([str(contract_onnx), str(folder), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["image"] for r in rows] == [str(folder / n) for n in ["a.JPG", "b.png", "c.bmp"]]
    assert main([str(contract_onnx), str(folder / "*.png"), str(folder / "c.bmp"), "--json"]) == 0
    rows_glob = json.loads(capsys.readouterr().out)
    assert [r["image"] for r in rows_glob] == [str(folder / "b.png"), str(folder / "c.bmp")]
    assert rows_glob == [rows[1], rows[2]]


def test_version_and_help(capsys) -> None:
    assert main(["--version"]) == 0 and capsys.readouterr().out.strip() == f"semobridge-run {__version__}"
    for param in cli.params:
        assert not isinstance(param, click.Option) or param.help, f"{param.opts} has no help text"


def test_console_script(contract_onnx: Path, image_files: list[str]) -> None:
    script = shutil.which("semobridge-run")
    command = [script] if script else [sys.executable, "-m", "semobridge_runtime.cli"]
    out = subprocess.run([*command, str(contract_onnx), image_files[0], "--json"],
                         check=True, capture_output=True, text=True).stdout
    assert json.loads(out)[0]["image"] == image_files[0]


def test_a_reader_that_goes_away_ends_the_command_quietly(contract_onnx: Path, image_files: list[str]) -> None:
    """`semobridge-run MODEL IMAGE... | head -1` ended in a BrokenPipeError traceback (issue 19): now 141
    (128 + SIGPIPE, docs/errors.md), no traceback."""
    process = subprocess.Popen([sys.executable, "-m", "semobridge_runtime.cli", str(contract_onnx), *image_files * 300],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == image_files[0]
    process.stdout.close()
    _, err = process.communicate(timeout=120)
    assert process.returncode == 141 and "Traceback" not in err and "BrokenPipe" not in err, err

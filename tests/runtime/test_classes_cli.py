"""`semobridge-classes` (edit class files) and `semobridge-run --classes`."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from semobridge_runtime import Classifier
from semobridge_runtime.classes_cli import main as classes_main
from semobridge_runtime.cli import main as run_main
from tests.runtime.conftest import ENROL_CLASSES
from tests.runtime.test_classes import shots


def test_edit_a_class_file_and_run_with_it(enrol_export, enrol_pool, tmp_path, capsys) -> None:
    file, model = tmp_path / "shop.classes", str(enrol_export)
    swan = [str(p) for p in shots(enrol_pool, "white swan")]
    assert classes_main(["add", str(file), "white swan", *swan, "--model", model]) == 0
    assert f"added 'white swan' from 3 image(s): {file} has 4 classes" in capsys.readouterr().out
    assert classes_main(["remove", str(file), "red fox", "blue whale", "--model", model]) == 0
    assert classes_main(["rename", str(file), "green tree", "tree", "--model", model]) == 0
    capsys.readouterr()
    assert classes_main(["list", str(file)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(f"{file}: 2 classes for semobridge-tiny (weights ") and lines[1:] == ["tree", "white swan"]

    clf = Classifier.load(enrol_export)  # the same edits in Python
    clf.add_class("white swan", swan)
    clf.remove_class("red fox")
    clf.remove_class("blue whale")
    clf.rename_class("green tree", "tree")
    image = str(shots(enrol_pool, "white swan", "test")[0])
    assert run_main([model, image, "--classes", str(file), "--json", "--top-k", "2"]) == 0
    row = json.loads(capsys.readouterr().out)[0]
    expected = clf.predict(image, top_k=2)
    assert [t["class"] for t in row["top_k"]] == expected.top_k.names[0]
    np.testing.assert_allclose([t["score"] for t in row["top_k"]], expected.top_k.scores[0], rtol=0, atol=1e-6)


def test_errors_leave_the_file_as_it_was(enrol_export, enrol_pool, tmp_path, capsys) -> None:
    file, model = tmp_path / "shop.classes", str(enrol_export)
    assert classes_main(["rename", str(file), "red fox", "fox", "--model", model]) == 0
    before = file.read_bytes()
    for argv, code, message in [
        (["add", str(file), "tree", str(tmp_path / "missing.png"), "--model", model], 2, "no such image file"),
        (["add", str(file), "fox", *map(str, shots(enrol_pool, "red fox")), "--model", model], 2, "already a class named 'fox'"),
        (["remove", str(file), "fox", "blue whale", "green tree", "--model", model], 2, "last class"),
        (["rename", str(file), "lion", "cat", "--model", model], 2, "no class named 'lion'"),
        (["rename", str(file), "fox", "cat", "--model", str(tmp_path / "missing.onnx")], 3, "missing.onnx: it does not exist"),
    ]:
        assert classes_main(argv) == code, argv
        assert message in capsys.readouterr().err
        assert file.read_bytes() == before
    truncated = tmp_path / "truncated.classes"
    truncated.write_bytes(before[:100])
    assert classes_main(["list", str(truncated)]) == 3 and "truncated" in capsys.readouterr().err
    assert run_main([model, str(shots(enrol_pool, "red fox", "test")[0]), "--classes", str(truncated)]) == 3
    assert "truncated" in capsys.readouterr().err


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="TensorRT is installed")
def test_a_runtime_error_exits_4_with_its_hint(tmp_path, capsys) -> None:
    engine = tmp_path / "model.engine"  # a TensorRT engine where TensorRT is missing: the machine lacks a library
    engine.write_bytes(b"\x00" * 16)
    assert classes_main(["rename", str(tmp_path / "shop.classes"), "a", "b", "--model", str(engine)]) == 4
    err = capsys.readouterr().err
    assert "semobridge-classes: error: loading a TensorRT engine needs TensorRT 10" in err
    assert "hint: pip install 'semobridge-runtime[tensorrt]'" in err
    assert not (tmp_path / "shop.classes").exists()


def test_console_script(enrol_export, tmp_path) -> None:
    script = shutil.which("semobridge-classes")
    command = [script] if script else [sys.executable, "-m", "semobridge_runtime.classes_cli"]
    done = subprocess.run([*command, "remove", str(tmp_path / "x.classes"), "red fox", "--model", str(enrol_export)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    listed = subprocess.run([*command, "list", str(tmp_path / "x.classes")], check=True, capture_output=True, text=True).stdout
    assert listed.splitlines()[1:] == [n for n in ENROL_CLASSES[:3] if n != "red fox"]

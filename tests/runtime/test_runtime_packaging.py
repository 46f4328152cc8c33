"""The runtime stays free of PyTorch (nothing imports it, no dependency pulls it in) and reads image files."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

RUNTIME = Path(__file__).resolve().parents[2] / "runtime"


def test_import_pulls_in_no_torch() -> None:
    code = ("import semobridge_runtime, semobridge_runtime.cli, semobridge_runtime.classes_cli, semobridge_runtime.eval_cli, "
            "semobridge_runtime.backends.ort, semobridge_runtime.tokenizer, sys; "
            "import semobridge_runtime.serve, semobridge_runtime.serve.cli; "
            "assert 'torch' not in sys.modules, 'torch was imported'; "
            "assert 'semobridge' not in sys.modules and 'semobridge_export' not in sys.modules; "
            "assert 'pytriton' not in sys.modules and 'tritonclient' not in sys.modules, 'serving was imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_declared_dependencies_have_no_torch() -> None:
    project = tomllib.loads((RUNTIME / "pyproject.toml").read_text())["project"]
    assert project["name"] == "semobridge-runtime"
    # Pillow: image files decode out of the box (the README's clf.predict("photo.jpg")); ftfy and regex:
    # open_clip's exact tokenizer, to enrol classes; click: the command lines (pure Python)
    assert sorted(d.split(">")[0] for d in project["dependencies"]) == ["Pillow", "click", "ftfy", "numpy", "onnxruntime",
                                                                         "regex"]
    every = project["dependencies"] + [d for extra in project["optional-dependencies"].values() for d in extra]
    assert not any("torch" in d.lower() for d in every)
    installed = metadata.requires("semobridge-runtime") or []
    assert not any("torch" in d.lower() for d in installed)


def test_console_script_declared() -> None:
    project = tomllib.loads((RUNTIME / "pyproject.toml").read_text())["project"]
    assert project["scripts"]["semobridge-run"] == "semobridge_runtime.cli:main"
    assert project["scripts"]["semobridge-classes"] == "semobridge_runtime.classes_cli:main"
    assert project["scripts"]["semobridge-serve"] == "semobridge_runtime.serve.cli:main"
    assert project["scripts"]["semobridge-eval"] == "semobridge_runtime.eval_cli:main"


def test_serving_is_an_optional_extra() -> None:
    project = tomllib.loads((RUNTIME / "pyproject.toml").read_text())["project"]
    assert sorted(d.split(">")[0].split("[")[0] for d in project["optional-dependencies"]["serve"]) == [
        "nvidia-pytriton", "tritonclient"]
    assert "semobridge_runtime.serve" in tomllib.loads((RUNTIME / "pyproject.toml").read_text())["tool"]["setuptools"][
        "packages"]

"""What every model instance loads (Classifier.load's options, from the command line) and what the config publishes
about it; in process, without a server."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from semobridge_runtime.precision import INT8_MIN_AGREEMENT
from semobridge_runtime.serve.cli import parse_args, settings_of
from semobridge_runtime.serve.repository import model_parameters
from semobridge_runtime.serve.settings import load_classifier


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def published(argv: list[str]) -> dict:
    settings = settings_of(parse_args(argv))
    return {key: json.loads(value) for key, value in model_parameters(load_classifier(settings), settings).items()}


@pytest.mark.parametrize("options, precision, runs", [([], "int8", "model_int8.onnx"), (["--no-int8"], "fp32", "model.onnx")])
def test_the_int8_choice_is_the_runtimes_and_the_config_names_the_file_that_runs(exported_onnx: Path, options, precision,
                                                                                 runs) -> None:
    recorded = json.loads((exported_onnx / "model_int8.json").read_text())["int8"]["label_agreement"]
    assert recorded >= INT8_MIN_AGREEMENT  # the tiny export's int8 artifact qualifies (its export measured it)
    parameters = published([str(exported_onnx / "model.onnx"), *options])
    assert parameters["semobridge"]["precision"] == precision
    assert parameters["model_sha256"] == sha256(exported_onnx / runs)
    assert parameters["semobridge_serve"]["prefer_int8"] == (not options)


def test_a_class_file_is_carried_to_the_instances_by_its_absolute_path(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    settings = settings_of(parse_args(["model.onnx", "--classes", "shop.classes"]))
    assert settings.classes == str(tmp_path / "shop.classes") and settings.model == str(tmp_path / "model.onnx")
    assert settings_of(parse_args(["model.onnx"])).classes is None


def test_the_config_publishes_the_precision_of_the_backend_that_runs(exported_onnx: Path, tmp_path: Path, monkeypatch) -> None:
    """On an AMX CPU `auto` runs OpenVINO (bf16 where the CPU computes it): the config says so, not the file's fp32.
    The choice is forced here: AMX through choice.cpu_flags, and OpenVINO's agreement as the export records it
    (the tiny random model's bf16 labels differ on some fit images)."""
    pytest.importorskip("openvino", reason="the OpenVINO backend needs openvino (pip install 'semobridge-runtime[openvino]')")
    from semobridge_runtime.backends import choice

    for name in ("model.onnx", "model.json", "model_int8.onnx", "model_int8.json"):
        shutil.copy(exported_onnx / name, tmp_path / name)
    meta = json.loads((tmp_path / "model.json").read_text())
    meta["openvino"] = {"precision": "bf16", "label_agreement": 1.0, "min_cosine": 0.9999}
    (tmp_path / "model.json").write_text(json.dumps(meta))
    monkeypatch.setattr(choice, "cpu_flags", lambda: frozenset({"avx512f", "avx512_bf16", "amx_bf16"}))
    settings = settings_of(parse_args([str(tmp_path / "model.onnx")]))
    classifier = load_classifier(settings)
    assert classifier._backend.name == "openvino", repr(classifier)
    runs = {"f32": "fp32", "f16": "fp16", "bf16": "bf16"}[classifier._backend.precision]  # OpenVINO's own word for it
    published = {key: json.loads(value) for key, value in model_parameters(classifier, settings).items()}
    assert published["semobridge"]["precision"] == runs  # was the file's fp32
    assert classifier.precision == runs
    assert published["model_sha256"] == sha256(tmp_path / "model.onnx")

"""On the CPU, Classifier.load picks the int8 artifact beside model.onnx when its export measured >= 99% label agreement."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from semobridge_runtime import Classifier
from semobridge_runtime.precision import INT8_MIN_AGREEMENT


@pytest.fixture()
def export_folder(exported_onnx: Path, tmp_path: Path):
    """A copy of the exported fp32 and int8 models with their sidecars; `recorded(agreement, **changes)` rewrites
    what the export recorded about the int8 artifact."""
    for name in ("model.onnx", "model.json", "model_int8.onnx", "model_int8.json"):
        shutil.copy(exported_onnx / name, tmp_path / name)

    def recorded(agreement: float | None, **changes) -> Path:
        sidecar = tmp_path / "model_int8.json"
        meta = json.loads((exported_onnx / "model_int8.json").read_text())
        meta.pop("int8", None)
        if agreement is not None:
            meta["int8"] = {"label_agreement": agreement, "images": 200, "measured_on": "few-shot images"}
        sidecar.write_text(json.dumps({**meta, **changes}))
        return tmp_path / "model.onnx"

    return recorded


def test_int8_is_picked_on_the_cpu_when_its_labels_agree(export_folder, exported_onnx: Path) -> None:
    path = export_folder(0.995)
    classifier = Classifier.load(path)
    assert classifier.info.precision == "int8"
    measured = json.loads((exported_onnx / "model_int8.json").read_text())["int8"]["label_agreement"]  # also in the file
    assert f"precision='int8', int8_label_agreement={measured:.1%}" in repr(classifier)
    direct = Classifier.load(path.with_name("model_int8.onnx"))
    images = np.random.default_rng(3).integers(0, 256, (3, 50, 70, 3), dtype=np.uint8)
    np.testing.assert_array_equal(classifier.predict(images).scores, direct.predict(images).scores)
    assert Classifier.load(path, providers=["CPUExecutionProvider"]).info.precision == "int8"


@pytest.mark.parametrize("agreement, changes", [
    (INT8_MIN_AGREEMENT - 0.001, {}),  # below the bar
    (None, {}),  # not measured
    (0.995, {"class_names": ["another", "class", "list", "of", "five"]}),  # not the same classes
    (0.995, {"precision": "fp16"}),  # not an int8 artifact
])
def test_fp32_is_kept_otherwise(export_folder, agreement, changes) -> None:
    classifier = Classifier.load(export_folder(agreement, **changes))
    assert classifier.info.precision == "fp32" and "precision='fp32'" in repr(classifier)


def test_the_choice_can_be_turned_off(export_folder) -> None:
    assert Classifier.load(export_folder(1.0), prefer_int8=False).info.precision == "fp32"


def test_semobridge_run_keeps_fp32_with_no_int8(export_folder, tmp_path: Path, capsys) -> None:
    from PIL import Image

    from semobridge_runtime.cli import main

    path, image = export_folder(1.0), np.random.default_rng(4).integers(0, 256, (40, 60, 3), dtype=np.uint8)
    Image.fromarray(image).save(tmp_path / "a.png")
    printed = {}
    for options in ([], ["--no-int8"]):
        assert main([str(path), str(tmp_path / "a.png"), "--json", *options]) == 0
        printed[bool(options)] = [entry["score"] for entry in json.loads(capsys.readouterr().out)[0]["top_k"]]
    for no_int8, precision in ((False, "int8"), (True, "fp32")):
        reference = Classifier.load(path, prefer_int8=not no_int8)
        assert reference.info.precision == precision
        np.testing.assert_allclose(printed[no_int8], reference.predict(image).top_k.scores[0], rtol=0, atol=1e-6)
    assert printed[False] != printed[True]  # the two precisions tell apart

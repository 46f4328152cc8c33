"""OpenVINO static int8 (semobridge-export --int8-cpu with nncf installed; Classifier.load(..., backend="openvino",
openvino_precision="int8")): the export writes the IR and records what it measured, the runtime reads it without NNCF,
paired with its model.onnx, and refuses an IR that is absent, stale, truncated or not a regular file.

Exactness of the preprocessing, class sets and labels against fp32: tests/runtime/test_backends.py ("openvino-int8").
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from semobridge_runtime import Classifier, InputError, ModelError
from semobridge_runtime.cli import main

from .test_backends import photos, skip_without_int8_ir
from .test_runtime_telemetry import clean_env, written  # noqa: F401  (clean_env: a fixture)

IR = ("model_openvino_int8.xml", "model_openvino_int8.bin")


@pytest.fixture()
def exported(exported_onnx: Path) -> Path:
    skip_without_int8_ir(exported_onnx)
    return exported_onnx


@pytest.fixture()
def folder(exported: Path, tmp_path: Path) -> Path:
    """model.onnx, its sidecar and the IR, copied (the tests change them)."""
    for name in ("model.onnx", "model.json", *IR):
        shutil.copy(exported / name, tmp_path / name)
    return tmp_path


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_export_pairs_the_ir_and_records_what_it_measured(exported: Path) -> None:
    """The fp32 model's metadata (file and sidecar) records the IR's SHA-256 and its agreement with fp32 on the export's
    check images, which a fresh measurement here reproduces; the manifest lists both files."""
    from semobridge_export.exporter import CHECK_IMAGES
    from semobridge_export.reference import reference_scores, session, synthetic_images

    record = json.loads((exported / "model.json").read_text())["openvino_int8"]
    assert (record["xml_sha256"], record["bin_sha256"]) == tuple(sha256(exported / name) for name in IR)
    assert record["images"] == CHECK_IMAGES and record["measured_on"] == "check images"
    assert record["float_precision"] in ("bf16", "f32")
    clf = Classifier.load(exported / "model.onnx", backend="openvino", openvino_precision="int8", unknown=None)
    assert clf.info.to_dict()["openvino_int8"] == record  # the graph's own metadata says the same
    assert clf.precision == "int8" and "runs='int8'" in repr(clf)
    ref, same, cosines = session(exported / "model.onnx"), [], []
    for image in synthetic_images(CHECK_IMAGES, seed=0):  # the export's check images
        want, got = reference_scores(ref, image[None]), clf.predict(image)
        same.append(got.labels[0] == want["label"][0])
        a, b = got.embeddings[0], want["embedding"][0]
        cosines.append(float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b))))
    assert record["label_agreement"] == round(float(np.mean(same)), 4)
    assert record["min_cosine"] == pytest.approx(min(cosines), abs=2e-6)
    assert 0.99 < record["min_cosine"] <= 1.0
    manifest = json.loads((exported / "manifest.json").read_text())["files"]
    assert all(manifest[name]["sha256"] == sha256(exported / name) for name in IR)


def test_int8_runs_without_nncf_and_torch(exported: Path, tmp_path: Path) -> None:
    """The runtime reads the IR with OpenVINO alone: in a process where nncf and torch cannot be imported it loads the
    IR and gives the labels and scores it gives here."""
    images = photos(3, seed=11)
    np.savez(tmp_path / "images.npz", *images)
    code = (
        "import sys, json, numpy as np\n"
        "sys.modules['nncf'] = sys.modules['torch'] = None  # import nncf / import torch raise ImportError\n"
        "from semobridge_runtime import Classifier\n"
        f"clf = Classifier.load({str(exported / 'model.onnx')!r}, backend='openvino', openvino_precision='int8')\n"
        f"got = clf.predict(list(np.load({str(tmp_path / 'images.npz')!r}).values()))\n"
        "print(json.dumps({'labels': got.labels.tolist(), 'scores': got.scores.tolist(), 'precision': clf.precision}))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    there = json.loads(done.stdout)
    here = Classifier.load(exported / "model.onnx", backend="openvino", openvino_precision="int8").predict(images)
    assert there["precision"] == "int8" and there["labels"] == here.labels.tolist()
    np.testing.assert_allclose(there["scores"], here.scores, atol=1e-5)


def test_the_cli_runs_int8(exported: Path, tmp_path: Path, capsys) -> None:
    from PIL import Image

    path = tmp_path / "photo.png"
    Image.fromarray(photos(1, seed=12)[0]).save(path)
    args = [str(exported / "model.onnx"), str(path), "--json", "--openvino-precision", "int8"]  # runs OpenVINO
    assert main(args) == 0
    row = json.loads(capsys.readouterr().out)[0]
    want = Classifier.load(exported / "model.onnx", backend="openvino", openvino_precision="int8").predict(str(path))
    assert row["label"] == want.class_names[0]


def test_an_openvino_precision_asks_for_openvino(exported: Path) -> None:
    """backend="auto" with openvino_precision="int8" runs the IR, not ONNX Runtime (which would ignore the precision)."""
    clf = Classifier.load(exported / "model.onnx", openvino_precision="int8")
    assert "backend='openvino'" in repr(clf) and clf.precision == "int8"


def load(folder: Path) -> Classifier:
    return Classifier.load(folder / "model.onnx", backend="openvino", openvino_precision="int8")


def test_an_absent_ir_is_refused(folder: Path) -> None:
    (folder / IR[1]).unlink()
    with pytest.raises(ModelError, match="model_openvino_int8.bin: it does not exist") as err:
        load(folder)
    assert "--int8-cpu" in err.value.hint and "openvino_precision='auto'" in err.value.hint


@pytest.mark.parametrize("change", ["truncated", "stale"])
def test_an_ir_of_other_bytes_is_refused(folder: Path, change: str) -> None:
    """Truncated weights, or an IR whose bytes are not those the model's export wrote (another export's)."""
    if change == "truncated":
        data = (folder / IR[1]).read_bytes()
        (folder / IR[1]).write_bytes(data[: len(data) // 2])
    else:
        xml = (folder / IR[0]).read_text()
        (folder / IR[0]).write_text(xml.replace("<net ", "<net version_note=\"other export\" ", 1))
    with pytest.raises(ModelError, match="not the int8 IR exported with .*SHA-256") as err:
        load(folder)
    assert "--int8-cpu" in err.value.hint


def test_a_model_that_records_no_ir_refuses_one_beside_it(folder: Path) -> None:
    """model.onnx re-exported without nncf (no 'openvino_int8' in its metadata) beside an IR left from before."""
    from semobridge_export.metadata import ModelInfo
    from semobridge_export.precision import set_metadata

    meta = ModelInfo.from_json((folder / "model.json").read_text(), "model.json")
    set_metadata(folder / "model.onnx", dataclasses.replace(meta, openvino_int8=None))
    with pytest.raises(ModelError, match="has no OpenVINO int8 IR: its metadata records none") as err:
        load(folder)
    assert "nncf" in err.value.hint


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this system")
@pytest.mark.parametrize("kind", ["fifo", "folder"])
def test_an_ir_that_is_not_a_regular_file_is_refused(folder: Path, kind: str) -> None:
    (folder / IR[0]).unlink()
    os.mkfifo(folder / IR[0]) if kind == "fifo" else (folder / IR[0]).mkdir()
    with pytest.raises(ModelError, match="is a pipe|is a directory"):
        load(folder)  # a FIFO does not block the load


def test_an_unknown_openvino_precision_is_refused(exported: Path) -> None:
    with pytest.raises(InputError, match="unknown OpenVINO precision 'int4'") as err:
        Classifier.load(exported / "model.onnx", backend="openvino", openvino_precision="int4")
    assert "int8" in err.value.hint


def test_an_openvino_precision_with_another_backend_is_refused(exported: Path) -> None:
    """ONNX Runtime would run and ignore it."""
    with pytest.raises(InputError, match="openvino_precision='int8' applies to the OpenVINO backend, not to "
                                         "model.onnx on backend='onnxruntime'") as err:
        Classifier.load(exported / "model.onnx", backend="onnxruntime", openvino_precision="int8")
    assert "backend='openvino'" in err.value.hint
    with pytest.raises(InputError, match="not to m.engine on backend='auto'"):  # an engine file is TensorRT's
        Classifier.load(exported / "m.engine", openvino_precision="int8")
    with pytest.raises(InputError, match="unknown backend 'openvno'"):  # the first mistake first
        Classifier.load(exported / "model.onnx", backend="openvno", openvino_precision="int8")


def test_an_ir_that_changed_labels_at_export_runs_and_says_so(exported: Path) -> None:
    """Asked for, it runs; below the agreement the int8 artifact needs to be chosen, a warning quotes the export's
    measurement."""
    from semobridge_runtime.backends.openvino import OpenVINOBackend

    measured = Classifier.load(exported / "model.onnx", backend="openvino", openvino_precision="int8").info.openvino_int8
    low = dataclasses.replace(measured, label_agreement=0.9, images=20, measured_on="few-shot images")
    with pytest.warns(UserWarning, match=r"kept the fp32 graph's label on only 90.0% of the 20 few-shot images at "
                                         r"export .*openvino_precision='auto'"):
        backend = OpenVINOBackend(exported / "model.onnx", "int8", int8_pairing=low)
    assert backend.precision == "int8"


def test_export_without_nncf_leaves_the_ir_out_with_one_line(monkeypatch, tiny_head, tiny_backbone, tmp_path: Path) -> None:
    """--int8-cpu: the other artifacts, and one line saying what to install; the format asked for by name: refused
    before any work, nothing written."""
    from semobridge_export import export, exporter, openvino_int8
    from semobridge_export.formats import resolve_formats

    absent = "nncf is not installed (pip install 'semobridge[nncf]')"
    monkeypatch.setattr(openvino_int8, "missing", lambda: absent)
    lines: list[str] = []
    names = resolve_formats("onnx", int8_cpu=True)
    assert exporter.without_absent_openvino_int8(names, "onnx", lines.append) == [n for n in names if n != "openvino-int8"]
    assert lines == [f"openvino-int8 skipped: {absent}"]
    with pytest.raises(InputError, match="the openvino-int8 format cannot be written here: nncf is not installed") as err:
        export(tiny_head, tiny_backbone, tmp_path / "out", formats="onnx,openvino-int8", log=lines.append)
    assert "leave the format out" in err.value.hint
    assert list(tmp_path.iterdir()) == [] and len(lines) == 1


def test_nncf_failing_leaves_the_ir_out_of_an_int8_cpu_export(monkeypatch, tiny_head, tiny_backbone, tmp_path: Path) -> None:
    """Added by --int8-cpu, the IR is one product among others: NNCF failing on the graph drops it with one line (the
    whole export was lost, model_int8.onnx with it). (Asked for by name, the failure stands: the exporter re-raises.)"""
    from semobridge_export import export, formats, openvino_int8

    def fail(*_args, **_kwargs):
        raise RuntimeError("NNCF cannot quantise this graph\nsecond line")

    monkeypatch.setattr(openvino_int8, "missing", lambda: None)
    monkeypatch.setattr(openvino_int8, "write_int8_ir", fail)
    monkeypatch.setitem(formats.FLAG_FORMATS, "int8_cpu", ("openvino-int8",))  # the one product under test
    lines: list[str] = []
    written = export(tiny_head, tiny_backbone, tmp_path / "out", formats="onnx", int8_cpu=True, log=lines.append)
    assert "openvino-int8 skipped: NNCF failed (RuntimeError: NNCF cannot quantise this graph)" in lines
    assert "onnx" in written and "openvino-int8" not in written
    assert (tmp_path / "out" / "model.onnx").is_file() and not any("openvino" in p.name for p in (tmp_path / "out").iterdir())


def test_the_export_keeps_nncf_from_sending_telemetry(exported: Path, clean_env) -> None:  # noqa: F811
    """NNCF writes ~/intel/openvino_ga_cid and sends events when it can import openvino_telemetry (outside pytest and
    CI); the exporter imports it without (an empty HOME stays empty)."""
    env, folders = clean_env
    code = ("from unittest.mock import MagicMock; from semobridge_export.openvino_int8 import import_nncf; "
            "import_nncf(); from nncf.telemetry import wrapper; assert isinstance(wrapper.telemetry, MagicMock)")
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert written(folders) == []

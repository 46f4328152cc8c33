"""Class files: the documented byte layout, safetensors compatibility, refusals, atomic writes."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from semobridge_runtime import Classifier, InputError, ModelError
from semobridge_runtime import tensorfile
from tests.runtime.conftest import ENROL_CLASSES
from tests.runtime.test_classes import shots


@pytest.fixture(scope="module")
def shop(enrol_export, enrol_pool, tmp_path_factory) -> tuple[Classifier, Path]:
    """The fitted classes plus 'white swan', saved as shop.classes."""
    clf = Classifier.load(enrol_export)
    clf.add_class("white swan", shots(enrol_pool, "white swan"))
    clf.rename_class("blue whale", "Wal (blau) \"groß\" 🐋")
    path = tmp_path_factory.mktemp("classes") / "shop.classes"
    clf.save_classes(path)
    return clf, path


def test_byte_layout(shop, enrol_export) -> None:
    """docs/classes.md: u64 LE header length, compact JSON header padded to 8 bytes, float32 LE tensors, names as UTF-8."""
    clf, path = shop
    data = path.read_bytes()
    n = int.from_bytes(data[:8], "little")
    assert (8 + n) % 8 == 0 and data[8:9] == b"{" and data[8 + n - 1: 8 + n] in (b"}", b" ")
    header = json.loads(data[8:8 + n])
    meta = json.loads(enrol_export.with_suffix(".json").read_text())
    assert list(header) == ["__metadata__", "text_classifier", "bridged_prototypes", "image_prototypes", "class_kl", "class_names",
                            "calibration_features", "calibration_bridged_features", "calibration_labels", "calibration_shot"]
    assert header["__metadata__"] == {
        "format": "semobridge-classes/1", "backbone": "semobridge-tiny", "weights_hash": meta["backbone"]["weights_hash"],
        "bridge_hash": meta["bridge_hash"], "num_classes": "4", "embedding_dim": "64",
        "temperature": repr(clf.temperature), "threshold": repr(clf.threshold), "score": clf.classes.score,
    }
    assert list(header["__metadata__"])[-3:] == ["temperature", "threshold", "score"]
    body, C, d, offset = data[8 + n:], 4, 64, 0
    for name, shape in [("text_classifier", [C, d]), ("bridged_prototypes", [C, d]), ("image_prototypes", [C, d]), ("class_kl", [C])]:
        spec = header[name]
        assert spec["dtype"] == "F32" and spec["shape"] == shape and spec["data_offsets"][0] == offset
        offset = spec["data_offsets"][1]
        np.testing.assert_array_equal(np.frombuffer(body[spec["data_offsets"][0]:offset], "<f4").reshape(shape),
                                      getattr(clf.classes, name))
    spec = header["class_names"]
    assert spec["dtype"] == "U8" and spec["data_offsets"][0] == offset
    offset = spec["data_offsets"][1]
    assert body[spec["data_offsets"][0]:offset].decode("utf-8").split("\n") == clf.class_names
    M = 3 * 3 + 3 * 3 + 3  # the fit's shots and validation images, white swan's shots
    kept = clf.classes.calibration
    for name, dtype, shape, value in [("calibration_features", "<f4", [M, d], kept.features),
                                      ("calibration_bridged_features", "<f4", [M, d], kept.bridged),
                                      ("calibration_labels", "<i8", [M], kept.labels),
                                      ("calibration_shot", "u1", [M], kept.shot)]:
        spec = header[name]
        assert spec["dtype"] == {"<f4": "F32", "<i8": "I64", "u1": "U8"}[dtype] and spec["shape"] == shape
        assert spec["data_offsets"][0] == offset
        offset = spec["data_offsets"][1]
        np.testing.assert_array_equal(np.frombuffer(body[spec["data_offsets"][0]:offset], dtype).reshape(shape), value)
    assert offset == len(body)
    assert data.isascii() is False and data[8:8 + n].isascii()  # the header is ASCII; names are raw UTF-8 in the data


def test_safetensors_reads_ours_and_we_read_safetensors(shop, tmp_path) -> None:
    from safetensors.numpy import load_file, save_file

    clf, path = shop
    loaded = load_file(str(path))
    np.testing.assert_array_equal(loaded["class_kl"], clf.classes.class_kl)
    arrays = {"b": np.arange(6, dtype=np.float32).reshape(2, 3), "a": np.array([1, 2], np.int64), "c": np.zeros(3, np.uint8)}
    save_file(arrays, str(tmp_path / "x.safetensors"), metadata={"k": "v"})
    tensors, meta = tensorfile.read(tmp_path / "x.safetensors")
    assert meta == {"k": "v"} and all(np.array_equal(tensors[k], v) for k, v in arrays.items())


def test_load_gives_the_saved_classes(shop, enrol_export, enrol_pool) -> None:
    clf, path = shop
    images = [np.asarray(__import__("PIL.Image").Image.open(p).convert("RGB")) for p in shots(enrol_pool, "red fox", "test")]
    again = Classifier.load(enrol_export, classes=path)
    assert again.class_names == clf.class_names == ["Wal (blau) \"groß\" 🐋", "green tree", "red fox", "white swan"]
    np.testing.assert_array_equal(again.predict(images).scores, clf.predict(images).scores)
    fitted = Classifier.load(enrol_export)
    fitted.load_classes(path)
    assert fitted.class_names == clf.class_names


def rewrite(path: Path, target: Path, **meta: str) -> Path:
    tensors, old = tensorfile.read(path)
    target.write_bytes(tensorfile.encode(tensors, {**old, **meta}))
    return target


def test_refusals(shop, enrol_export, tmp_path) -> None:
    _, path = shop
    clf = Classifier.load(enrol_export)
    data = path.read_bytes()
    cases = {
        "another backbone": (rewrite(path, tmp_path / "b.classes", weights_hash="0123456789abcdef"), "made for the backbone"),
        "another bridge": (rewrite(path, tmp_path / "w.classes", bridge_hash="fedcba9876543210"), "another W\\+"),
        "not ours": (rewrite(path, tmp_path / "f.classes", format="something/1"), "not a semobridge class file"),
        "missing": (tmp_path / "missing.classes", "cannot read class file"),
        "empty": (tmp_path / "empty.classes", "truncated"),
    }
    (tmp_path / "empty.classes").write_bytes(b"")
    for cut in (4, 12, 200, len(data) - 100, len(data) - 1):
        cases[f"cut at {cut}"] = (tmp_path / f"cut{cut}.classes", "truncated")
        (tmp_path / f"cut{cut}.classes").write_bytes(data[:cut])
    for label, (bad, message) in cases.items():
        with pytest.raises(ModelError, match=message):
            clf.load_classes(bad)
        with pytest.raises(ModelError, match=message):
            Classifier.load(enrol_export, classes=bad)
    assert clf.class_names == list(ENROL_CLASSES[:3]) and clf._enrolment.classes is None


def test_a_model_with_baked_classes_refuses_class_files(shop, contract_onnx) -> None:
    with pytest.raises(ModelError, match="classes baked in"):
        Classifier.load(contract_onnx, classes=shop[1])


def test_an_unwritable_target_loses_nothing(shop, tmp_path, monkeypatch) -> None:
    clf, path = shop
    old = tmp_path / "old.classes"
    old.write_bytes(b"the old class file")
    (tmp_path / "folder.classes").mkdir()
    with pytest.raises(InputError, match="exists and is not a regular file"):  # the output rule (files.check_output)
        clf.save_classes(tmp_path / "folder.classes")

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", full_disk)
    with pytest.raises(InputError, match="No space left on device.*nothing was changed"):
        clf.save_classes(old)
    assert old.read_bytes() == b"the old class file"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["folder.classes", "old.classes"]  # no temporary file left

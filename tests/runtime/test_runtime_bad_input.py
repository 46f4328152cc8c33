"""Bad images and bad model files raise InputError/ModelError/BackendError with a message naming the fix."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from semobridge_runtime import BackendError, Classifier, InputError, ModelError

from .contract_model import MISMATCHED

RGB = np.zeros((8, 8, 3), np.uint8)


@pytest.fixture(scope="module")
def clf(contract_onnx: Path) -> Classifier:
    return Classifier.load(contract_onnx)


@pytest.mark.parametrize(
    ("images", "message"),
    [
        (RGB.astype(np.float32), "astype(np.uint8)"),
        (RGB.astype(np.float64)[None], "float variant"),
        (RGB.astype(np.int64), "uint8"),
        (np.zeros((8, 8, 5), np.uint8), "5 channels"),
        (np.zeros((8, 8, 2), np.uint8), "gray (1, replicated) or RGBA (4, alpha dropped)"),
        (np.zeros((3, 8, 9), np.uint8), "transpose(1, 2, 0)"),
        (np.zeros((2, 3, 8, 9), np.uint8), "transpose(0, 2, 3, 1)"),
        ([], "no images"),
        ((), "no images"),
        (np.zeros((0, 8, 8, 3), np.uint8), "empty"),
        (np.zeros((0, 8, 3), np.uint8), "empty"),
        ([RGB, np.zeros((8, 0, 3), np.uint8)], "image 1 is empty"),
        (np.zeros((2, 2, 2, 2, 3), np.uint8), "expected HxWx3"),
        ([np.zeros((2, 8, 8, 3), np.uint8)], "not batches"),
        (42, "unsupported type int"),
        ([RGB, None], "image 1: unsupported type NoneType"),
        ("no/such/image.png", "no such image file"),
        (np.zeros((8, 8, 3), np.uint16), "dtype uint16"),
    ],
)
def test_bad_images(clf: Classifier, images, message: str) -> None:
    with pytest.raises(InputError) as info:
        clf.predict(images)
    assert message in str(info.value)
    with pytest.raises(InputError):
        clf.embed(images)


def test_undecodable_image_file(clf: Classifier, tmp_path: Path) -> None:
    pytest.importorskip("PIL", reason="Pillow is not installed")
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not a jpeg")
    with pytest.raises(InputError, match="cannot decode"):
        clf.predict(bad)


@pytest.mark.parametrize("top_k", [0, -1, 1.5, None])
def test_bad_top_k(clf: Classifier, top_k) -> None:
    with pytest.raises(InputError, match="top_k"):
        clf.predict(RGB, top_k=top_k)


def test_directory_is_not_an_image(clf: Classifier, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="is a directory, not an image file") as info:
        clf.predict(tmp_path)
    assert "semobridge-run MODEL DIR" in info.value.hint


def test_fixed_size_mismatch(make_model) -> None:
    clf = Classifier.load(make_model(fixed_size=(24, 20)))
    with pytest.raises(InputError, match="fixed size of 24x20: resize"):
        clf.predict(RGB)


@pytest.mark.parametrize(
    ("images", "message"),
    [
        (np.zeros((1, 3, 32, 32), np.float64), "astype(np.float32)"),
        (np.zeros((3, 32, 32), np.float32), "got shape (3, 32, 32)"),
        (np.zeros((1, 3, 16, 16), np.float32), "[N,3,32,32]"),
        (np.zeros((0, 3, 32, 32), np.float32), "empty batch"),
        ([np.zeros((3, 32, 32), np.float32)], "as one numpy array, not list"),
    ],
)
def test_float_model_bad_input(make_model, images, message: str) -> None:
    clf = Classifier.load(make_model(kind="float"))
    with pytest.raises(InputError) as info:
        clf.predict(images)
    assert message in str(info.value)


@pytest.mark.parametrize("images", [np.zeros((1, 3, 32, 32), np.uint8), RGB, [RGB], "image.jpg"])
def test_float_model_given_pixels_is_a_model_error(make_model, images) -> None:
    """As in C (sb_classify on a float model: SB_EMODEL): this model cannot take pixels, the uint8 export can."""
    clf = Classifier.load(make_model(kind="float"))
    with pytest.raises(ModelError, match="float-variant model.*not raw pixels") as info:
        clf.predict(images)
    assert "uint8 export" in info.value.hint


def test_missing_model(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="model file not found"):
        Classifier.load(tmp_path / "missing.onnx")


def test_model_that_is_not_ours(make_model) -> None:
    with pytest.raises(ModelError, match="not a semobridge export"):
        Classifier.load(make_model(metadata=False))


@pytest.mark.parametrize("content", ["truncated", "garbage", "empty"])
def test_corrupt_model(contract_onnx: Path, tmp_path: Path, content: str) -> None:
    data = contract_onnx.read_bytes()
    bad = tmp_path / "model.onnx"
    bad.write_bytes({"truncated": data[: len(data) // 2], "garbage": b"\x00hello" * 100, "empty": b""}[content])
    with pytest.raises(ModelError, match="cannot load .* re-export or re-download"):
        Classifier.load(bad)


def test_newer_format_version(contract_onnx: Path, tmp_path: Path) -> None:
    model = onnx.load(str(contract_onnx))
    for prop in model.metadata_props:
        if prop.key == "semobridge":
            prop.value = json.dumps({**json.loads(prop.value), "format_version": 99})
    onnx.save(model, str(tmp_path / "model.onnx"))
    with pytest.raises(ModelError, match="upgrade semobridge-runtime"):
        Classifier.load(tmp_path / "model.onnx")


def test_unknown_backend_and_provider(contract_onnx: Path) -> None:
    with pytest.raises(InputError, match="unknown backend 'pytorch'"):
        Classifier.load(contract_onnx, backend="pytorch")
    with pytest.raises(BackendError, match="not available") as info:
        Classifier.load(contract_onnx, providers=["NoSuchExecutionProvider"])
    assert "onnxruntime-gpu" in info.value.hint


def test_missing_model_is_a_model_error_before_the_backend(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="is a directory, not a model file"):
        Classifier.load(tmp_path)


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("embedding width", "output 'embedding' is float32 [?, 8] but the metadata describes float32 [?, 9]"),
        ("class count", "output 'scores' is float32 [?, 5]"),
        ("label renamed", "the graph has no 'label' output"),
        ("label is float", "output 'label' is float32 [?] but the metadata describes int64"),
        ("scores are double", "output 'scores' is float64"),
        ("float input of another size", "input 'image' is float32 [?, 3, 32, 32]"),
        ("uint8 graph, float metadata", "input 'image' is uint8 [?, ?, ?, 3]"),
    ],
)
def test_graph_that_does_not_match_its_metadata_fails_at_load(make_model, case: str, message: str) -> None:
    options = MISMATCHED.get(case, {"meta_changes": {"input": {"name": "image", "kind": "float"}}})
    with pytest.raises(ModelError) as info:
        Classifier.load(make_model(**options))
    assert message in str(info.value) and "re-export" in info.value.hint

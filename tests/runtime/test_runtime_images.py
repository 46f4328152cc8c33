"""Image files: 16-bit images are scaled to 8 bits, not saturated to white."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from semobridge_runtime import Classifier, to_8bit


def test_to_8bit_rounds_to_nearest() -> None:
    v16 = np.arange(65536)
    expected = np.round(v16 * 255 / 65535)  # independent reference: nearest 8-bit level (no ties occur)
    np.testing.assert_array_equal(to_8bit(v16), expected)
    assert to_8bit(np.array([0, 128, 129, 32767, 32896, 65406, 65407, 65535])).tolist() == \
        [0, 0, 1, 127, 128, 254, 255, 255]
    assert to_8bit(np.array([-5, 70000])).tolist() == [0, 255]  # mode "I" is 32-bit: clipped first
    assert to_8bit(v16).dtype == np.uint8


@pytest.fixture(scope="module")
def clf(contract_onnx: Path) -> Classifier:
    return Classifier.load(contract_onnx)


@pytest.fixture()
def gray16() -> np.ndarray:
    """A 16-bit gray ramp over the whole range (a mid-gray image would saturate to 255 if clamped)."""
    return np.random.default_rng(3).integers(0, 65536, (24, 20)).astype(np.uint16)


def expected_scores(clf: Classifier, gray16: np.ndarray) -> np.ndarray:
    gray8 = np.round(gray16 / 257).astype(np.uint8)
    return clf.predict(np.repeat(gray8[:, :, None], 3, axis=2)).scores


def test_16bit_png_file(clf: Classifier, gray16: np.ndarray, tmp_path: Path) -> None:
    path = tmp_path / "gray16.png"
    Image.fromarray(gray16).save(path)
    with Image.open(path) as img:
        assert img.mode in ("I;16", "I")  # as Pillow opens 16-bit gray PNGs
    np.testing.assert_allclose(clf.predict(path).scores, expected_scores(clf, gray16), atol=1e-6)
    white = clf.predict(np.full((24, 20, 3), 255, np.uint8)).scores
    assert np.abs(clf.predict(path).scores - white).max() > 1e-3


@pytest.mark.parametrize("mode", ["I;16", "I;16B", "I;16L", "I;16N", "I"])
def test_16bit_pil_modes(clf: Classifier, gray16: np.ndarray, mode: str) -> None:
    h, w = gray16.shape
    if mode == "I":
        image = Image.fromarray(gray16.astype(np.int32))
    else:
        order = {"I;16B": ">", "I;16N": "="}.get(mode, "<")
        image = Image.frombytes(mode, (w, h), gray16.astype(f"{order}u2").tobytes())
    assert image.mode == mode
    np.testing.assert_allclose(clf.predict(image).scores, expected_scores(clf, gray16), atol=1e-6)

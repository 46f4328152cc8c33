"""Image and thread limits in the Python runtime: refused before decoding or running, with the way to raise them."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from semobridge_runtime import Classifier, ImageLimits, InputError, ModelError
from semobridge_runtime.limits import MAX_ASPECT, MAX_PIXELS, MAX_SIDE, MAX_THREADS


def png_header_only(path: Path, height: int, width: int) -> Path:
    """A PNG whose header says height x width but whose pixel data is garbage: decoding it would fail."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", b"garbage") + chunk(b"IEND", b""))
    return path


@pytest.fixture(scope="module")
def clf(contract_onnx: Path) -> Classifier:
    return Classifier.load(contract_onnx)


def test_defaults_equal_the_library() -> None:
    validate = pytest.importorskip("semobridge.validate", reason="semobridge (the library) is not installed")
    assert (MAX_SIDE, MAX_PIXELS, MAX_ASPECT, MAX_THREADS) == (
        validate.MAX_SIDE, validate.MAX_PIXELS, validate.MAX_ASPECT, validate.MAX_THREADS)
    assert ImageLimits() == ImageLimits(MAX_SIDE, MAX_PIXELS, MAX_ASPECT)


@pytest.mark.parametrize(
    ("hw", "message", "raise_with"),
    [
        ((1, 1_000_000), "its longest side 1000000 exceeds the limit of 16384", "max_side=1000000"),
        ((16385, 1000), "its longest side 16385 exceeds the limit of 16384", "max_side=16385"),
        ((10, 330), "its aspect ratio 33:1 exceeds the limit of 32:1", "max_aspect=33"),
        ((8193, 8192), "its 67117056 pixels exceed the limit of 67108864", "max_pixels=67117056"),
    ],
)
def test_image_beyond_a_limit(clf: Classifier, hw: tuple[int, int], message: str, raise_with: str) -> None:
    height, width = hw
    image = np.broadcast_to(np.zeros(3, np.uint8), (height, width, 3))  # no memory: a view of 3 bytes
    with pytest.raises(InputError) as info:
        clf.predict(image)
    assert str(info.value) == f"image is {height}x{width} (HxW): {message}"
    assert f"Classifier.load(..., {raise_with})" in info.value.hint
    assert f"--{raise_with.split('=')[0].replace('_', '-')} {raise_with.split('=')[1]}" in info.value.hint


def test_batch_and_list_items_are_checked(clf: Classifier) -> None:
    with pytest.raises(InputError, match=r"^batch is 1x40 \(HxW\): its aspect ratio 40:1"):
        clf.predict(np.zeros((2, 1, 40, 3), np.uint8))
    with pytest.raises(InputError, match=r"^image 1 is 40x1 \(HxW\)"):
        clf.predict([np.zeros((8, 8, 3), np.uint8), np.zeros((40, 1), np.uint8)])


def test_limits_are_raised_per_model(contract_onnx: Path) -> None:
    wide = np.zeros((1, 40, 3), np.uint8)
    clf = Classifier.load(contract_onnx, max_aspect=40)
    assert clf.limits == ImageLimits(max_aspect=40)
    assert clf.predict(wide).scores.shape == (1, 5)
    with pytest.raises(InputError, match="its 16 pixels exceed the limit of 15"):
        Classifier.load(contract_onnx, max_pixels=15).predict(np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(InputError, match="longest side 5 exceeds the limit of 4"):
        Classifier.load(contract_onnx, max_side=4).predict(np.zeros((5, 4, 3), np.uint8))


@pytest.mark.parametrize("options", [{"max_pixels": 0}, {"max_side": -3}, {"max_aspect": float("nan")},
                                     {"max_aspect": True}, {"max_pixels": "big"}, {"max_aspect": 0.5},
                                     {"max_side": 0.5}])
def test_bad_limit_values(contract_onnx: Path, options: dict) -> None:
    with pytest.raises(InputError, match="must be a positive number"):
        Classifier.load(contract_onnx, **options)


def test_model_metadata_carries_its_limits(make_model) -> None:
    clf = Classifier.load(make_model(meta_changes={"limits": {"max_side": 64, "max_pixels": 1000, "max_aspect": 2}}))
    assert clf.limits == ImageLimits(64, 1000, 2)
    with pytest.raises(InputError, match="aspect ratio 3:1 exceeds the limit of 2:1"):
        clf.predict(np.zeros((10, 30, 3), np.uint8))
    assert Classifier.load(make_model(meta_changes={"limits": {"max_side": 64}})).limits == ImageLimits(max_side=64)


@pytest.mark.parametrize("limits", [[1, 2], {"max_side": 0}, {"max_pixels": "x"}, {"max_aspect": None}])
def test_bad_metadata_limits(make_model, limits) -> None:
    with pytest.raises(ModelError, match="metadata 'limits'"):
        Classifier.load(make_model(meta_changes={"limits": limits}))


def test_image_file_refused_from_its_header(clf: Classifier, tmp_path: Path) -> None:
    """The size comes from the header: the garbage pixel data is never decoded."""
    path = png_header_only(tmp_path / "wide.png", 1, 1_000_000)
    with pytest.raises(InputError, match=r"wide.png is 1x1000000 \(HxW\): its longest side 1000000"):
        clf.predict(path)
    with pytest.raises(InputError, match="cannot decode"):  # within the limits, decoding fails as it should
        clf.predict(png_header_only(tmp_path / "small.png", 8, 8))


def test_real_wide_png(clf: Classifier, tmp_path: Path) -> None:
    """The issue's case: a 4 KB PNG of 1 x 1,000,000 pixels."""
    path = tmp_path / "wide.png"
    Image.fromarray(np.full((1, 1_000_000, 3), 7, np.uint8)).save(path)
    assert path.stat().st_size < 5000
    with pytest.raises(InputError, match="longest side 1000000 exceeds the limit of 16384"):
        clf.predict(str(path))
    with Image.open(path) as img:  # a PIL image is checked before it is converted
        with pytest.raises(InputError, match="longest side 1000000"):
            clf.predict(img)


def test_decompression_bomb(clf: Classifier, tmp_path: Path) -> None:
    path = png_header_only(tmp_path / "bomb.png", 100_000, 100_000)
    with pytest.raises(InputError, match="too large to decode") as info:
        clf.predict(path)
    assert "decompression bomb" in info.value.hint


@pytest.mark.parametrize("threads", [MAX_THREADS + 1, 100_000, -1, 2.5, True])
def test_thread_count_is_capped(contract_onnx: Path, threads) -> None:
    with pytest.raises(InputError, match=f"intra_op_num_threads must be an integer from 0 to {MAX_THREADS}"):
        Classifier.load(contract_onnx, intra_op_num_threads=threads)

"""The opt-in fast JPEG path: a DCT-scaled decode (PIL draft) keeping the shorter side >= 2 S, then the exact resize."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from semobridge_runtime import Classifier
from semobridge_runtime.images import FastJpeg, draft_jpeg

from .test_backends import photos, pil_reference


@pytest.fixture(scope="module")
def jpeg(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 1800x2400 camera-like JPEG (1/4 of it, 450x600, is the smallest decode that keeps >= 448 = 2 x 224)."""
    path = tmp_path_factory.mktemp("jpeg") / "photo.jpg"
    small = Image.fromarray(photos(1, seed=4)[0]).resize((2400, 1800), Image.BICUBIC)
    texture = np.random.default_rng(4).normal(0, 6, (1800, 2400, 3))
    Image.fromarray(np.clip(np.asarray(small) + texture, 0, 255).astype(np.uint8)).save(path, "JPEG", quality=90)
    return path


@pytest.mark.parametrize("short_side, expect", [(100, (225, 300)), (224, (225, 300)), (448, (450, 600)), (450, (450, 600)),
                                                (451, (900, 1200)), (900, (900, 1200)), (901, (1800, 2400))])
def test_the_draft_is_the_smallest_decode_keeping_the_shorter_side(jpeg: Path, short_side: int, expect) -> None:
    with Image.open(jpeg) as img:
        draft_jpeg(img, short_side)
        img.load()
        assert (img.height, img.width) == expect


def test_other_formats_and_loaded_images_decode_in_full(jpeg: Path) -> None:
    with Image.open(jpeg) as img:
        png = io.BytesIO()
        img.save(png, "PNG")
    with Image.open(png) as img:
        draft_jpeg(img, 224)
        assert img.load() is not None and img.size == (2400, 1800)
    with Image.open(jpeg) as img:
        img.load()
        draft_jpeg(img, 224)  # too late: already decoded
        assert img.size == (2400, 1800)


def test_fast_jpeg_is_opt_in_and_close_to_the_full_decode(onnx_model: Path, jpeg: Path) -> None:
    full, fast = Classifier.load(onnx_model), Classifier.load(onnx_model, fast_jpeg=True)
    assert not isinstance(full.limits, FastJpeg) and fast.limits.draft_side == 2 * full.info.image_size
    assert fast.limits.max_side == full.limits.max_side
    a, b = full.predict(str(jpeg)), fast.predict(str(jpeg))
    with Image.open(jpeg) as img:
        whole = np.asarray(img.convert("RGB"))
    np.testing.assert_array_equal(a.scores, full.predict(whole).scores)  # the default decodes in full
    assert float((a.embeddings * b.embeddings).sum()) > 0.99 and not np.array_equal(a.scores, b.scores)
    # what the model sees: benchmarks.jpeg measured up to 2-3 grey levels apart, mean 0.3, on such photos
    S = full.info.image_size
    with Image.open(jpeg) as img:
        draft_jpeg(img, 2 * S)
        diff = np.abs(pil_reference(np.asarray(img.convert("RGB")), S) - pil_reference(whole, S))
    assert diff.max() <= 6 and diff.mean() < 1.0


def test_semobridge_run_takes_fast_jpeg(onnx_model: Path, jpeg: Path, capsys) -> None:
    import json

    from semobridge_runtime.cli import main

    results = []
    for flags in ([], ["--fast-jpeg"]):
        assert main([str(onnx_model), str(jpeg), "--json", *flags]) == 0
        results.append(json.loads(capsys.readouterr().out))
    full, fast = (r[0]["top_k"] for r in results)
    assert len(full) == len(fast) and full != fast  # the drafted decode: slightly other scores

"""In-graph preprocessing against open_clip's own PIL preprocessing."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import functional as TF

from semobridge_export.onnx_graph import save_model, to_onnx
from semobridge_export.preprocess import BAND, Preprocess, crop_start, resized_length
from semobridge_export.reference import session

S = 224


@pytest.mark.parametrize("h, w", [(13, 20), (224, 224), (225, 224), (300, 517), (517, 300), (1100, 1500), (999, 1001), (227, 2000)])
def test_size_rules_are_torchvision_s(h, w):
    new_h, new_w = TF._compute_resized_output_size((h, w), [S])
    short = min(h, w)
    assert (resized_length(h, short, S), resized_length(w, short, S)) == (new_h, new_w)
    for length in (new_h, new_w):
        assert crop_start(length, S) == int(round((length - S) / 2.0))


def test_crop_start_rounds_half_to_even_like_python():
    assert [crop_start(S + d, S) for d in range(8)] == [int(round(d / 2.0)) for d in range(8)]


@pytest.fixture(scope="module")
def preprocess_onnx(tiny_backbone, tmp_path_factory):
    """The preprocessing alone as an ONNX graph (same exporter path as the fused graph)."""
    b = tiny_backbone
    pre = Preprocess(b.image_size, b.mean, b.std).eval()
    example = torch.randint(0, 256, (2, S + 37, S + 91, 3), dtype=torch.uint8)
    dims = {"image": {0: torch.export.Dim("N"), 1: torch.export.Dim("H"), 2: torch.export.Dim("W")}}
    program = torch.export.export(pre, (example,), dynamic_shapes=dims, strict=False)
    model = to_onnx(program, ("pixels",))
    path = save_model(model, tmp_path_factory.mktemp("pre") / "preprocess.onnx")
    return pre, session(path)


def _grey_levels(pre: Preprocess, normalised: np.ndarray) -> np.ndarray:
    return pre.undo(torch.from_numpy(normalised)).numpy()


def test_graph_preprocessing_matches_open_clip_pil(preprocess_onnx, odd_photos, tiny_backbone):
    pre, sess = preprocess_onnx
    for name, photo in odd_photos.items():
        library = tiny_backbone.preprocess(Image.fromarray(photo))[None].numpy()
        graph = sess.run(None, {"image": photo[None]})[0]
        assert graph.shape == (1, 3, S, S), name
        diff = np.abs(_grey_levels(pre, graph) - _grey_levels(pre, library))
        assert diff.max() <= 1.0 + 1e-3, f"{name}: {diff.max():.3f} grey levels"
        assert (diff > 0.5).mean() < 1e-3, f"{name}: {(diff > 0.5).mean():.2%} of pixels differ"


def test_eager_preprocessing_matches_the_graph(preprocess_onnx, odd_photos):
    pre, sess = preprocess_onnx
    for name, photo in odd_photos.items():
        with torch.no_grad():
            eager = pre(torch.from_numpy(photo.copy())[None]).numpy()
        graph = sess.run(None, {"image": photo[None]})[0]
        diff = np.abs(_grey_levels(pre, graph) - _grey_levels(pre, eager))
        assert diff.max() <= 1.0 + 1e-3 and (diff > 0.5).mean() < 1e-3, name


def test_one_session_takes_any_batch_and_size(preprocess_onnx):
    _, sess = preprocess_onnx
    rng = np.random.default_rng(0)
    for n, h, w in [(1, 50, 70), (3, 224, 224), (17, 97, 33), (2, 640, 480)]:
        out = sess.run(None, {"image": rng.integers(0, 256, (n, h, w, 3), dtype=np.uint8)})[0]
        assert out.shape == (n, 3, S, S)


def _pil_coefficients(in_length: int, out_length: int) -> list[tuple[int, np.ndarray]]:
    """PIL's `precompute_coeffs` for the bicubic filter, in double precision: (xmin, normalised weights) per output."""
    scale = in_length / out_length
    stretch = max(scale, 1.0)
    support = 2.0 * stretch
    out = []
    for j in range(out_length):
        centre = (j + 0.5) * scale
        xmin, xmax = max(int(centre - support + 0.5), 0), min(int(centre + support + 0.5), in_length)
        t = np.abs((np.arange(xmin, xmax) + 0.5 - centre) / stretch)
        k = np.where(t < 1, (1.5 * t - 2.5) * t * t + 1, np.where(t < 2, ((-0.5 * t + 2.5) * t - 4) * t + 2, 0.0))
        out.append((xmin, k / k.sum()))
    return out


@pytest.mark.parametrize("in_length, short_other", [(13, 20), (224, 224), (517, 300), (4032, 3024), (3024, 4032),
                                                    (16, 16384), (16384, 16), (1, 7), (225, 224), (2000, 227)])
def test_band_windows_hold_pils_taps_and_weights(in_length, short_other):
    """Every block's window holds PIL's taps of its outputs, and the weights over it are PIL's coefficients."""
    h, w = in_length, short_other  # the band of the first (vertical) pass of an h x w image
    band, _ = Preprocess(S, (0.5,) * 3, (0.5,) * 3).bands(h, w)
    out, first, length = int(band.out_length), int(band.first), band.length
    starts = band.starts()
    weights = band.weights(starts).numpy()
    reference = _pil_coefficients(h, out)
    assert length <= h
    for block, start in enumerate(starts.tolist()):
        assert 0 <= start <= h - length
        for k in range(BAND):
            j = first + min(block * BAND + k, S - 1)
            xmin, coefficients = reference[j]
            assert start <= xmin and xmin + len(coefficients) <= start + length, (block, k)
            dense = np.zeros(length)
            dense[xmin - start:xmin - start + len(coefficients)] = coefficients
            np.testing.assert_allclose(weights[block, k], dense, atol=2e-6)


def test_band_work_follows_the_filter_not_the_input_side():
    """A 16384-pixel side costs windows of a few pixels (upscaled) or BAND x scale + taps (downscaled), not 16384."""
    pre = Preprocess(S, (0.5,) * 3, (0.5,) * 3)
    down, across = pre.bands(16384, 16)  # upscaled 14x across, the crop keeps 224 of 229376 rows
    assert across.length <= 8 and down.length <= 8
    assert int(down.starts()[-1] - down.starts()[0]) + down.length <= 32  # rows the horizontal pass reads
    down, across = pre.bands(3024, 4032)
    scale = 4032 / across.out_length.item()
    assert across.length <= BAND * scale + 4 * scale + 2 and down.length <= BAND * 13.5 + 4 * 13.5 + 2


def _pil_reference(photo: np.ndarray) -> np.ndarray:
    """open_clip's transform as PIL's two passes, horizontal then vertical, and the centre crop: grey levels [3, S, S].

    Pillow up to 12 always resizes horizontally first; Pillow 13 goes vertical first when the height loses more than
    twice the pixels the width does (python-pillow/Pillow#9549), which moves roundings by up to 2 grey levels on
    such tall images. The graph follows the two passes in this order."""
    h, w = photo.shape[:2]
    new_h, new_w = resized_length(h, min(h, w), S), resized_length(w, min(h, w), S)
    resized = Image.fromarray(photo).resize((new_w, h), Image.BICUBIC).resize((new_w, new_h), Image.BICUBIC)
    top, left = crop_start(new_h, S), crop_start(new_w, S)
    return np.asarray(resized)[top:top + S, left:left + S].astype(np.float32).transpose(2, 0, 1)


@pytest.mark.parametrize("h, w", [(3024, 4032), (4032, 3024), (16, 16384), (16384, 16), (7, 3000), (2500, 900)])
def test_graph_matches_pil_on_large_and_extreme_shapes(preprocess_onnx, grace_hopper, h, w):
    pre, sess = preprocess_onnx
    photo = np.asarray(grace_hopper.resize((w, h), Image.LANCZOS))
    graph = _grey_levels(pre, sess.run(None, {"image": photo[None]})[0])[0]
    diff = np.abs(graph - _pil_reference(photo))
    assert diff.max() <= 1.0 + 1e-3, f"{h}x{w}: {diff.max():.3f} grey levels"
    assert (diff > 0.5).mean() < 1e-3, f"{h}x{w}: {(diff > 0.5).mean():.2%} of pixels differ"

"""In-graph preprocessing against open_clip's own PIL preprocessing."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import functional as TF

from semobridge_export.onnx_graph import save_model, to_onnx
from semobridge_export.preprocess import Preprocess, crop_start, resized_length
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

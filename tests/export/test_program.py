"""The torch.export (.pt2) format."""
from __future__ import annotations

import numpy as np
import torch

from semobridge_export import load_program, read_metadata, reference_scores
from tests.helpers import random_photos


def test_pt2_loads_and_matches_the_onnx_graph(exported_onnx):
    module, meta = load_program(exported_onnx / "model.pt2")
    assert meta == read_metadata(exported_onnx / "model.onnx")
    for n, size in [(1, (224, 224)), (3, (120, 300)), (17, (64, 48))]:
        images = random_photos(n, seed=n, size=size)
        with torch.no_grad():
            # the fitted classes, baked in
            scores, label, embedding, features, bridged = module(torch.from_numpy(images))
        ref = reference_scores(exported_onnx / "model.onnx", images)
        assert np.abs(scores.numpy() - ref["scores"]).max() <= 1e-4
        assert np.array_equal(label.numpy(), ref["label"])
        assert np.abs(embedding.numpy() - ref["embedding"]).max() <= 1e-4
        assert np.abs(features.numpy() - ref["features"]).max() <= 1e-4
        assert np.abs(bridged.numpy() - ref["bridged_features"]).max() <= 1e-4

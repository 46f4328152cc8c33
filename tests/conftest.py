"""Shared fixtures: the tiny random-weight open_clip model, a head fitted on it, an image folder, its export.

Test time is a budget (the suite must stay under 8 minutes on a 2-core machine, `python -m pytest -q -n 2`):
fitting and exporting even the tiny model costs tens of CPU seconds, so a new test reuses these session
fixtures instead of exporting its own model. `exported_onnx` holds every common artifact (fp32, fp16, int8,
text tower, pt2); copy a file or the folder to a tmp_path before changing it (never change the fixture's
files). A test that really needs another variant builds it ONCE, in a session fixture made with `built_once`
(tests/sharing.py: shared by the pytest-xdist workers), not in the test body.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
from PIL import Image

from semobridge.backbones import load_backbone
from semobridge.blend import BlendParams
from semobridge.features import FeatureSet
from semobridge.fit import fit_features
from semobridge.model import ModelInfo
from tests.helpers import random_photos, write_image_folder
from tests.sharing import built_once

TINY = "semobridge-tiny"


@pytest.fixture(scope="session")
def tiny_backbone():
    """The ViT test model with seeded random weights, on the CPU."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_backbone(TINY, "none", device="cpu", seed=0)


@pytest.fixture(scope="session")
def tiny_head(tiny_backbone):
    """A training-free SeMoBridge head for 5 classes, fitted on the tiny backbone's embeddings."""
    b = tiny_backbone
    names = ["red fox", "blue whale", "green tree", "yellow cab", "white swan"]
    prompts = [t.format(n) for n in names for t in ("a photo of a {}.", "art of the {}.")]
    eos = b.encode_text_eos(prompts)
    pixels = torch.stack([b.preprocess(Image.fromarray(x)) for x in random_photos(15, seed=1)])
    feats = FeatureSet(
        text_projection=b.text_projection,
        text_eos=eos,
        text_class=torch.arange(5).repeat_interleave(2),
        shot_image=b.encode_image(pixels),
        shot_label=torch.arange(5).repeat_interleave(3),
        logit_scale=b.logit_scale,
        class_names=names,
    )
    info = ModelInfo(
        class_names=names, backbone=b.identity(), image_size=b.image_size, mean=list(b.mean), std=list(b.std),
        params=BlendParams().to_dict(), shots=3, seed=0,
    )
    return fit_features(feats, info, params=BlendParams(smoothness=0.5, alpha=3.0, beta=2.0, gamma=4.0))


@pytest.fixture(scope="session")
def image_folder(tmp_path_factory) -> Path:
    """train (8), val (4) and test (5) images for 3 classes."""
    return write_image_folder(tmp_path_factory.mktemp("images"), {"train": 8, "val": 4, "test": 5})


@pytest.fixture(scope="session")
def exported_onnx(tiny_head, tiny_backbone, tmp_path_factory) -> Path:
    """Folder with the tiny model exported as model.onnx (+ model.json), model.pt2,
    model_fp16.onnx and model_int8.onnx (uint8 input, dynamic N, H, W), what class enrolment
    needs: text.onnx, text_int8.onnx, the vocabulary and head.safetensors, and a Triton repository triton/."""
    from semobridge_export import export

    return built_once(tmp_path_factory, "exported_tiny", lambda out: export(
        tiny_head, tiny_backbone, out, formats=("onnx", "text", "pt2", "triton"), half=True, int8_cpu=True, log=lambda _: None))

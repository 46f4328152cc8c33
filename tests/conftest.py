"""Shared fixtures: the tiny random-weight open_clip model and a head fitted on it."""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from semobridge.backbones import load_backbone
from semobridge.blend import BlendParams
from semobridge.features import FeatureSet
from semobridge.fit import fit_features
from semobridge.model import ModelInfo

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
TINY = "semobridge-tiny"


@pytest.fixture(scope="session")
def tiny_backbone():
    """The ViT test model with seeded random weights, on the CPU."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_backbone(TINY, "none", device="cpu", seed=0)


def random_photos(n: int, seed: int, size: tuple[int, int] = (96, 128)) -> np.ndarray:
    """Smooth random RGB images uint8 [n, H, W, 3] (low-frequency noise, photo-like statistics)."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(n, 3, 6, 8, generator=g)
    img = torch.nn.functional.interpolate(low, size=size, mode="bicubic", align_corners=False)
    img = img + 0.05 * torch.randn(n, 3, *size, generator=g)
    return (img.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


@pytest.fixture(scope="session")
def tiny_head(tiny_backbone):
    """A training-free SeMoBridge head for 5 classes, fitted on the tiny backbone's embeddings."""
    b = tiny_backbone
    names = ["red fox", "blue whale", "green tree", "yellow cab", "white swan"]
    prompts = [t.format(n) for n in names for t in ("a photo of a {}.", "art of the {}.")]
    eos = b.encode_text_eos(prompts)
    pixels = torch.stack([b.preprocess(_pil(x)) for x in random_photos(15, seed=1)])
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


def _pil(array: np.ndarray):
    from PIL import Image

    return Image.fromarray(array)


def write_image_folder(root: Path, counts: dict[str, int], classes=("red fox", "blue whale", "green tree"), seed: int = 0) -> Path:
    """A train/val/test folder of small generated images; some grayscale, some RGBA, odd sizes."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for s, (split, n) in enumerate(counts.items()):
        for c, name in enumerate(classes):
            folder = root / split / name.replace(" ", "_")
            folder.mkdir(parents=True, exist_ok=True)
            for i, img in enumerate(random_photos(n, seed=seed * 100 + 10 * s + c, size=(40 + 8 * c, 56))):
                img = (img * 0.5 + 120 * np.eye(3)[c]).astype(np.uint8)  # a class colour cast
                pil = Image.fromarray(img)
                pil = pil.convert(("RGB", "L", "RGBA")[int(rng.integers(3))])
                pil.save(folder / f"{i:03d}.png")
    return root


@pytest.fixture(scope="session")
def image_folder(tmp_path_factory) -> Path:
    """train (8), val (4) and test (5) images for 3 classes."""
    return write_image_folder(tmp_path_factory.mktemp("images"), {"train": 8, "val": 4, "test": 5})


def synthetic_features(classes: int = 8, shots: int = 4, val: int = 4, seed: int = 0, d_t: int = 48, d: int = 64) -> FeatureSet:
    """CLIP-like embeddings with a modality gap: images = class signal + shared offset + noise."""
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(d_t, d, generator=g) * 0.15
    text_dirs = torch.randn(classes, d_t, generator=g)
    prompts_per_class = 3
    eos = 5 * (text_dirs.repeat_interleave(prompts_per_class, 0) + 0.3 * torch.randn(classes * prompts_per_class, d_t, generator=g))
    gap = 2 * torch.randn(d, generator=g)

    def images(k):
        y = torch.arange(classes).repeat_interleave(k)
        return text_dirs[y] @ W + gap + 3.0 * torch.randn(len(y), d, generator=g), y

    shot_image, shot_label = images(shots)
    val_image, val_label = images(val) if val else (None, None)
    return FeatureSet(
        W, eos, torch.arange(classes).repeat_interleave(prompts_per_class), shot_image, shot_label,
        val_image, val_label, 100.0, [f"class {i}" for i in range(classes)],
    )


def features_info(features: FeatureSet) -> ModelInfo:
    return ModelInfo(
        class_names=features.class_names, backbone={"name": "synthetic", "pretrained": "none", "weights_hash": "0"},
        image_size=224, mean=[0.5] * 3, std=[0.5] * 3, params=BlendParams().to_dict(),
    )

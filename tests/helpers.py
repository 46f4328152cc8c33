"""Test data: generated photos, image folders and CLIP-like features with a modality gap."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from benchmarks.common import info_for
from benchmarks.common import synthetic_features as benchmark_features  # one generator for tests and figures
from semobridge.features import FeatureSet
from semobridge.model import ModelInfo


def random_photos(n: int, seed: int, size: tuple[int, int] = (96, 128)) -> np.ndarray:
    """Smooth random RGB images uint8 [n, H, W, 3] (low-frequency noise, photo-like statistics)."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(n, 3, 6, 8, generator=g)
    img = torch.nn.functional.interpolate(low, size=size, mode="bicubic", align_corners=False)
    img = img + 0.05 * torch.randn(n, 3, *size, generator=g)
    return (img.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


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


def synthetic_features(classes: int = 8, shots: int = 4, val: int = 4, seed: int = 0, d_t: int = 48, d: int = 64) -> FeatureSet:
    """CLIP-like embeddings with a modality gap, small enough for tests (the benchmarks' generator)."""
    return benchmark_features(classes, shots, val, d_t, d, seed=seed)


def features_info(features: FeatureSet) -> ModelInfo:
    return info_for(features, {"name": "synthetic", "pretrained": "none", "weights_hash": "0"})

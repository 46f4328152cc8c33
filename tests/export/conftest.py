"""Export fixtures: the tiny model exported once per session, and real photos of odd sizes."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

GRACE = "grace_hopper.jpg"  # shipped with matplotlib (mpl-data/sample_data)


@pytest.fixture(scope="session")
def grace_hopper():
    """A real photo (PIL RGB, 512x600)."""
    matplotlib = pytest.importorskip("matplotlib", reason="matplotlib ships the sample photo")
    from PIL import Image

    path = os.path.join(matplotlib.get_data_path(), "sample_data", GRACE)
    with Image.open(path) as im:
        return im.convert("RGB")


@pytest.fixture(scope="session")
def odd_photos(grace_hopper) -> dict[str, np.ndarray]:
    """The photo cropped and resized to odd sizes: portrait, landscape, tiny (upscaled), large, square."""
    from PIL import Image

    sizes = {  # (width, height)
        "portrait": (300, 517),
        "landscape": (517, 300),
        "tiny": (20, 13),
        "tiny portrait": (13, 20),
        "large": (1500, 1100),
        "exactly S": (224, 224),
        "one over S": (225, 224),
    }
    crop = grace_hopper.crop((30, 0, 480, 560))
    return {name: np.asarray(crop.resize(wh, Image.LANCZOS)) for name, wh in sizes.items()}

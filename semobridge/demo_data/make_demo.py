"""Regenerate the bundled Fashion-MNIST demo sample from the original IDX files.

Usage: python make_demo.py IDX_DIR [OUT_DIR]

IDX_DIR holds train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz,
t10k-images-idx3-ubyte.gz and t10k-labels-idx1-ubyte.gz. OUT_DIR defaults to
the fashion-mnist/ folder beside this script; its split folders are replaced.
"""
from __future__ import annotations

import gzip
import shutil
import sys
from pathlib import Path

import numpy as np
from PIL import Image

CLASSES = ("t-shirt", "trouser", "pullover", "dress", "coat",
           "sandal", "shirt", "sneaker", "bag", "ankle_boot")
SEED = 0
TRAIN_PER_CLASS, VAL_PER_CLASS, TEST_PER_CLASS = 16, 4, 10


def read_idx(path: Path) -> np.ndarray:
    """Decode a gzipped IDX file of unsigned bytes into an array of its declared shape."""
    data = gzip.decompress(path.read_bytes())
    if data[:2] != b"\x00\x00" or data[2] != 0x08:
        raise ValueError(f"{path}: not an unsigned-byte IDX file")
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def pick(labels: np.ndarray, per_class: int, rng: np.random.Generator) -> list[np.ndarray]:
    """For each class, `per_class` distinct indices drawn at random, in ascending order."""
    return [np.sort(rng.choice(np.flatnonzero(labels == c), per_class, replace=False))
            for c in range(len(CLASSES))]


def write_split(out: Path, images: np.ndarray, picks: list[np.ndarray]) -> None:
    """Save the picked images as out/<class>/<original index>.png (8-bit grayscale)."""
    for name, idx in zip(CLASSES, picks):
        folder = out / name
        folder.mkdir(parents=True)
        for i in idx:
            Image.fromarray(images[i]).save(folder / f"{i:05d}.png", optimize=True)


def main(idx_dir: Path, out_dir: Path) -> None:
    rng = np.random.default_rng(SEED)
    train_x = read_idx(idx_dir / "train-images-idx3-ubyte.gz")
    train_y = read_idx(idx_dir / "train-labels-idx1-ubyte.gz")
    test_x = read_idx(idx_dir / "t10k-images-idx3-ubyte.gz")
    test_y = read_idx(idx_dir / "t10k-labels-idx1-ubyte.gz")
    # train and val are disjoint draws from the original training set.
    train_val = pick(train_y, TRAIN_PER_CLASS + VAL_PER_CLASS, rng)
    shuffled = [rng.permutation(idx) for idx in train_val]
    splits = {
        "train": (train_x, [np.sort(s[:TRAIN_PER_CLASS]) for s in shuffled]),
        "val": (train_x, [np.sort(s[TRAIN_PER_CLASS:]) for s in shuffled]),
        "test": (test_x, pick(test_y, TEST_PER_CLASS, rng)),
    }
    for split, (images, picks) in splits.items():
        shutil.rmtree(out_dir / split, ignore_errors=True)
        write_split(out_dir / split, images, picks)


if __name__ == "__main__":
    if len(sys.argv) not in (2, 3):
        sys.exit(__doc__)
    default_out = Path(__file__).resolve().parent / "fashion-mnist"
    main(Path(sys.argv[1]), Path(sys.argv[2]) if len(sys.argv) == 3 else default_out)

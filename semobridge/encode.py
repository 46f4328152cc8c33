"""Encode images (with stored augmentations) and prompts, cached on disk."""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torchvision import transforms as T
from tqdm.auto import tqdm

from .backbones import Backbone
from .data import DataError, Item, load_rgb
from .datasets import FLIP, Augment
from .files import IMAGE_BYTES, atomic_output, file_sha256
from .validate import output_dir

CACHE_ENV = "SEMOBRIDGE_CACHE"
BATCH_SIZE = 64


class EmbeddingCache:
    """Embeddings on disk keyed by backbone, weights hash, preprocessing and the inputs' content.

    Off unless a folder is given (`--cache-dir`) or $SEMOBRIDGE_CACHE names one: nothing is
    written outside the paths the user chose. The folder is checked before any work.
    """

    def __init__(self, folder: str | Path | None = None):
        folder = folder if folder is not None else os.environ.get(CACHE_ENV) or None
        self.folder = output_dir(folder, "embedding cache folder") if folder is not None else None

    @property
    def enabled(self) -> bool:
        return self.folder is not None

    def key(self, backbone: Backbone, kind: str, inputs: list) -> str:
        blob = json.dumps(
            {"backbone": backbone.identity(), "preprocess": repr(backbone.preprocess), "kind": kind, "inputs": inputs},
            sort_keys=True,
        )
        return hashlib.sha256(blob.encode()).hexdigest()[:32]

    def get(self, key: str) -> torch.Tensor | None:
        if not self.enabled:
            return None
        path = self.folder / f"{key}.npy"
        if not path.is_file():
            return None
        try:
            return torch.from_numpy(np.load(path, allow_pickle=False))
        except (OSError, ValueError):
            return None  # a damaged entry is recomputed and rewritten

    def put(self, key: str, value: torch.Tensor) -> None:
        if not self.enabled:
            return
        with atomic_output(self.folder / f"{key}.npy", "embedding cache entry") as tmp:
            with open(tmp, "wb") as f:
                np.save(f, value.cpu().numpy())


def augmented_view(image, aug: Augment, copy: int, seed: int, image_size: int):
    """Copy number `copy` (0 = the original) of a shot, reproducible from (seed, path, copy)."""
    if copy == 0:
        return image
    if aug.kind == FLIP:
        return T.functional.hflip(image)
    ratio = (1.0, 1.0) if aug.square else (3 / 4, 4 / 3)
    ops = [
        T.RandomResizedCrop(image_size, scale=(aug.min_scale, 1.0), ratio=ratio, interpolation=T.InterpolationMode.BICUBIC),
        T.RandomHorizontalFlip(),
    ]
    if aug.jitter:
        ops.append(T.ColorJitter(0.4, 0.4, 0.4, 0.1))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed * 1_000_003 + copy)
        return T.Compose(ops)(image)


def encode_items(
    backbone: Backbone,
    items: Sequence[Item],
    cache: EmbeddingCache,
    augment: Augment = Augment(0),
    seed: int = 0,
    desc: str = "encoding images",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Embeddings [N·(A+1), d] and labels of the items and their stored augmented copies."""
    views = [(path, label, copy) for path, label in items for copy in range(augment.copies + 1)]
    aug_id = [augment.describe(), seed] if augment.copies else []
    # an image's key in the cache: its content (any edit, a new key)
    hashes = {p: file_sha256(p, "image", IMAGE_BYTES, DataError) for p, _ in items} if cache.enabled else {}
    key = cache.key(backbone, "image", [[hashes.get(p), c, *aug_id] for p, _, c in views])
    labels = torch.tensor([label for _, label, _ in views], dtype=torch.long)
    cached = cache.get(key)
    if cached is not None:
        return cached, labels
    out = []
    for start in tqdm(range(0, len(views), BATCH_SIZE), desc=desc, unit="batch"):
        pixels = []
        for path, _, copy in views[start : start + BATCH_SIZE]:
            view_seed = int(hashlib.sha256(f"{seed}:{path}".encode()).hexdigest()[:8], 16)
            image = augmented_view(load_rgb(path), augment, copy, view_seed, backbone.image_size)
            pixels.append(backbone.preprocess(image))
        out.append(backbone.encode_image(torch.stack(pixels)).cpu())
    embeddings = torch.cat(out)
    if not torch.isfinite(embeddings).all():
        raise ValueError("the backbone produced NaN/inf embeddings; check the checkpoint and the images")
    cache.put(key, embeddings)
    return embeddings, labels


def encode_prompts(backbone: Backbone, texts: Sequence[str], cache: EmbeddingCache) -> torch.Tensor:
    """Pooled EOS tokens [M, d_t] of the prompts."""
    key = cache.key(backbone, "text-eos", list(texts))
    cached = cache.get(key)
    if cached is not None:
        return cached
    out = [
        backbone.encode_text_eos(texts[i : i + 256]).cpu()
        for i in tqdm(range(0, len(texts), 256), desc="encoding prompts", unit="batch")
    ]
    eos = torch.cat(out)
    cache.put(key, eos)
    return eos

"""Encoding: stored augmented copies are reproducible, the cache returns what was encoded."""
import torch
from PIL import ImageOps

from semobridge.data import load_dataset, load_rgb
from semobridge.datasets import Augment
from semobridge.encode import EmbeddingCache, encode_items


def test_flip_copy_and_rrc_copies_are_reproducible(tiny_backbone, image_folder, tmp_path):
    items = load_dataset(image_folder).splits["train"][:2]
    flipped, labels = encode_items(tiny_backbone, items, EmbeddingCache(), Augment(1))
    assert flipped.shape == (4, 64) and labels.tolist() == [items[0][1]] * 2 + [items[1][1]] * 2
    mirror = tiny_backbone.preprocess(ImageOps.mirror(load_rgb(items[0][0])))
    torch.testing.assert_close(flipped[1], tiny_backbone.encode_image(mirror[None])[0])
    rrc = Augment(3, "rrc", 0.5, True)
    a, _ = encode_items(tiny_backbone, items, EmbeddingCache(), rrc, seed=1)
    b, _ = encode_items(tiny_backbone, items, EmbeddingCache(), rrc, seed=1)
    c, _ = encode_items(tiny_backbone, items, EmbeddingCache(), rrc, seed=2)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not torch.allclose(a[1], c[1]) and torch.equal(a[0], c[0])  # copy 0 is the original


def test_cache_round_trip(tiny_backbone, image_folder, tmp_path):
    items = load_dataset(image_folder).splits["val"]
    cache = EmbeddingCache(tmp_path)
    first, _ = encode_items(tiny_backbone, items, cache)
    assert len(list(tmp_path.glob("*.npy"))) == 1
    again, _ = encode_items(tiny_backbone, items, cache)
    torch.testing.assert_close(first, again, rtol=0, atol=0)

"""`semobridge eval --ood-of imagenet`: class maps of ImageNet-V2, -Sketch, -A, -R, on small fake folders."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from benchmarks.common import benchmark_head
from semobridge.cli import main
from semobridge.data import DataError, load_dataset
from semobridge.encode import EmbeddingCache, encode_items
from semobridge.ood import SUBSETS, describe_classes, imagenet_indices, restrict, wnids
from semobridge.pipeline import evaluate
from tests import reference as R
from tests.helpers import write_image_folder

A_WNIDS = ("n01498041", "n01531178", "n01534433")  # the first of ImageNet-A's 200 (1k indices 6, 11, 13)


@pytest.fixture(scope="module")
def imagenet_head(tiny_backbone):
    """A training-free head on the tiny backbone with ImageNet's 1000 classes, named by WordNet id."""
    head = benchmark_head(tiny_backbone, classes=1000, shots=1, seed=3)
    head.info.class_names = list(wnids())
    return head


def test_the_packaged_lists():
    standard = wnids()
    assert len(standard) == 1000 and list(standard) == sorted(standard) and standard[0] == "n01440764"
    for name, file in SUBSETS.items():
        subset = wnids(file)
        assert len(subset) == 200 == len(set(subset)) and set(subset) <= set(standard), name
    a = [standard.index(w) for w in wnids("imagenet_a.txt")]
    r = [standard.index(w) for w in wnids("imagenet_r.txt")]
    assert a[:8] == [6, 11, 13, 15, 17, 22, 23, 27] and a[-3:] == [986, 987, 988]  # natural-adv-examples' thousand_k_to_200
    assert r[:8] == [1, 2, 4, 6, 8, 9, 11, 13] and r[-3:] == [981, 983, 988]  # imagenet-r's index list


def test_class_maps():
    names = list(wnids())
    assert imagenet_indices([str(i) for i in (0, 10, 999)], names) == [0, 10, 999]  # ImageNet-V2 folders
    assert imagenet_indices(list(A_WNIDS), names) == [6, 11, 13]
    assert imagenet_indices(list(wnids()), names) == list(range(1000))  # ImageNet-Sketch
    named = [f"class {i}" for i in range(1000)]
    assert imagenet_indices(["Class 7", "n01440764"], named) == [7, 0]
    assert describe_classes(list(range(1000))) == "all 1000 ImageNet classes"
    assert describe_classes([standard_index(w) for w in wnids("imagenet_r.txt")]) == "ImageNet-R's 200 classes"
    assert describe_classes([6, 11, 13]).startswith("3 of ImageNet-A's 200 classes (an incomplete copy")
    with pytest.raises(DataError, match="not ImageNet classes .'cat'"):
        imagenet_indices(["cat", "n01440764"], names)
    with pytest.raises(DataError, match="the same ImageNet class"):
        imagenet_indices(["0", "n01440764"], names)
    with pytest.raises(DataError, match="ImageNet's 1000 classes; this one has 3"):
        imagenet_indices(["0"], ["a", "b", "c"])
    with pytest.raises(DataError, match="standard .sorted. order"):
        imagenet_indices(["0"], list(reversed(names)))


def standard_index(wnid: str) -> int:
    return wnids().index(wnid)


def test_restricted_model_against_the_reference(imagenet_head):
    idx = [13, 6, 400, 11]
    sub = restrict(imagenet_head, idx)
    assert sub.num_classes == 4 and sub.info.class_names == [imagenet_head.info.class_names[i] for i in idx]
    q = torch.randn(9, imagenet_head.text_classifier.shape[1], generator=torch.Generator().manual_seed(1))
    T, P, I = (t[idx].double().numpy() for t in (imagenet_head.text_classifier, imagenet_head.bridged_prototypes,
                                               imagenet_head.image_prototypes))
    b = imagenet_head.bridge
    D = R.class_kl(I, T)  # over the kept classes, as the published code rebuilds it
    want = R.logits(q.double().numpy(), T, P, I, b.pinv.double().numpy(), b.text_projection.double().numpy(),
                    float(b.eos_length), D, *imagenet_head.info.params.values())
    with torch.no_grad():
        np.testing.assert_allclose(sub(q).double().numpy(), want, rtol=2e-4, atol=1e-7)
    assert not np.allclose(D, imagenet_head.class_kl[idx].double().numpy())  # the class weights really change
    assert restrict(imagenet_head, list(range(1000))) is imagenet_head


@pytest.mark.parametrize("layout", ["imagenet-a", "imagenetv2"])
def test_eval_ood_on_fake_folders(imagenet_head, tiny_backbone, tmp_path, layout):
    classes = A_WNIDS if layout == "imagenet-a" else ("6", "11", "13")
    root = write_image_folder(tmp_path, {"all": 3}, classes=classes) / "all"  # plain class folders
    (root / "README.txt").write_text("ImageNet-A")  # a stray file, as in the real archive
    model = tmp_path / "imagenet.safetensors"
    imagenet_head.save(model)
    result = evaluate(imagenet_head, tiny_backbone, root, cache=EmbeddingCache(), ood_of="imagenet")
    assert result["images"] == 9 and result["split"] == "folder"
    assert result["classes"].startswith("3 of ImageNet-A's 200 classes")
    images, labels = encode_items(tiny_backbone, load_dataset(root).split("train"), EmbeddingCache())
    with torch.no_grad():
        want = float((restrict(imagenet_head, [6, 11, 13])(images).argmax(-1) == labels).float().mean())
    assert result["accuracy"] == want
    out = CliRunner().invoke(main, ["eval", str(model), "--data", str(root), "--ood-of", "imagenet", "--cache-dir",
                                    str(tmp_path / "cache")])
    assert out.exit_code == 0, out.output
    assert f"{100 * want:8.2f}" in out.output and "9 folder images, 3 of ImageNet-A's 200 classes" in out.output


def test_eval_without_ood_of_refuses_another_class_count(imagenet_head, tiny_backbone, tmp_path):
    root = write_image_folder(tmp_path, {"train": 1, "test": 1}, classes=A_WNIDS)
    with pytest.raises(DataError, match="has 3 classes, the model 1000") as refused:
        evaluate(imagenet_head, tiny_backbone, root, cache=EmbeddingCache())
    assert "--ood-of imagenet" in refused.value.hint

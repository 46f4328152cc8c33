"""Datasets, few-shot splits, prompts and the paper's per-dataset settings."""
import json
from pathlib import Path

import pytest
from PIL import Image

from tests.helpers import write_image_folder
from semobridge.data import DataError, few_shot_split, load_dataset, load_rgb
from semobridge.errors import InputError
from semobridge.datasets import DATASETS, find_dataset
from semobridge.prompts import (
    ENSEMBLE_TEMPLATES,
    PACKAGED_CUPL,
    build_prompts,
    cupl_file,
    load_descriptions,
    missing_cupl_message,
    templates_for,
)


def test_folder_splits_and_class_names(image_folder):
    ds = load_dataset(image_folder)
    assert ds.class_names == ["blue whale", "green tree", "red fox"]
    assert {k: len(v) for k, v in ds.splits.items()} == {"train": 24, "val": 12, "test": 15}


def test_few_shot_split_is_coop_like_and_deterministic(image_folder):
    ds = load_dataset(image_folder)
    a, b, c = few_shot_split(ds, 4, seed=1), few_shot_split(ds, 4, seed=1), few_shot_split(ds, 4, seed=2)
    assert a == b and a.shots != c.shots
    assert a.val_source == "val split"
    assert sorted(y for _, y in a.shots) == [0] * 4 + [1] * 4 + [2] * 4
    assert len(a.val) == 12 and all("/val/" in p for p, _ in a.val)  # K' = min(K, 4)
    assert len(few_shot_split(ds, 2, seed=1).val) == 6


def test_validation_held_out_from_train_without_val(tmp_path):
    root = write_image_folder(tmp_path, {"train": 7})
    split = few_shot_split(load_dataset(root / "train"), 3, seed=1)
    assert split.val_source == "held out from train"
    assert not set(split.shots) & set(split.val) and len(split.val) == 9
    with pytest.raises(DataError, match="fewer than the 9 needed"):
        few_shot_split(load_dataset(root / "train"), 5, seed=1)


def test_class_without_images_and_too_few(tmp_path):
    root = write_image_folder(tmp_path, {"train": 3})
    (root / "train" / "empty_class").mkdir()
    with pytest.raises(DataError, match="empty_class has no images"):
        load_dataset(root / "train")
    (root / "train" / "empty_class").rmdir()
    with pytest.raises(DataError, match="has 3 training image"):
        few_shot_split(load_dataset(root / "train"), 4, seed=1)


def test_duplicate_class_names(tmp_path):
    root = write_image_folder(tmp_path, {"train": 2}, classes=("red fox", "blue whale"))
    (root / "train" / "red fox").mkdir()
    (root / "train" / "red_fox" / "000.png").rename(root / "train" / "red fox" / "000.png")
    with pytest.raises(InputError, match="duplicate class name 'red fox'"):
        load_dataset(root / "train")


def test_grayscale_rgba_converted_and_unreadable_named(tmp_path):
    Image.new("L", (5, 4), 7).save(tmp_path / "g.png")
    Image.new("RGBA", (5, 4), (1, 2, 3, 0)).save(tmp_path / "a.png")
    assert load_rgb(tmp_path / "g.png").getpixel((0, 0)) == (7, 7, 7)
    assert load_rgb(tmp_path / "a.png").getpixel((0, 0)) == (1, 2, 3)
    (tmp_path / "bad.jpg").write_bytes(b"not an image")
    with pytest.raises(DataError, match="bad.jpg"):
        load_rgb(tmp_path / "bad.jpg")


def test_coop_split_file(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    entries = []
    for i, (name, y) in enumerate([("abyssinian", 0), ("basset_hound", 1)] * 3):
        Image.new("RGB", (8, 8), (i, 0, 0)).save(images / f"{name}_{i}.jpg")
        entries.append([f"{name}_{i}.jpg", y, name])
    (tmp_path / "split_zhou_OxfordPets.json").write_text(json.dumps({"train": entries[:4], "val": entries[4:], "test": entries[4:]}))
    ds = load_dataset(tmp_path)
    assert ds.class_names == ["abyssinian", "basset hound"]
    assert len(ds.splits["train"]) == 4 and Path(ds.splits["val"][0][0]).is_file()


def test_csv(tmp_path):
    for i in range(4):
        Image.new("RGB", (8, 8)).save(tmp_path / f"{i}.png")
    (tmp_path / "list.csv").write_text("path,label\n0.png,cat\n1.png,dog\n2.png,cat\n3.png,dog\n")
    ds = load_dataset(tmp_path / "list.csv")
    assert ds.class_names == ["cat", "dog"] and [y for _, y in ds.splits["train"]] == [0, 1, 0, 1]


def test_paper_datasets_and_prompts():
    assert len(DATASETS) == 11
    pets = find_dataset("OxfordPets")
    assert templates_for(pets) == [*ENSEMBLE_TEMPLATES, "a photo of a {}, a type of pet."]
    assert templates_for(find_dataset("dtd")) == ["{} texture."]
    assert templates_for(find_dataset("imagenet")) == list(ENSEMBLE_TEMPLATES)
    assert templates_for(None) == ["a photo of a {}."]
    assert find_dataset("dtd").augment_for(4).copies == 10 and find_dataset("dtd").augment_for(8).copies == 0
    assert find_dataset("eurosat").augment_for(2).describe() == "10 rrc+cj (0.5)"
    assert find_dataset("my_photos") is None


def test_every_packaged_cupl_file_works_and_imagenet_is_missing():
    for spec in DATASETS.values():
        path = cupl_file(spec)
        if spec.key == "imagenet":
            assert path is None  # not shipped: fit_dataset warns
            continue
        assert path is not None and path.parent == PACKAGED_CUPL, spec.key
        descriptions = load_descriptions(path)
        names = list(descriptions)[:3]
        texts, classes = build_prompts(names, templates_for(spec), descriptions)
        assert len(texts) == sum(len(templates_for(spec)) + len(descriptions[n]) for n in names)
        assert texts[0] == templates_for(spec)[0].format(names[0])
    assert sorted(p.name for p in PACKAGED_CUPL.glob("*.json")) == sorted(s.cupl for s in DATASETS.values() if s.key != "imagenet")


def test_cupl_dir_overrides_the_packaged_files(tmp_path):
    (tmp_path / "imagenet.json").write_text(json.dumps({"tench": ["A tench is a fish."]}))
    assert cupl_file(find_dataset("imagenet"), tmp_path) == tmp_path / "imagenet.json"
    assert cupl_file(find_dataset("dtd"), tmp_path) is None
    assert "ImageNet's file is not shipped" in missing_cupl_message(find_dataset("imagenet"))


def test_the_library_picks_the_image_files_the_runtime_picks(tmp_path):
    """One list of image suffixes (semobridge_runtime.images.IMAGE_SUFFIXES): a class folder of .pnm and upper-case
    .PGM files is a class for fitting as it is for semobridge-eval."""
    import semobridge.data as data
    from semobridge_runtime import images

    assert data.IMAGE_SUFFIXES is images.IMAGE_SUFFIXES
    for name in ("cat", "dog"):
        (tmp_path / name).mkdir()
        Image.new("RGB", (8, 8), (200, 10, 10)).save(tmp_path / name / "a.pnm", format="PPM")
        Image.new("L", (8, 8), 99).save(tmp_path / name / "b.PGM", format="PPM")
    ds = load_dataset(tmp_path)
    assert ds.class_names == ["cat", "dog"] and len(ds.splits["train"]) == 4
    assert [load_rgb(p).getpixel((0, 0)) for p, _ in ds.splits["train"][:2]] == [(200, 10, 10), (99, 99, 99)]


def test_a_class_names_file_saved_with_a_byte_order_mark_reads(image_folder, tmp_path):
    """Editors (Notepad) start UTF-8 files with U+FEFF; it is not part of the first name (which the class-name rule
    would refuse as an invisible character)."""
    names = tmp_path / "names.txt"
    names.write_bytes("\ufeffblue whale\ngreen tree\nred fox\n".encode("utf-8"))
    assert load_dataset(image_folder, names).class_names == ["blue whale", "green tree", "red fox"]

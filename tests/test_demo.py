"""The bundled Fashion-MNIST demo sample is complete, well-formed and licensed."""
from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from semobridge.demo import DEMO_DATASET, demo_dataset

PER_CLASS = {"train": 16, "val": 4, "test": 10}


@pytest.fixture(scope="module")
def root() -> Path:
    return demo_dataset()


def test_location(root: Path) -> None:
    assert root.is_dir() and root.name == DEMO_DATASET


def test_splits_and_counts(root: Path) -> None:
    assert sorted(p.name for p in root.iterdir() if p.is_dir()) == sorted(PER_CLASS)
    classes = None
    for split, n in PER_CLASS.items():
        names = sorted(p.name for p in (root / split).iterdir())
        assert all((root / split / c).is_dir() for c in names)
        assert classes is None or names == classes, f"{split} has different classes"
        classes = names
        for c in names:
            assert len(list((root / split / c).glob("*.png"))) == n, f"{split}/{c}"
    assert len(classes) == 10 and len(set(classes)) == 10
    assert all(c.strip() and c == c.strip() for c in classes)


def test_train_val_disjoint(root: Path) -> None:
    for c in (root / "train").iterdir():
        train = {p.name for p in c.glob("*.png")}
        val = {p.name for p in (root / "val" / c.name).glob("*.png")}
        assert not train & val, c.name


def test_images_open(root: Path) -> None:
    files = sorted(root.glob("*/*/*.png"))
    assert len(files) == 10 * sum(PER_CLASS.values())
    for f in files:
        with Image.open(f) as im:
            im.load()
            assert im.size == (28, 28) and im.mode == "L", f


def test_licence(root: Path) -> None:
    text = (root / "LICENSE").read_text()
    assert "Zalando SE" in text and "Permission is hereby granted" in text


def test_missing_data_raises(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import semobridge.demo as demo

    monkeypatch.setattr(demo, "__file__", str(tmp_path / "demo.py"))
    with pytest.raises(FileNotFoundError, match="fashion-mnist"):
        demo.demo_dataset()

"""Labelled images: class folders, CoOp split files, CSV lists; CoOp-style few-shot sampling."""
from __future__ import annotations

import csv
import io
import json
import random
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError
from semobridge_runtime.images import IMAGE_SUFFIXES, SIXTEEN_BIT_MODES
from semobridge_runtime.images import to_8bit as scale_to_8bit

from .errors import InputError
from .files import CSV_BYTES, IMAGE_BYTES, open_regular, read_text
from .validate import MIN_FIT_CLASSES
from .validate import class_names as check_class_names
from .validate import image_size

SPLITS = ("train", "val", "test")
VAL_SHOTS_MAX = 4

Item = tuple[str, int]  # (image path, class index)


class DataError(InputError):
    """The data cannot be used as given; the message says what to change."""


@dataclass
class Dataset:
    """Class names and the items of each split."""

    name: str
    class_names: list[str]
    splits: dict[str, list[Item]] = field(default_factory=dict)
    source: str = ""

    def split(self, name: str) -> list[Item]:
        if not self.splits.get(name):
            raise DataError(
                f"{self.source} has no {name!r} split (it has: {', '.join(k for k, v in self.splits.items() if v)}). "
                "Use a folder with train/ val/ test/ subfolders, a CoOp split_zhou_*.json, or a CSV with a split column."
            )
        return self.splits[name]


@dataclass
class FewShotSplit:
    """K shots per class for fitting, K' per class for validation, and where K' came from."""

    shots: list[Item]
    val: list[Item]
    val_source: str  # "val split" (K' per class of it), "whole val split", "held out from train" or "none"


def prompt_name(folder_name: str) -> str:
    """Class folder name -> the name used in prompts (underscores to spaces)."""
    return folder_name.replace("_", " ").strip()


def to_8bit(im: Image.Image) -> Image.Image:
    """16- and 32-bit integer grey images -> 8-bit grey with the runtime's rule (semobridge_runtime.to_8bit; PIL's
    own conversion would saturate them to white), so fitting and inference see the same pixels."""
    return Image.fromarray(scale_to_8bit(np.asarray(im)), "L") if im.mode in SIXTEEN_BIT_MODES else im


def load_rgb(path: str | Path) -> Image.Image:
    """Open an image as RGB: grayscale is replicated, alpha dropped (as open_clip does), 16-bit
    scaled to 8; images beyond the graph's size limits (validate.image_size) are refused."""
    with open_regular(path, "image", IMAGE_BYTES, DataError) as f:  # a folder, a FIFO, a device: refused, unblocked
        try:
            with Image.open(f) as im:
                image_size(im.height, im.width, f"image {path}")
                im.load()
                return to_8bit(im).convert("RGB")
        except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError) as exc:
            if isinstance(exc, InputError):
                raise DataError(str(exc), hint=f"resize or remove {path}") from None
            raise DataError(f"cannot read image {path}: {exc}", hint="remove or replace the file") from exc


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def _class_folders(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def _from_class_folders(root: Path, class_names: list[str] | None) -> tuple[list[str], list[Item]]:
    folders = _class_folders(root)
    if not folders:
        raise DataError(f"{root} has no class subfolders; expected {root}/<class name>/<image files>")
    names = class_names or [prompt_name(f.name) for f in folders]
    if len(names) != len(folders):
        raise DataError(f"{len(names)} class names given for {len(folders)} class folders in {root}")
    items = []
    for c, folder in enumerate(folders):
        images = _images_in(folder)
        if not images:
            raise DataError(f"class folder {folder} has no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
        items += [(str(p), c) for p in images]
    return names, items


def _from_coop_split(root: Path, split_file: Path) -> Dataset:
    try:
        data = json.loads(read_text(split_file, "CoOp split file", error=DataError))
    except json.JSONDecodeError as exc:
        raise DataError(f"cannot read the CoOp split {split_file}: {exc}") from None
    if not isinstance(data, dict):
        raise DataError(f"{split_file}: expected a JSON object with train/val/test lists")
    entries = []
    for s in SPLITS:
        for i, e in enumerate(data.get(s) or []):
            if not (isinstance(e, list) and len(e) == 3 and isinstance(e[0], str) and isinstance(e[1], int) and isinstance(e[2], str)):
                raise DataError(f"{split_file}: {s} entry {i} is {e!r:.80}; expected [relative path, label, class name]")
            entries.append((s, e))
    if not entries:
        raise DataError(f"{split_file} has no train/val/test entries")
    first = entries[0][1][0]
    image_dir = next((d for d in [root, *_class_folders(root)] if (d / first).is_file()), None)
    if image_dir is None:
        raise DataError(f"images of {split_file} (e.g. {first}) not found under {root} or its subfolders")
    names: dict[int, str] = {}
    for _, (_, label, name) in entries:
        names.setdefault(label, prompt_name(name))
    if sorted(names) != list(range(len(names))):
        raise DataError(f"{split_file}: labels must be 0..C-1")
    splits: dict[str, list[Item]] = {s: [] for s in SPLITS}
    for s, (p, y, _) in entries:
        splits[s].append((str(image_dir / p), y))
    return Dataset(root.name, [names[i] for i in range(len(names))], splits, str(split_file))


def _from_csv(path: Path, class_names: list[str] | None) -> Dataset:
    try:
        text = read_text(path, "CSV file", CSV_BYTES, DataError)
        rows = [(n, r) for n, r in enumerate(csv.reader(io.StringIO(text, newline="")), 1)
                if r and r[0].strip() and not r[0].startswith("#")]
    except csv.Error as exc:
        raise DataError(f"cannot read {path} as CSV: {exc}") from None
    if rows and [c.strip() for c in rows[0][1][:2]] == ["path", "label"]:
        rows = rows[1:]
    if not rows:
        raise DataError(f"{path} has no rows; expected lines 'path,label[,split]'")
    for n, r in rows:
        if len(r) < 2 or not r[1].strip() or len(r) > 3:
            raise DataError(f"{path}, line {n}: {','.join(r)!r:.80} is not 'path,label[,split]'")
    labels = [r[1].strip() for _, r in rows]
    if all(lab.isdigit() for lab in labels):
        count = max(int(lab) for lab in labels) + 1
        names = class_names or [f"class {i}" for i in range(count)]
        if count > len(names):
            raise DataError(f"{path}: label {count - 1} given, but there are {len(names)} class names")
        index = [int(lab) for lab in labels]
    else:
        names = class_names or sorted(set(labels))
        lookup = {n: i for i, n in enumerate(names)}
        unknown = sorted(set(labels) - set(lookup))
        if unknown:
            raise DataError(f"{path}: labels {unknown[:5]} are not in the class-name list")
        index = [lookup[lab] for lab in labels]
        names = [prompt_name(n) for n in names]
    splits: dict[str, list[Item]] = {s: [] for s in SPLITS}
    for (n, r), y in zip(rows, index):
        split = r[2].strip() if len(r) > 2 else "train"
        if split not in SPLITS:
            raise DataError(f"{path}, line {n}: split {split!r} is not one of {', '.join(SPLITS)}")
        p = Path(r[0].strip())
        splits[split].append((str(p if p.is_absolute() else path.parent / p), y))
    return Dataset(path.stem, names, splits, str(path))


def load_dataset(path: str | Path, class_names_file: str | Path | None = None) -> Dataset:
    """Read a dataset from a folder (train/ val/ test/ class folders, plain class folders, or a
    CoOp `split_zhou_*.json` beside the images) or from a CSV of `path,label[,split]`."""
    root = Path(path)
    names = None
    if class_names_file is not None:
        text = read_text(class_names_file, "class names file", error=DataError)
        names = [line.strip() for line in text.splitlines() if line.strip()]
    if not root.exists():
        raise DataError(f"{root} does not exist")
    if root.is_file():
        if root.suffix.lower() != ".csv":
            raise DataError(f"{root} is a file but not a .csv; give a folder or a CSV of path,label[,split]")
        dataset = _from_csv(root, names)
    elif split_files := sorted(root.glob("split_zhou_*.json")):
        dataset = _from_coop_split(root, split_files[0])
    elif (root / "train").is_dir():
        splits: dict[str, list[Item]] = {}
        class_names: list[str] | None = names
        for s in SPLITS:
            if (root / s).is_dir():
                found, splits[s] = _from_class_folders(root / s, names)
                if class_names is None:
                    class_names = found
                elif found != class_names:
                    raise DataError(f"{root / s} has other classes than {root / 'train'}: every split needs the same class folders")
        dataset = Dataset(root.name, class_names or [], splits, str(root))
    else:
        found, items = _from_class_folders(root, names)
        dataset = Dataset(root.name, found, {"train": items}, str(root))
    check_class_names(dataset.class_names, f"the classes of {dataset.source}", MIN_FIT_CLASSES)
    return dataset


def _by_class(items: list[Item], num_classes: int) -> list[list[Item]]:
    groups: list[list[Item]] = [[] for _ in range(num_classes)]
    for item in items:
        groups[item[1]].append(item)
    return [sorted(g) for g in groups]


def few_shot_split(dataset: Dataset, shots: int, seed: int, whole_val: bool = False) -> FewShotSplit:
    """K shots per class from train; for validation K' = min(K, 4) per class from val (or the
    whole val split with `whole_val`), or K' held out from train when there is no val split.
    Same dataset, shots and seed: same split, and the same shots with or without `whole_val`."""
    if shots < 1:
        raise DataError(f"--shots must be at least 1, got {shots}")
    rng = random.Random(seed)
    C = len(dataset.class_names)
    k_val = min(shots, VAL_SHOTS_MAX)
    train = _by_class(dataset.split("train"), C)
    has_val = bool(dataset.splits.get("val"))
    val_groups = _by_class(dataset.splits["val"], C) if has_val else None
    shots_out: list[Item] = []
    val_out: list[Item] = []
    for c, group in enumerate(train):
        need = shots + (0 if has_val else k_val)
        if len(group) < need:
            raise DataError(
                f"class {dataset.class_names[c]!r} has {len(group)} training image(s), fewer than the {need} needed "
                f"({shots} shots" + ("" if has_val else f" + {k_val} held out for validation, as there is no val split")
                + "). Add images or lower --shots."
            )
        picked = rng.sample(group, need)
        shots_out += picked[:shots]
        val_out += picked[shots:]
        if has_val:
            drawn = rng.sample(val_groups[c], min(k_val, len(val_groups[c])))  # drawn either way: the same shots
            if not whole_val:
                if len(drawn) < k_val:
                    raise DataError(f"class {dataset.class_names[c]!r} has {len(val_groups[c])} validation image(s), fewer than {k_val}")
                val_out += drawn
    if has_val and whole_val:
        return FewShotSplit(shots_out, list(dataset.splits["val"]), "whole val split")
    return FewShotSplit(shots_out, val_out, "val split" if has_val else "held out from train")

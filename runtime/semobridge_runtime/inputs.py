"""Turn what callers pass to `predict`/`embed` into model-ready batches, or explain why not.

uint8 models take RGB pixels. Channel conversions are explicit and limited:
grayscale (HxW or HxWx1) is replicated to RGB, RGBA (HxWx4) has its alpha dropped
(not composited); anything else is refused.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .errors import InputError

_HINT_TYPES = "a uint8 HxWx3 numpy array, an [N,H,W,3] batch, a list of images, a file path or a PIL image"


@dataclass(frozen=True)
class Group:
    """Images of one size, stacked, with their positions in the caller's input."""

    indices: np.ndarray
    batch: np.ndarray


def uint8_groups(images: Any, fixed_hw: tuple[int, int] | None) -> tuple[int, list[Group]]:
    """Return (number of images, groups of same-size NHWC uint8 batches)."""
    if isinstance(images, np.ndarray) and images.ndim == 4:
        batch = _rgb(_check_dtype(images, "batch"), "batch")
        _check_size(batch.shape[1:3], fixed_hw, "batch")
        return len(batch), [Group(np.arange(len(batch)), batch)]
    items = list(images) if isinstance(images, (list, tuple)) else [images]
    if not items:
        raise InputError("no images given: pass at least one image")
    by_size: dict[tuple[int, int], list[int]] = {}
    arrays = []
    for i, item in enumerate(items):
        where = f"image {i}" if len(items) > 1 or isinstance(images, (list, tuple)) else "image"
        arr = _rgb(_check_dtype(_as_array(item, where), where), where)
        if arr.ndim != 3:
            raise InputError(f"{where} has shape {arr.shape}; list items must be single HxWx3 images, not batches")
        _check_size(arr.shape[:2], fixed_hw, where)
        by_size.setdefault(arr.shape[:2], []).append(i)
        arrays.append(arr)
    groups = [Group(np.array(idx), np.stack([arrays[i] for i in idx])) for idx in by_size.values()]
    return len(items), groups


def float_batch(images: Any, size: int) -> np.ndarray:
    """Validate a normalised float32 [N,3,S,S] batch for a float-variant model."""
    expected = f"normalised float32 [N,3,{size},{size}] (resized, /255, (x-mean)/std, channels first)"
    if not isinstance(images, np.ndarray):
        raise InputError(f"this is a float-variant model: it takes {expected} as one numpy array, "
                         f"not {type(images).__name__}; use the uint8 export to pass raw images")
    if images.dtype != np.float32:
        fix = "use .astype(np.float32)" if np.issubdtype(images.dtype, np.floating) else \
            "preprocess your pixels, or use the uint8 export for raw images"
        raise InputError(f"this is a float-variant model: it takes {expected}, got dtype {images.dtype}; {fix}")
    if images.ndim != 4 or images.shape[1:] != (3, size, size):
        raise InputError(f"this is a float-variant model: it takes {expected}, got shape {images.shape}")
    if images.shape[0] == 0:
        raise InputError("empty batch: pass at least one image")
    return np.ascontiguousarray(images)


def _as_array(item: Any, where: str) -> np.ndarray:
    if isinstance(item, np.ndarray):
        return item
    if isinstance(item, (str, PathLike)):
        return _read_file(Path(item))
    pil = sys.modules.get("PIL.Image")
    if pil is not None and isinstance(item, pil.Image):
        return np.asarray(item.convert("RGB"))
    raise InputError(f"{where}: unsupported type {type(item).__name__}; pass {_HINT_TYPES}")


def _read_file(path: Path) -> np.ndarray:
    if not path.is_file():
        raise InputError(f"no such image file: {path}")
    try:
        from PIL import Image, UnidentifiedImageError
    except ImportError:
        raise InputError(f"reading {path} needs Pillow: pip install 'semobridge-runtime[pillow]', "
                         "or pass decoded uint8 arrays") from None
    try:
        with Image.open(path) as img:
            return np.asarray(img.convert("RGB"))
    except (UnidentifiedImageError, OSError) as exc:
        raise InputError(f"cannot decode image file {path}: {exc}") from exc


def _check_dtype(arr: np.ndarray, where: str) -> np.ndarray:
    if arr.dtype == np.uint8:
        return arr
    if np.issubdtype(arr.dtype, np.floating):
        raise InputError(
            f"{where} has dtype {arr.dtype} but this model takes uint8 RGB pixels (0..255): "
            "use (img * 255).round().astype(np.uint8) for values in 0..1, img.astype(np.uint8) for 0..255, "
            "or export the float variant to feed normalised float32 tensors"
        )
    raise InputError(f"{where} has dtype {arr.dtype} but this model takes uint8 RGB pixels: "
                     "use np.clip(img, 0, 255).astype(np.uint8)")


def _rgb(arr: np.ndarray, where: str) -> np.ndarray:
    """Return a contiguous [..., H, W, 3] view/copy; gray is replicated, RGBA alpha is dropped."""
    if arr.size == 0:
        raise InputError(f"{where} is empty (shape {arr.shape}); pass at least one non-empty image")
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim not in (3, 4):
        raise InputError(f"{where} has shape {arr.shape}; expected HxWx3, HxW (gray) or an [N,H,W,3] batch")
    channels = arr.shape[-1]
    if channels == 1:
        arr = np.repeat(arr, 3, axis=-1)
    elif channels == 4:
        arr = arr[..., :3]
    elif channels != 3:
        hint = ""
        if arr.shape[-3] in (1, 3, 4):
            axes = (1, 2, 0) if arr.ndim == 3 else (0, 2, 3, 1)
            hint = f" It looks channels-first: use img.transpose{axes}."
        raise InputError(
            f"{where} has shape {arr.shape} with {channels} channels; the model takes channels-last RGB "
            f"(3), gray (1, replicated) or RGBA (4, alpha dropped).{hint}"
        )
    return np.ascontiguousarray(arr)


def _check_size(hw: Sequence[int], fixed_hw: tuple[int, int] | None, where: str) -> None:
    if fixed_hw is not None and tuple(hw) != fixed_hw:
        h, w = fixed_hw
        raise InputError(f"{where} is {hw[0]}x{hw[1]} but this model was exported with a fixed size of "
                         f"{h}x{w}: resize to {h}x{w} first, or export without --fixed-size")

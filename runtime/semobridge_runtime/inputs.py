"""Turn what callers pass to `predict`/`embed` into model-ready batches, or explain why not.

uint8 models take RGB pixels. Channel conversions are explicit and limited:
grayscale (HxW or HxWx1) is replicated to RGB, RGBA (HxWx4) has its alpha dropped
(not composited); camera frames in other layouts (BGR, BGRA, NV12, padded rows) come as
`Frame`s, which say their layout; anything else is refused. Every image's size is checked against the
model's limits before it is decoded, converted or run.
"""

from __future__ import annotations

from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image

from .errors import InputError, ModelError
from .frames import Frame
from .images import pil_pixels, read_image
from .limits import ImageLimits

_HINT_TYPES = ("a uint8 HxWx3 numpy array, an [N,H,W,3] batch, a list of images, a file path, a PIL image or a "
               "semobridge_runtime.Frame (camera buffers: strides, BGR, RGBA, NV12)")


@dataclass(frozen=True)
class Group:
    """Images of one size, stacked, with their positions in the caller's input."""

    indices: np.ndarray
    batch: np.ndarray


def uint8_groups(images: Any, fixed_hw: tuple[int, int] | None,
                 limits: ImageLimits) -> tuple[int, list[Group]]:
    """Return (number of images, groups of same-size NHWC uint8 batches)."""
    if isinstance(images, np.ndarray) and images.ndim == 4:
        batch = _rgb(_check_dtype(images, "batch"), "batch", limits)
        _check_size(batch.shape[1:3], fixed_hw, "batch")
        return len(batch), [Group(np.arange(len(batch)), batch)]
    items = list(images) if isinstance(images, (list, tuple)) else [images]
    if not items:
        raise InputError("no images given: pass at least one image")
    by_size: dict[tuple[int, int], list[int]] = {}
    arrays = []
    for i, item in enumerate(items):
        where = f"image {i}" if len(items) > 1 or isinstance(images, (list, tuple)) else "image"
        arr = _rgb(_check_dtype(_as_array(item, where, limits), where), where, limits)
        if arr.ndim != 3:
            raise InputError(f"{where} has shape {arr.shape}; list items must be single HxWx3 images, not batches")
        _check_size(arr.shape[:2], fixed_hw, where)
        by_size.setdefault(arr.shape[:2], []).append(i)
        arrays.append(arr)
    groups = [Group(np.array(idx), arrays[idx[0]][None] if len(idx) == 1 else np.stack([arrays[i] for i in idx]))
              for idx in by_size.values()]  # a lone image is run in place, not copied
    return len(items), groups


def float_batch(images: Any, size: int) -> np.ndarray:
    """Validate a normalised float32 [N,3,S,S] batch for a float-variant model.

    Raw pixels (integer arrays, files, PIL images) are a model error, as in the C library:
    this model cannot take them, the uint8 export can.
    """
    expected = f"normalised float32 [N,3,{size},{size}] (resized, /255, (x-mean)/std, channels first)"
    if _raw_pixels(images):
        raise ModelError(f"this is a float-variant model: it takes {expected}, not raw pixels "
                         f"({type(images).__name__}{_dtype_of(images)})",
                         hint="use the uint8 export (semobridge-export --input uint8, the default) to pass "
                              "images, or preprocess them yourself")
    if not isinstance(images, np.ndarray):
        raise InputError(f"this is a float-variant model: it takes {expected} as one numpy array, "
                         f"not {type(images).__name__}", hint="stack the images with np.stack")
    if images.dtype != np.float32:
        raise InputError(f"this is a float-variant model: it takes {expected}, got dtype {images.dtype}; "
                         "use .astype(np.float32)")
    if images.ndim != 4 or images.shape[1:] != (3, size, size):
        raise InputError(f"this is a float-variant model: it takes {expected}, got shape {images.shape}")
    if images.shape[0] == 0:
        raise InputError("empty batch: pass at least one image")
    return np.ascontiguousarray(images)


def _raw_pixels(images: Any) -> bool:
    """Integer arrays, paths or PIL images, alone or first in a list: what only a uint8 model takes."""
    if isinstance(images, (list, tuple)) and images:
        images = images[0]
    if isinstance(images, np.ndarray):
        return images.dtype.kind in "biu"
    return isinstance(images, (str, PathLike, Image.Image, Frame))


def _dtype_of(images: Any) -> str:
    return f" of {images.dtype}" if isinstance(images, np.ndarray) else ""


def _as_array(item: Any, where: str, limits: ImageLimits) -> np.ndarray:
    if isinstance(item, np.ndarray):
        return item
    if isinstance(item, (str, PathLike)):
        return read_image(Path(item), limits)
    if isinstance(item, Image.Image):
        return pil_pixels(item, limits, where)
    if isinstance(item, Frame):
        limits.check(item.height, item.width, where)
        return item.rgb()
    raise InputError(f"{where}: unsupported type {type(item).__name__}; pass {_HINT_TYPES}")


def _check_dtype(arr: np.ndarray, where: str) -> np.ndarray:
    if arr.dtype == np.uint8:
        return arr
    if np.issubdtype(arr.dtype, np.floating):
        raise InputError(
            f"{where} has dtype {arr.dtype} but this model takes uint8 RGB pixels (0..255): "
            "use (img * 255).round().astype(np.uint8) for values in 0..1, img.astype(np.uint8) for 0..255, "
            "or export the float variant to feed normalised float32 tensors"
        )
    if arr.dtype == np.uint16:
        raise InputError(f"{where} has dtype uint16 but this model takes uint8 RGB pixels",
                         hint="scale 16-bit pixels with semobridge_runtime.to_8bit(img): (v + 128) // 257")
    raise InputError(f"{where} has dtype {arr.dtype} but this model takes uint8 RGB pixels: "
                     "use np.clip(img, 0, 255).astype(np.uint8)")


def _rgb(arr: np.ndarray, where: str, limits: ImageLimits) -> np.ndarray:
    """Return a contiguous [..., H, W, 3] view/copy; gray is replicated, RGBA alpha is dropped.

    The shape is validated and the size checked against `limits` before anything is copied.
    """
    if arr.size == 0:
        raise InputError(f"{where} is empty (shape {arr.shape}); pass at least one non-empty image")
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim not in (3, 4):
        raise InputError(f"{where} has shape {arr.shape}; expected HxWx3, HxW (gray) or an [N,H,W,3] batch")
    channels = arr.shape[-1]
    if channels not in (1, 3, 4):
        hint = ""
        if arr.shape[-3] in (1, 3, 4):
            axes = (1, 2, 0) if arr.ndim == 3 else (0, 2, 3, 1)
            hint = f" It looks channels-first: use img.transpose{axes}."
        raise InputError(
            f"{where} has shape {arr.shape} with {channels} channels; the model takes channels-last RGB "
            f"(3), gray (1, replicated) or RGBA (4, alpha dropped).{hint}"
        )
    limits.check(arr.shape[-3], arr.shape[-2], where)
    if channels == 1:
        arr = np.repeat(arr, 3, axis=-1)
    elif channels == 4:
        arr = arr[..., :3]
    return np.ascontiguousarray(arr)


def _check_size(hw: Sequence[int], fixed_hw: tuple[int, int] | None, where: str) -> None:
    if fixed_hw is not None and tuple(hw) != fixed_hw:
        h, w = fixed_hw
        raise InputError(f"{where} is {hw[0]}x{hw[1]} but this model was exported with a fixed size of "
                         f"{h}x{w}: resize to {h}x{w} first, or export without --fixed-size")

"""Image files and PIL images -> uint8 pixels: size checked from the header before decoding, 16-bit scaled."""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, UnidentifiedImageError

from . import files
from .errors import InputError
from .limits import ImageLimits

#: File suffixes that semobridge-run picks from a directory or a glob (compared in lower case).
IMAGE_SUFFIXES = (".bmp", ".gif", ".jpeg", ".jpg", ".pgm", ".png", ".pnm", ".ppm", ".tif", ".tiff", ".webp")
SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")  # PIL modes of 16-bit (or wider) gray samples


def to_8bit(values: np.ndarray) -> np.ndarray:
    """16-bit samples to 8 bits, rounded to the nearest level: v8 = (v16 + 128) // 257.

    257 = 65535 / 255 maps 0 -> 0 and 65535 -> 255 exactly; adding 128 (half of 257, rounded
    down) rounds to nearest. Values outside 0..65535 (PIL's 32-bit mode "I") are clipped first.
    semobridge's image loader uses the same formula, so fitting and inference see the same pixels.
    """
    wide = np.clip(np.asarray(values, dtype=np.int64), 0, 65535)
    return ((wide + 128) // 257).astype(np.uint8)


def read_image(path: Path, limits: ImageLimits) -> np.ndarray:
    """Decode an image file to uint8 pixels (HxW gray or HxWx3 RGB), refusing it by its header first."""
    if path.is_dir():
        raise InputError(f"{path} is a directory, not an image file",
                         hint="pass the image files in it; semobridge-run MODEL DIR classifies every image in DIR")
    if not path.exists():
        raise InputError(f"no such image file: {path}")
    with files.open_regular(path, "image file", files.IMAGE_BYTES) as f:  # refuses a FIFO or a device, unblocked
        return _decode(f, limits, str(path))


def decode_image(data: bytes, limits: ImageLimits, where: str) -> np.ndarray:
    """Decode an encoded image (JPEG, PNG, ... bytes) like an image file; `where` names it in errors."""
    return _decode(io.BytesIO(data), limits, where)


def _decode(source: BinaryIO, limits: ImageLimits, where: str) -> np.ndarray:
    try:
        with Image.open(source) as img:  # reads the header only
            return pil_pixels(img, limits, where)
    except Image.DecompressionBombError as exc:
        raise InputError(f"{where} is too large to decode ({exc})",
                         hint="Pillow refuses it as a possible decompression bomb; crop or resize it") from None
    except UnidentifiedImageError:
        raise InputError(f"cannot decode {where}: not an image format Pillow reads",
                         hint="pass JPEG, PNG, BMP, GIF, TIFF or WebP images") from None
    except OSError as exc:
        raise InputError(f"cannot decode {where}: {exc}") from None


def pil_pixels(img: Image.Image, limits: ImageLimits, where: str) -> np.ndarray:
    """A PIL image's pixels as uint8, after checking its size against `limits` (nothing decoded before); a JPEG
    not yet decoded is decoded DCT-scaled when the limits are `FastJpeg` (see `draft_jpeg`)."""
    limits.check(img.height, img.width, where)
    if isinstance(limits, FastJpeg):
        draft_jpeg(img, limits.draft_side)
    if img.mode in SIXTEEN_BIT_MODES:
        return to_8bit(np.asarray(img))
    # convert() copies even an RGB image: 70 ms of a 12 MP photo's read
    return np.asarray(img if img.mode == "RGB" else img.convert("RGB"))


@dataclass(frozen=True)
class FastJpeg(ImageLimits):
    """The limits, and the fast JPEG path (Classifier.load fast_jpeg): JPEGs decode DCT-scaled, their shorter side
    kept >= draft_side."""

    draft_side: int = 448


def draft_jpeg(img: Image.Image, short_side: int) -> None:
    """Have a JPEG decode at 1/2, 1/4 or 1/8 of its size (libjpeg's DCT scaling: far less work than a full decode)
    where its shorter side stays at least `short_side`; other images, and images already decoded, are left as they
    are. The model's exact resize then runs on the smaller image, so pixels differ a little from a full decode
    (runtime/README.md quotes the measured differences)."""
    short = min(img.size)
    if img.format == "JPEG" and short >= 2 * short_side:  # PIL picks the largest scale keeping both sides >= asked
        img.draft(None, (-(-img.width * short_side // short), -(-img.height * short_side // short)))

"""The validation layer: every check on what a user passes, in one place, shared by the CLIs,
the library and the exporter. The runtime package (which imports nothing of ours) mirrors the
image limits and thread cap (tests/test_contract.py keeps them equal); the class-name rule is the
runtime's own (semobridge_runtime.names), imported here.

Nothing here imports PyTorch.
"""
from __future__ import annotations

import math
from typing import Any, Mapping

from semobridge_runtime.files import check_output as output_file  # noqa: F401  (the one output rule)
from semobridge_runtime.files import check_output_dir as output_dir  # noqa: F401
from semobridge_runtime.names import check_names as class_names  # noqa: F401  (the one class-name rule)

from .errors import InputError

#: Image limits of the fused graph's in-graph resize (recorded in the export metadata as `limits`,
#: enforced by both runtimes before anything is allocated; raise them with
#: Classifier.load(max_pixels=..., max_aspect=...) or sb_params.max_pixels / max_aspect).
MAX_SIDE = 16384  # longest side in pixels (the graph's dynamic H and W range)
MAX_PIXELS = 1 << 26  # H x W, 67 MP (8192 x 8192)
MAX_ASPECT = 32  # long side / short side
MAX_THREADS = 256  # intra-/inter-op thread counts
#: classes a fit needs (it learns to tell them apart); a class set, once fitted, may hold fewer (names.MIN_CLASSES)
MIN_FIT_CLASSES = 2


def limits() -> dict[str, int]:
    """The image limits as the export metadata records them."""
    return {"max_side": MAX_SIDE, "max_pixels": MAX_PIXELS, "max_aspect": MAX_ASPECT}


def parse_hw(text: str, what: str = "size") -> tuple[int, int]:
    """'480x640' -> (480, 640): height x width, the one convention for image sizes everywhere."""
    parts = str(text).lower().replace(" ", "").split("x")
    try:
        h, w = (int(p) for p in parts)
    except ValueError:
        h = w = 0
    if h < 1 or w < 1:
        raise InputError(f"{what} {text!r} is not HEIGHTxWIDTH with positive integers", hint="write it as e.g. 480x640 (height x width)")
    return h, w


def image_size(h: int, w: int, what: str = "image size") -> tuple[int, int]:
    """Refuse sizes beyond the graph's limits (before anything is allocated for them)."""
    if h < 1 or w < 1:
        raise InputError(f"{what} {h}x{w} must be positive")
    if max(h, w) > MAX_SIDE:
        raise InputError(f"{what} {h}x{w} has a side over the limit of {MAX_SIDE} pixels", hint="resize the images first")
    if h * w > MAX_PIXELS:
        raise InputError(f"{what} {h}x{w} has {h * w:,} pixels, over the limit of {MAX_PIXELS:,}", hint="resize the images first")
    if max(h, w) > MAX_ASPECT * min(h, w):
        raise InputError(f"{what} {h}x{w} has an aspect ratio over the limit of {MAX_ASPECT}:1", hint="crop the images first")
    return h, w


def threads(count: int | None, what: str = "thread count") -> int | None:
    """None or 0 (the library's default) .. MAX_THREADS."""
    if count is not None and not 0 <= count <= MAX_THREADS:
        raise InputError(f"{what} must be between 0 (the default) and {MAX_THREADS}, not {count}")
    return count


def positive(value: int, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InputError(f"{what} must be a positive integer, not {value!r}")
    return value


def cut(text: str, limit: int = 80) -> str:
    """`text` for a message: at most `limit` characters, "..." where it was cut (a message never echoes a
    whole argument back)."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


def blend_values(values: Any, ranges: Mapping[str, tuple[float, float]], source: str = "--params") -> dict[str, float]:
    """A JSON object with exactly the blend keys, each a finite number inside its published range."""
    names = list(ranges)
    if not isinstance(values, dict):
        raise InputError(f"{source} must be a JSON object with the keys {', '.join(names)}, not {type(values).__name__}")
    unknown, missing = sorted(set(values) - set(names)), sorted(set(names) - set(values))
    if unknown or missing:
        raise InputError(
            f"{source} needs exactly the keys {', '.join(names)}"
            + (f"; unknown: {cut(', '.join(map(str, unknown)))}" if unknown else "")
            + (f"; missing: {', '.join(missing)}" if missing else "")
        )
    out = {}
    for name in names:
        v, (lo, hi) = values[name], ranges[name]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise InputError(f"{source}: {name} must be a finite number, not {cut(repr(v))}")
        if not lo <= v <= hi:
            raise InputError(f"{source}: {name} = {v} is outside its range {lo}..{hi} (docs/method.md)")
        out[name] = float(v)
    return out

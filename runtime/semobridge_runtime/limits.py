"""Image and thread limits, checked before anything is allocated for an image or a session.

The fused graph resizes inside ONNX Runtime, whose cost grows with the image's longest side
times the model's input size: a 4 KB PNG of 1,000,000 x 1 pixels would take gigabytes. The
defaults equal semobridge.validate's (a test keeps them equal) and the C library's SB_MAX_*;
a model's metadata may carry its own under "limits", and callers raise them per model with
Classifier.load(max_side=, max_pixels=, max_aspect=) or semobridge-run --max-side/--max-pixels/--max-aspect.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .errors import InputError, ModelError

MAX_SIDE = 16384  # longest side in pixels (the exported graph's dynamic H and W range)
MAX_PIXELS = 1 << 26  # height x width, 67 MP (8192 x 8192)
MAX_ASPECT = 32  # longest side / shortest side
MAX_THREADS = 256  # intra-op thread count

_NAMES = ("max_side", "max_pixels", "max_aspect")


@dataclass(frozen=True)
class ImageLimits:
    """Largest images a model takes; `check` refuses bigger ones with a message saying how to raise them."""

    max_side: int = MAX_SIDE
    max_pixels: int = MAX_PIXELS
    max_aspect: float = MAX_ASPECT

    @classmethod
    def from_metadata(cls, raw: Any, source: str) -> ImageLimits:
        """The metadata's "limits" object (any of the three keys; missing keys keep the defaults)."""
        if raw is None:
            return cls()
        if not isinstance(raw, dict) or any(not _at_least_one(raw.get(k, 1)) for k in _NAMES):
            raise ModelError(f"{source}: metadata 'limits' {raw!r} is not an object of positive numbers (at least 1) "
                             f"({', '.join(_NAMES)})", hint="re-export the model")
        return cls(**{k: raw[k] for k in _NAMES if k in raw})

    def check(self, height: int, width: int, where: str) -> None:
        """Refuse a height x width image beyond a limit (before it is decoded or run)."""
        long, short = max(height, width), min(height, width)
        if long > self.max_side:
            problem, name, value = f"its longest side {long} exceeds the limit of {self.max_side}", "max_side", long
        elif height * width > self.max_pixels:
            problem, name, value = (f"its {height * width} pixels exceed the limit of {self.max_pixels}",
                                    "max_pixels", height * width)
        elif long > self.max_aspect * short:
            problem, name, value = (f"its aspect ratio {long / short:.4g}:1 exceeds the limit of "
                                    f"{self.max_aspect:g}:1", "max_aspect", f"{long / short:.4g}")
        else:
            return
        option = name.replace("_", "-")
        raise InputError(f"{where} is {height}x{width} (HxW): {problem}",
                         hint=f"crop or resize it, or raise the limit: Classifier.load(..., {name}={value}) "
                              f"or semobridge-run --{option} {value} (the model's resize costs grow with the image)")


def overrides(max_side: int | None = None, max_pixels: int | None = None,
              max_aspect: float | None = None) -> dict[str, float]:
    """The caller's limits, validated, for dataclasses.replace(model_limits, **overrides); None keeps the model's."""
    given = {"max_side": max_side, "max_pixels": max_pixels, "max_aspect": max_aspect}
    for name, value in given.items():
        if value is not None and not _at_least_one(value):
            raise InputError(f"{name} must be a positive number (at least 1), not {value!r}",
                             hint="max_aspect is the longest side over the shortest (1: square images only)"
                             if name == "max_aspect" else "it counts pixels")
    return {name: value for name, value in given.items() if value is not None}


def check_threads(value: Any, name: str) -> int:
    """A thread count in 0..MAX_THREADS (0: ONNX Runtime's default, one per core)."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_THREADS:
        raise InputError(f"{name} must be an integer from 0 to {MAX_THREADS} (0: ONNX Runtime's default), "
                         f"not {value!r}")
    return value


def _at_least_one(value: Any) -> bool:
    """A limit: a finite number >= 1 (an aspect ratio below 1 or a side below one pixel would refuse every image)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and 1 <= value < float("inf")

"""The validation layer: every check on what a user passes, in one place, shared by the CLIs,
the library and the exporter (the runtime package mirrors the image limits and name rules,
and a test keeps them equal).
"""
from __future__ import annotations

from .errors import InputError

#: Image limits of the fused graph's in-graph resize (documented in the export metadata, enforced
#: by both runtimes; raise them with Classifier.load(max_pixels=...) / sb_params.max_pixels).
MAX_SIDE = 16384  # longest side in pixels (the graph's dynamic H and W range)
MAX_PIXELS = 1 << 26  # H x W, 67 MP (8192 x 8192)
MAX_ASPECT = 32  # long side / short side
MAX_THREADS = 256  # intra-/inter-op thread counts


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

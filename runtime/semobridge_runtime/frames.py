"""Camera and decoder frames as they come: padded rows, RGB/BGR/RGBA/BGRA, and NV12 by the BT.601 rule.

A `Frame` is a raw buffer plus its geometry (what V4L2, GStreamer, Argus, OpenCV and Android hand over);
`Classifier.predict` and `embed` take frames alongside arrays and paths. Packed layouts are read in place
through a strided view (RGB with packed rows is not copied at all; the other packed layouts are copied
once, into the model's RGB input); NV12 is converted once.

NV12 -> RGB, the reference rule (the C library's runtime/c/src/frames.c computes the same; a test compares
them bit for bit, and this rule against a float64 BT.601 conversion):

    NV12: a Y plane (height rows of width bytes, `stride` apart), then a UV plane (height / 2 rows of
    width / 2 interleaved U (Cb), V (Cr) pairs, `uv_stride` apart). Width and height are even; each
    U, V pair is the chroma of one 2x2 block of pixels (no interpolation).

    y' = Y - y_offset, u' = U - 128, v' = V - 128
    R = clamp((cy * y' + rv * v'            + 2**15) >> 16)
    G = clamp((cy * y' - gu * u' - gv * v'  + 2**15) >> 16)
    B = clamp((cy * y' + bu * u'            + 2**15) >> 16)

    `>>` is floor division by 2**16 (exact integers, so adding 2**15 rounds to nearest, ties up) and
    clamp limits to 0..255. The coefficients are BT.601's (Kr = 0.299, Kb = 0.114) in 16-bit fixed point,
    each round(c * 2**16) of the exact rational c (`BT601`):
    full range (JPEG, "pc"):     y_offset 0,  cy = 1,       rv = 2(1-Kr), gu = 2Kb(1-Kb)/Kg, gv = 2Kr(1-Kr)/Kg,
                                 bu = 2(1-Kb), with Kg = 1 - Kr - Kb;
    limited range ("video", "tv", the default): y_offset 16, cy = 255/219, and the four chroma
                                 coefficients times 255/224 (Y in 16..235, U and V in 16..240).
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import Any, NamedTuple

import numpy as np

from .errors import InputError

#: Bytes per pixel of plane 0 for each layout (NV12: the Y plane).
LAYOUTS = {"rgb": 3, "bgr": 3, "rgba": 4, "bgra": 4, "nv12": 1}
SHIFT = 16  # fixed-point fraction bits of the NV12 coefficients


class Coefficients(NamedTuple):
    """BT.601 YCbCr -> RGB in fixed point (values times 2**SHIFT, rounded to nearest)."""

    y_offset: int
    cy: int
    rv: int
    gu: int
    gv: int
    bu: int


def _bt601(full_range: bool) -> Coefficients:
    kr, kb = Fraction(299, 1000), Fraction(114, 1000)
    kg = 1 - kr - kb
    luma, chroma = (Fraction(1), Fraction(1)) if full_range else (Fraction(255, 219), Fraction(255, 224))
    exact = (luma, 2 * (1 - kr) * chroma, 2 * kb * (1 - kb) / kg * chroma, 2 * kr * (1 - kr) / kg * chroma,
             2 * (1 - kb) * chroma)
    return Coefficients(0 if full_range else 16, *(int(c * (1 << SHIFT) + Fraction(1, 2)) for c in exact))


#: {full_range: coefficients}: limited (video) range False, full range True.
BT601 = {False: _bt601(False), True: _bt601(True)}

_LAYOUT_HINT = "use 'rgb', 'bgr' (OpenCV), 'rgba', 'bgra' (GStreamer, Android) or 'nv12' (most cameras and decoders)"
_STRIDE_HINT = ("pass the buffer's bytes per row as stride (V4L2 bytesperline, GStreamer's plane stride), "
                "or None when rows are packed")


@dataclass(frozen=True, eq=False)  # compared by identity: its buffer may be a numpy array
class Frame:
    """One frame in a raw buffer, as a camera or decoder delivers it.

    data: the pixels, any contiguous buffer (bytes, bytearray, memoryview, mmap, a uint8 numpy array); for
        NV12 the Y plane, followed by the UV plane at offset stride * height unless `uv` is given.
    width, height: in pixels (even for NV12).
    layout: "rgb", "bgr", "rgba", "bgra" (alpha ignored) or "nv12".
    stride: bytes from the start of one row to the next (>= width x bytes per pixel); None: packed rows.
    uv, uv_stride: NV12's interleaved UV plane and its row stride (default: after the Y plane, `stride`).
    full_range: NV12 only: True for full-range YUV (JPEG), False for limited "video" range (the default).

        Frame(buffer, 1280, 720, "nv12", stride=1536)      # V4L2 NV12 with padded rows
        Frame(bgr_image, bgr_image.shape[1], bgr_image.shape[0], "bgr")   # an OpenCV image

    The geometry is checked against the buffer's size when the frame is made (InputError on a mismatch);
    a model's image limits are checked when it is classified, before anything is converted.
    """

    data: Any
    width: int
    height: int
    layout: str = "rgb"
    stride: int | None = None
    uv: Any = None
    uv_stride: int | None = None
    full_range: bool = False

    def __post_init__(self) -> None:
        if self.layout not in LAYOUTS:
            raise InputError(f"unknown frame layout {self.layout!r}", hint=_LAYOUT_HINT)
        for name in ("width", "height"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise InputError(f"frame {name} must be a positive int, not {value!r}")
        if not isinstance(self.full_range, bool):
            raise InputError(f"full_range must be True or False, not {self.full_range!r}")
        nv12 = self.layout == "nv12"
        if nv12 and (self.width % 2 or self.height % 2):
            raise InputError(f"an NV12 frame needs an even width and height (its chroma covers 2x2 blocks), "
                             f"got {self.width}x{self.height} (WxH)",
                             hint="crop the frame to even sides, as cameras and decoders deliver NV12")
        if not nv12 and (self.uv is not None or self.uv_stride is not None):
            raise InputError(f"uv and uv_stride are NV12's chroma plane; a {self.layout} frame has one plane",
                             hint="leave uv and uv_stride as None, or pass layout='nv12'")
        self._plane(0)
        if nv12:
            self._plane(1)

    def _stride(self, plane: int) -> int:
        row = self.width * LAYOUTS[self.layout]
        given = self.stride if plane == 0 or self.uv_stride is None else self.uv_stride
        name = "stride" if plane == 0 or self.uv_stride is None else "uv_stride"
        if given is None:
            return row
        if isinstance(given, bool) or not isinstance(given, int) or given < row:
            what = f"{self.width} NV12 {'luma' if plane == 0 else 'chroma'} bytes" if self.layout == "nv12" else \
                f"{self.width} {self.layout} pixels of {LAYOUTS[self.layout]} bytes"
            raise InputError(f"frame {name} {given!r} is smaller than a row of {what} ({row} bytes)", hint=_STRIDE_HINT)
        return given

    def _buffer(self, plane: int) -> np.ndarray:
        """The bytes of plane 0 (data) or plane 1 (uv, else data after the Y plane), as uint8 without a copy."""
        name = "uv" if plane == 1 and self.uv is not None else "data"
        source = getattr(self, name)
        if source is None:
            raise InputError(f"frame {name} is None", hint="pass the frame's buffer")
        if isinstance(source, np.ndarray) and source.dtype != np.uint8:
            raise InputError(f"frame {name} has dtype {source.dtype}; frames are bytes (uint8)",
                             hint="pass the raw buffer, or the array viewed as bytes: array.view(np.uint8)")
        try:
            buffer = np.frombuffer(source, np.uint8)
        except (TypeError, ValueError) as exc:
            raise InputError(f"frame {name} is not a contiguous buffer ({type(source).__name__}: {exc})",
                             hint="pass bytes, bytearray, memoryview, mmap or a C-contiguous uint8 numpy array; "
                                  "describe padded rows with stride") from None
        if plane == 1 and self.uv is None:
            buffer = buffer[self._stride(0) * self.height:]
        return buffer

    def _plane(self, plane: int) -> np.ndarray:
        """Plane 0 as [height, width, bytes per pixel], plane 1 (NV12 UV) as [height/2, width/2, 2]: strided read-only
        views of the buffer, after checking that it holds them."""
        stride, buffer = self._stride(plane), self._buffer(plane)
        rows, cols, depth = (self.height, self.width, LAYOUTS[self.layout]) if plane == 0 else \
            (self.height // 2, self.width // 2, 2)
        needed = (rows - 1) * stride + cols * depth
        if len(buffer) < needed:
            where = "data" if plane == 0 else ("uv" if self.uv is not None else "data after the Y plane")
            raise InputError(f"frame {where} holds {len(buffer)} bytes, but {'the UV plane of ' if plane else ''}a "
                             f"{self.width}x{self.height} (WxH) {self.layout} frame with stride {stride} needs {needed}",
                             hint="pass the whole buffer, or check width, height, layout and stride")
        return np.lib.stride_tricks.as_strided(buffer, (rows, cols, depth), (stride, depth, 1), writeable=False)

    def rgb(self) -> np.ndarray:
        """The frame's RGB pixels, uint8 [height, width, 3]: a view of the buffer for packed layouts (copy it to
        keep it past the buffer's life), a new array for NV12 (the reference rule above)."""
        pixels = self._plane(0)
        if self.layout == "nv12":
            return nv12_to_rgb(pixels[..., 0], self._plane(1), self.full_range)
        return pixels[..., 2::-1] if self.layout.startswith("bgr") else pixels[..., :3]


def nv12_to_rgb(y: np.ndarray, uv: np.ndarray, full_range: bool) -> np.ndarray:
    """The reference rule: luma [H, W] and chroma [H/2, W/2, 2] (U, V) uint8 -> RGB uint8 [H, W, 3]."""
    c = BT601[full_range]
    h, w = y.shape
    luma = (y.astype(np.int32) - c.y_offset) * c.cy + (1 << (SHIFT - 1))
    u = uv[..., 0].astype(np.int32) - 128
    v = uv[..., 1].astype(np.int32) - 128
    chroma = np.stack([c.rv * v, -c.gu * u - c.gv * v, c.bu * u], axis=-1)  # [H/2, W/2, 3]
    # each 2x2 block of luma [H/2, 2, W/2, 2, 1] plus its chroma [H/2, 1, W/2, 1, 3]
    rgb = luma.reshape(h // 2, 2, w // 2, 2, 1) + chroma[:, None, :, None, :]
    return np.clip(rgb >> SHIFT, 0, 255).astype(np.uint8).reshape(h, w, 3)

"""open_clip's PIL eval preprocessing as tensor ops that export to any ONNX backend.

open_clip resizes the shorter side to S with PIL's antialiased bicubic filter, centre-crops
SxS, scales to [0, 1] and normalises. PIL resamples separably (horizontal pass, then
vertical) and stores each pass as uint8. Both passes are written here as banded matrix
products: the S output pixels the crop keeps are split into blocks of BAND, and each block
multiplies only its own input window (the pixels its filter taps reach) by PIL's weights,
computed in the graph from the (symbolic) input size, with PIL's rounding after each pass.
The work and the weights grow with the pixels the filter reads, not with S x the input side
(a dense pass over a 12 MP photo is 16 GFLOP; the band is 1 GFLOP). This matches PIL to within
one grey level (a flip at a rounding boundary) on every backend, where the ONNX `Resize` op
with `antialias=1` is rejected by TensorRT's parser and ignored or wrong on some other runtimes.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Sequence

import torch
from torch import nn

CUBIC_A = -0.5  # PIL's (and torch's antialiased) bicubic coefficient
SUPPORT = 2  # PIL's bicubic support, in input pixels before widening
BAND = 16  # output pixels per block of the banded resize
DESCRIPTION = "shorter side to {S}, bicubic antialias (PIL), centre crop {S}x{S}"

Size = int | torch.SymInt


def resized_length(length: Size, short: Size, size: int) -> Size:
    """torchvision's rule: the shorter side becomes `size`, the other int(size * long / short)."""
    return (size * length) // short


def crop_start(length: Size, size: int) -> Size:
    """torchvision's centre crop offset int(round((length - size) / 2.0)), round half to even.

    Written with floor division only (no modulo), so it exports as plain integer ops.
    """
    excess = length - size
    half = excess // 2
    odd_excess = excess - 2 * half
    odd_half = half - 2 * (half // 2)
    return half + odd_excess * odd_half


def bicubic(t: torch.Tensor, a: float = CUBIC_A) -> torch.Tensor:
    """PIL's bicubic filter (support 2)."""
    t = t.abs()
    near = ((a + 2) * t - (a + 3)) * t * t + 1
    far = (((t - 5) * t + 8) * t - 4) * a
    return torch.where(t < 1, near, torch.where(t < 2, far, torch.zeros_like(t)))


@dataclass
class Band:
    """One pass of the resize, `in_length` -> `out_length` pixels (0-d int64 tensors), for the `count` output
    pixels from `first` (the ones the crop keeps), in blocks of BAND outputs, each computed from its own
    window of `length` input pixels.

    A block's window covers PIL's taps of all its outputs (see `length`) and lies inside the input;
    PIL's weights of the other pixels of the window are exactly 0. Blocks past the crop repeat its last
    pixel; the caller cuts them off.
    """

    in_length: torch.Tensor
    out_length: torch.Tensor
    first: torch.Tensor
    count: int

    @property
    def _reach(self) -> torch.Tensor:
        """2 x SUPPORT x max(in, out): the taps of one output span _reach / out input pixels."""
        return 2 * SUPPORT * torch.maximum(self.in_length, self.out_length)

    @cached_property
    def length(self) -> Size:
        """Input pixels per block window: the span of the taps of BAND consecutive outputs, at most the input.

        Output j reads PIL's taps [xmin_j, xmax_j) = floor((j + 0.5) * in / out -+ 2 x max(in / out, 1) + 0.5),
        so BAND outputs read fewer than ((BAND - 1) * in + 4 * max(in, out)) / out + 1 pixels. A size read
        from a tensor (an opaque SymInt while exporting: symbolic reasoning on the formula takes minutes).
        """
        span = ((BAND - 1) * self.in_length + self._reach) // self.out_length + 1
        length = torch.minimum(self.in_length, span).item()
        torch._check(length >= 1)
        return length

    @property
    def blocks(self) -> int:
        return -(-self.count // BAND)

    def _outputs(self) -> torch.Tensor:
        """Index of every block's output pixels beyond the crop's first [blocks, BAND] (int64)."""
        return torch.arange(self.blocks * BAND, device=self.in_length.device).clamp(max=self.count - 1).reshape(self.blocks, BAND)

    def starts(self) -> torch.Tensor:
        """First input pixel of every block's window [blocks]: PIL's xmin of the block's first output, kept
        inside the input."""
        j = self.first + self._outputs()[:, 0]
        xmin = ((2 * j + 1) * self.in_length + self.out_length - self._reach) // (2 * self.out_length)
        return xmin.clamp(min=0).minimum(self.in_length - self.length)

    def weights(self, starts: torch.Tensor) -> torch.Tensor:
        """PIL's weights [blocks, BAND, length] of every block's outputs over its window: the filter at each tap,
        normalised over the taps, as PIL's `precompute_coeffs`.

        Distances from taps to centres are computed from each window's start, split exactly in integers:
        in float32 a centre near pixel 16000 is off by 1e-3 pixel, enough to flip roundings."""
        outputs = self._outputs()
        # centre of output j = (j + 0.5) * in / out = whole + part / (2 out), for each block's first output
        numerator = (2 * (self.first + outputs[:, 0]) + 1) * self.in_length
        whole = numerator // (2 * self.out_length)
        part = numerator - whole * 2 * self.out_length
        to_centre = (whole - starts).to(torch.float32) + part.to(torch.float32) / (2 * self.out_length).to(torch.float32)
        scale = self.in_length.to(torch.float32) / self.out_length.to(torch.float32)
        stretch = scale.clamp(min=1.0)  # the filter widens when downscaling (antialias)
        centres = to_centre[:, None] + (outputs - outputs[:, :1]).to(torch.float32) * scale  # from each window's start
        # integer ranges cast to float: TensorRT builds float Range only with constant bounds
        taps = torch.arange(self.length, device=starts.device).to(torch.float32) + 0.5
        w = bicubic((taps[None, None, :] - centres[:, :, None]) / stretch)
        return w / w.sum(dim=2, keepdim=True)


def to_uint8_range(x: torch.Tensor) -> torch.Tensor:
    """What PIL does after each pass: round half up (its fixed-point `(ss + half) >> bits`) and clip to 0..255
    (kept as float)."""
    return (x + 0.5).floor().clamp(0, 255)


class Preprocess(nn.Module):
    """uint8 RGB images [N, H, W, 3] -> normalised float32 [N, 3, S, S], as open_clip's PIL eval transform."""

    def __init__(self, image_size: int, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        self.image_size = int(image_size)
        self.register_buffer("mean", torch.tensor([float(m) for m in mean]).reshape(1, 3, 1, 1) * 255)
        self.register_buffer("std", torch.tensor([float(s) for s in std]).reshape(1, 3, 1, 1) * 255)

    def bands(self, h: Size, w: Size) -> tuple[Band, Band]:
        """The vertical and horizontal passes for an h x w input."""
        S = self.image_size
        passes = []
        for length, other in ((h, w), (w, h)):
            size = torch.scalar_tensor(length, dtype=torch.int64, device=self.mean.device)
            short = torch.minimum(size, torch.scalar_tensor(other, dtype=torch.int64, device=self.mean.device))
            out = resized_length(size, short, S)
            passes.append(Band(size, out, crop_start(out, S), S))
        return passes[0], passes[1]

    def pixels(self, image: torch.Tensor) -> torch.Tensor:
        """The resized, cropped image as float grey levels 0..255 [N, 3, S, S] (no normalisation)."""
        S = self.image_size
        x = image.to(torch.float32)  # in ONNX after the window cuts (onnx_graph.to_onnx), first for TensorRT
        h, w = x.shape[1], x.shape[2]
        down, across = self.bands(h, w)
        rows = down.starts()  # the vertical pass reads rows [rows[0], rows[-1] + down.length) of the horizontal one
        top, span = rows[0].item(), (rows[-1] - rows[0]).item() + down.length
        torch._check(top >= 0)
        torch._check(span >= 1)
        torch._check(top <= h - span)
        starts = across.starts()
        weights = across.weights(starts).transpose(1, 2).unbind(0)  # per block [length, BAND]
        length = across.length
        torch._check(length <= w)
        blocks = []
        for start, weight in zip(starts.tolist(), weights):  # horizontal pass first, as PIL: each block's window
            torch._check(start >= 0)
            torch._check(start <= w - length)
            window = x[:, :, start:start + length][:, top:top + span]  # one cut in ONNX (rewrites.fuse_slices)
            blocks.append(window.permute(0, 3, 1, 2) @ weight)  # NHWC -> NCHW
        x = to_uint8_range(torch.cat(blocks, dim=3)[..., :S])  # [N, 3, span, S]
        index = (rows - rows[0])[:, None] + torch.arange(down.length, device=x.device)  # [blocks, length]
        x = down.weights(rows) @ x[:, :, index]  # [N, 3, blocks, BAND, S]
        return to_uint8_range(x.flatten(2, 3)[:, :, :S])

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return (self.pixels(image) - self.mean) / self.std

    def undo(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised [N, 3, S, S] -> grey levels 0..255 (to compare against other preprocessing)."""
        return x * self.std + self.mean

    def describe(self) -> str:
        return DESCRIPTION.format(S=self.image_size)

"""open_clip's PIL eval preprocessing as tensor ops that export to any ONNX backend.

open_clip resizes the shorter side to S with PIL's antialiased bicubic filter, centre-crops
SxS, scales to [0, 1] and normalises. PIL resamples separably (horizontal pass, then
vertical) and stores each pass as uint8. Both passes are written here as matrix products
with weight matrices computed in the graph from the (symbolic) input size, only for the
rows and columns the crop keeps, with PIL's rounding after each pass. This matches PIL to
within one grey level (a flip at a rounding boundary) on every backend, where the ONNX
`Resize` op with `antialias=1` is rejected by TensorRT's parser and ignored or wrong on
some other runtimes.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

CUBIC_A = -0.5  # PIL's (and torch's antialiased) bicubic coefficient
DESCRIPTION = "shorter side to {S}, bicubic antialias (PIL), centre crop {S}x{S}"


def resized_length(length: int | torch.SymInt, short: int | torch.SymInt, size: int) -> int | torch.SymInt:
    """torchvision's rule: the shorter side becomes `size`, the other int(size * long / short)."""
    return (size * length) // short


def crop_start(length: int | torch.SymInt, size: int) -> int | torch.SymInt:
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


def resample_weights(
    in_length: int | torch.SymInt,
    out_length: int | torch.SymInt,
    start: int | torch.SymInt,
    count: int,
    device: torch.device | None = None,
) -> torch.Tensor:
    """Weights [count, in_length] of output pixels start..start+count of an antialiased
    bicubic resize in_length -> out_length, exactly as PIL's `precompute_coeffs`."""
    scale = in_length / out_length
    stretch = torch.sym_max(scale, 1.0)  # the filter widens when downscaling (antialias)
    # integer ranges cast to float: TensorRT builds float Range only with constant bounds
    centre = (torch.arange(count, device=device).to(torch.float32) + (start + 0.5)) * scale
    source = torch.arange(in_length, device=device).to(torch.float32) + 0.5
    w = bicubic((source[None, :] - centre[:, None]) / stretch)
    return w / w.sum(dim=1, keepdim=True)


def _to_uint8_range(x: torch.Tensor) -> torch.Tensor:
    """What PIL does after each pass: round and clip to 0..255 (kept as float)."""
    return x.round().clamp(0, 255)


class Preprocess(nn.Module):
    """uint8 RGB images [N, H, W, 3] -> normalised float32 [N, 3, S, S], as open_clip's PIL eval transform."""

    def __init__(self, image_size: int, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        self.image_size = int(image_size)
        self.register_buffer("mean", torch.tensor([float(m) for m in mean]).reshape(1, 3, 1, 1) * 255)
        self.register_buffer("std", torch.tensor([float(s) for s in std]).reshape(1, 3, 1, 1) * 255)

    def pixels(self, image: torch.Tensor) -> torch.Tensor:
        """The resized, cropped image as float grey levels 0..255 [N, 3, S, S] (no normalisation)."""
        S = self.image_size
        x = image.to(torch.float32).permute(0, 3, 1, 2)  # cast first: TensorRT takes uint8 only into a Cast
        h, w = x.shape[2], x.shape[3]
        short = torch.sym_min(h, w)
        new_h, new_w = resized_length(h, short, S), resized_length(w, short, S)
        across = resample_weights(w, new_w, crop_start(new_w, S), S, x.device)  # [S, W]
        x = _to_uint8_range(x @ across.T)  # horizontal pass first, as PIL
        down = resample_weights(h, new_h, crop_start(new_h, S), S, x.device)  # [S, H]
        return _to_uint8_range(down @ x)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return (self.pixels(image) - self.mean) / self.std

    def undo(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised [N, 3, S, S] -> grey levels 0..255 (to compare against other preprocessing)."""
        return x * self.std + self.mean

    def describe(self) -> str:
        return DESCRIPTION.format(S=self.image_size)

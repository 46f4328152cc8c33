"""The semantic modality bridge: image embedding -> pseudo EOS token -> text modality."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

PINV_ATOL = 0.3  # singular values of W below this are treated as zero


def truncated_pinv(text_projection: torch.Tensor, atol: float = PINV_ATOL) -> torch.Tensor:
    """W⁺ = pinv(W) [d, d_t], singular values below `atol` treated as zero."""
    return torch.linalg.pinv(text_projection.double(), atol=atol).to(text_projection.dtype)


class Bridge(nn.Module):
    """bridge(x, b) = L · n(x W⁺ + b) · W (docs/method.md, "The bridge").

    `pinv` is a buffer for training-free SeMoBridge and a parameter for SeMoBridge-T; it is
    the truncated pseudo-inverse of W unless given (a trained or stored W⁺).
    """

    def __init__(self, text_projection: torch.Tensor, eos_length: float, trainable: bool = False, pinv: torch.Tensor | None = None):
        super().__init__()
        W = text_projection.detach().float()
        self.register_buffer("text_projection", W)
        self.register_buffer("eos_length", torch.tensor(float(eos_length)))
        pinv = truncated_pinv(W) if pinv is None else pinv.detach().float().clone()
        if trainable:
            self.pinv = nn.Parameter(pinv)
        else:
            self.register_buffer("pinv", pinv)

    def pseudo_eos(self, x: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        """ê = L · n(x W⁺ + b): a pseudo EOS token [.., d_t]."""
        u = x @ self.pinv
        if bias is not None:
            u = u + bias
        return self.eos_length * F.normalize(u, dim=-1)

    def forward(self, x: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        return self.pseudo_eos(x, bias) @ self.text_projection

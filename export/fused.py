"""The fused classifier: raw pixels -> class scores, label and embedding in one module."""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from semobridge.backbones import Backbone
from semobridge.model import SeMoBridge

from .attention import with_standard_attention
from .preprocess import Preprocess

INPUT_KINDS = ("uint8", "float")
OUTPUT_NAMES = ("scores", "label", "embedding")


class FusedClassifier(nn.Module):
    """uint8 RGB [N, H, W, 3] (or normalised float [N, 3, S, S]) -> (scores [N, C], label [N], embedding [N, d]).

    Holds CPU float32 copies of the backbone's image encoder and of the head, so exporting
    never touches the caller's models.
    """

    output_names: tuple[str, ...] = OUTPUT_NAMES  # what forward returns, in order (the ONNX graph's output names)

    def __init__(self, head: SeMoBridge, backbone: Backbone, input_kind: str = "uint8"):
        super().__init__()
        if input_kind not in INPUT_KINDS:
            raise ValueError(f"input kind {input_kind!r} is not one of {', '.join(INPUT_KINDS)}")
        head.check_backbone(backbone)
        self.input_kind = input_kind
        self.image_size = backbone.image_size
        self.preprocess = Preprocess(backbone.image_size, backbone.mean, backbone.std) if input_kind == "uint8" else None
        self.encoder = with_standard_attention(copy.deepcopy(backbone.model.visual)).float().cpu().eval().requires_grad_(False)
        self.head = copy.deepcopy(head).float().cpu().eval().requires_grad_(False)
        self.eval()

    @property
    def num_classes(self) -> int:
        return self.head.num_classes

    @property
    def embedding_dim(self) -> int:
        return int(self.head.image_prototypes.shape[1])

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.preprocess(image) if self.preprocess is not None else image
        q = self.encoder(x).float()
        scores = self.head(q)
        return scores, scores.argmax(dim=-1), F.normalize(q, dim=-1)

    def example_input(self, batch: int = 2, size: tuple[int, int] | None = None) -> torch.Tensor:
        """An input of the right kind for tracing (`size` = H, W of uint8 images)."""
        S = self.image_size
        if self.input_kind == "float":
            return torch.zeros(batch, 3, S, S)
        h, w = size or (S + 37, S + 91)  # not square, not S: no accidental specialisation
        return torch.randint(0, 256, (batch, h, w, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))

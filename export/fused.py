"""The fused classifier: raw pixels -> class scores, label and embeddings in one module.

The head's per-class tensors (docs/method.md's T, P, I and the class KL) are inputs of the fused
module, so the exported graph serves any class set; the fitted values are their defaults.
"""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from semobridge.backbones import Backbone
from semobridge_runtime.contract import HEAD_INPUTS, OUTPUTS
from semobridge_runtime.metadata import INPUT_KINDS

from semobridge.blend import affinities, blend
from semobridge.model import SeMoBridge

from .attention import with_standard_attention
from .preprocess import Preprocess

#: graph outputs (semobridge_runtime.contract.OUTPUTS): blend scores [N, C], argmax label [N], n(q) [N, d], the
#: image embedding q itself [N, d] (docs/method.md's F, NOT normalised) and bridge(q) [N, d] (b = 0, not normalised):
#: class enrolment averages these two into I_c and P_c, so the runtime holds no copy of the bridge; the head's
#: per-class inputs (contract.HEAD_INPUTS: all float32, class count C first), in forward's order
OUTPUT_NAMES = OUTPUTS


class FusedClassifier(nn.Module):
    """uint8 RGB [N, H, W, 3] (or normalised float [N, 3, S, S]) and optionally a class set
    -> (scores [N, C], label [N], embedding [N, d], features [N, d], bridged_features [N, d]).

    Holds CPU float32 copies of the backbone's image encoder and of the head, so exporting
    never touches the caller's models. Class-set tensors left out are the fitted ones.
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

    def fitted_classes(self) -> dict[str, torch.Tensor]:
        """The fitted class set: HEAD_INPUTS name -> tensor (the graph inputs' defaults)."""
        h = self.head
        return dict(zip(HEAD_INPUTS, (h.text_classifier, h.bridged_prototypes, h.image_prototypes, h.class_kl)))

    def classify(self, q: torch.Tensor, *classes: torch.Tensor | None) -> torch.Tensor:
        """Blend scores [N, C] of image embeddings q [N, d] against a class set (HEAD_INPUTS order;
        the fitted tensors where none is given)."""
        given = classes + (None,) * (len(HEAD_INPUTS) - len(classes))
        T, P, I, kl = (f if g is None else g for g, f in zip(given, self.fitted_classes().values()))
        return blend(affinities(q, T, P, I, self.head.bridge), kl, self.head.params)

    def forward(
        self,
        image: torch.Tensor,
        text_classifier: torch.Tensor | None = None,
        bridged_prototypes: torch.Tensor | None = None,
        image_prototypes: torch.Tensor | None = None,
        class_kl: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.preprocess(image) if self.preprocess is not None else image
        q = self.encoder(x).float()
        scores = self.classify(q, text_classifier, bridged_prototypes, image_prototypes, class_kl)
        return scores, scores.argmax(dim=-1), F.normalize(q, dim=-1), q, self.head.bridge(q)

    def example_input(self, batch: int = 2, size: tuple[int, int] | None = None) -> torch.Tensor:
        """An input of the right kind for tracing (`size` = H, W of uint8 images)."""
        S = self.image_size
        if self.input_kind == "float":
            return torch.zeros(batch, 3, S, S)
        h, w = size or (S + 37, S + 91)  # not square, not S: no accidental specialisation
        return torch.randint(0, 256, (batch, h, w, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))

"""The fused classifier: raw pixels -> class scores, label, embeddings and the open-set decision in one module.

The head's per-class tensors (docs/method.md's T, P, I and the class KL) are inputs of the fused
module, so the exported graph serves any class set; the fitted values are their defaults. So are the
open-set temperature and threshold (semobridge_runtime.openset): the graph computes the calibrated
probabilities and whether each image is known ONCE, for every front-end (Python, C, serving, Triton).
"""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from semobridge.backbones import Backbone
from semobridge_runtime.contract import DECISION_INPUTS, DECISION_OUTPUTS, HEAD_INPUTS, OUTPUTS
from semobridge_runtime.metadata import INPUT_KINDS

from semobridge.blend import affinities, blend
from semobridge.model import SeMoBridge

from .attention import with_standard_attention
from .preprocess import Preprocess

#: graph outputs (semobridge_runtime.contract.OUTPUTS): blend scores [N, C], argmax label [N] (whatever the
#: decision: plain ONNX Runtime users index names with it), n(q) [N, d], the image embedding q itself [N, d]
#: (docs/method.md's F, NOT normalised) and bridge(q) [N, d] (b = 0, not normalised): class enrolment averages these
#: two into I_c and P_c, so the runtime holds no copy of the bridge; then the open-set decision
#: (contract.DECISION_OUTPUTS): probabilities softmax(scores / T) [N, C] and known [N] (top probability >= threshold);
#: the head's per-class inputs (contract.HEAD_INPUTS: all float32, class count C first), in forward's order
OUTPUT_NAMES = OUTPUTS


class FusedClassifier(nn.Module):
    """uint8 RGB [N, H, W, 3] (or normalised float [N, 3, S, S]) and optionally a class set
    -> (scores [N, C], label [N], embedding [N, d], features [N, d], bridged_features [N, d], probabilities [N, C],
    known [N]).

    Holds CPU float32 copies of the backbone's image encoder and of the head, so exporting
    never touches the caller's models. Class-set tensors left out are the fitted ones; a temperature
    or threshold left out is the fit's calibration (T = 1, threshold 0: all known, when uncalibrated).
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

    def decision_defaults(self) -> dict[str, torch.Tensor]:
        """DECISION_INPUTS name -> float32 scalar: the fit's temperature and threshold (the graph inputs' defaults);
        none for a module that gives no decision outputs (the benchmarks' bare encoder, head alone)."""
        if not set(DECISION_OUTPUTS) <= set(self.output_names):
            return {}
        calibration = self.head.info.open_set or {"temperature": 1.0, "threshold": 0.0}
        return {name: torch.tensor(float(calibration[name])) for name in DECISION_INPUTS}

    def graph_defaults(self) -> dict[str, torch.Tensor]:
        """Every graph input's default but the image's: the fitted classes, then the calibration."""
        return self.fitted_classes() | self.decision_defaults()

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
        temperature: torch.Tensor | None = None,
        threshold: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, ...]:
        x = self.preprocess(image) if self.preprocess is not None else image
        q = self.encoder(x).float()
        scores = self.classify(q, text_classifier, bridged_prototypes, image_prototypes, class_kl)
        defaults = self.decision_defaults()
        temperature = defaults["temperature"] if temperature is None else temperature
        threshold = defaults["threshold"] if threshold is None else threshold
        # semobridge_runtime.openset.decide is the reference (tests/runtime/test_front_ends.py checks every front-end)
        probabilities = torch.softmax(scores / temperature, dim=-1)
        known = probabilities.max(dim=-1).values >= threshold
        return scores, scores.argmax(dim=-1), F.normalize(q, dim=-1), q, self.head.bridge(q), probabilities, known

    def example_input(self, batch: int = 2, size: tuple[int, int] | None = None) -> torch.Tensor:
        """An input of the right kind for tracing (`size` = H, W of uint8 images)."""
        S = self.image_size
        if self.input_kind == "float":
            return torch.zeros(batch, 3, S, S)
        h, w = size or (S + 37, S + 91)  # not square, not S: no accidental specialisation
        return torch.randint(0, 256, (batch, h, w, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))

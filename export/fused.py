"""The fused classifier: raw pixels -> class scores, label, embeddings and the open-set decision in one module.

The head's per-class tensors (docs/method.md's T, P, I and the class KL) are inputs of the fused
module, so the exported graph serves any class set; the fitted values are their defaults. So are the
open-set temperature, threshold and MCM weight (semobridge_runtime.openset): the graph computes the calibrated
probabilities, the chosen abstention score and whether each image is known ONCE, for every front-end (Python, C,
serving, Triton).
"""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from semobridge.backbones import Backbone
from semobridge_runtime.contract import DECISION_OUTPUTS, HEAD_INPUTS, MCM_WEIGHT, OUTPUTS, TEMPERATURE, THRESHOLD
from semobridge_runtime.metadata import INPUT_KINDS
from semobridge_runtime.openset import MCM_TAU, SCORE, mcm_weight

from semobridge.blend import affinities, blend
from semobridge.model import SeMoBridge

from .attention import with_standard_attention
from .preprocess import Preprocess

#: graph outputs (semobridge_runtime.contract.OUTPUTS): blend scores [N, C], argmax label [N] (whatever the
#: decision: plain ONNX Runtime users index names with it), n(q) [N, d], the image embedding q itself [N, d]
#: (docs/method.md's F, NOT normalised) and bridge(q) [N, d] (b = 0, not normalised): class enrolment averages these
#: two into I_c and P_c, so the runtime holds no copy of the bridge; then the open-set decision
#: (contract.DECISION_OUTPUTS): probabilities softmax(scores / T) [N, C], known [N] (open_set_score >= threshold) and
#: open_set_score [N] = (1 - w)·max_c probabilities + w·max_c softmax(n(q)·T_c / MCM_TAU) (w: the mcm_weight input);
#: the head's per-class inputs (contract.HEAD_INPUTS: all float32, class count C first), in forward's order
OUTPUT_NAMES = OUTPUTS


class FusedClassifier(nn.Module):
    """uint8 RGB [N, H, W, 3] (or normalised float [N, 3, S, S]) and optionally a class set
    -> (scores [N, C], label [N], embedding [N, d], features [N, d], bridged_features [N, d], probabilities [N, C],
    known [N], open_set_score [N]).

    Holds CPU float32 copies of the backbone's image encoder and of the head, so exporting
    never touches the caller's models. Class-set tensors left out are the fitted ones; a temperature,
    threshold or MCM weight left out is the fit's calibration (T = 1, threshold 0: all known, and the top
    probability as the score, when uncalibrated).
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
        """DECISION_INPUTS name -> float32 scalar: the fit's temperature, threshold and MCM weight (openset.mcm_weight of
        its chosen score) (the graph inputs' defaults); none for a module that gives no decision outputs (the
        benchmarks' bare encoder, head alone)."""
        if not set(DECISION_OUTPUTS) <= set(self.output_names):
            return {}
        calibration = self.head.info.open_set or {"temperature": 1.0, "threshold": 0.0}
        return {TEMPERATURE: torch.tensor(float(calibration["temperature"])),
                THRESHOLD: torch.tensor(float(calibration["threshold"])),
                MCM_WEIGHT: torch.tensor(mcm_weight(calibration.get("score", SCORE)))}

    def graph_defaults(self) -> dict[str, torch.Tensor]:
        """Every graph input's default but the image's: the fitted classes, then the calibration."""
        return self.fitted_classes() | self.decision_defaults()

    def affinities(self, q: torch.Tensor, *classes: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """(cosine affinities [3, N, C], class KL [C]) of image embeddings q [N, d] against a class set
        (HEAD_INPUTS order; the fitted tensors where none is given): the blend's inputs."""
        given = classes + (None,) * (len(HEAD_INPUTS) - len(classes))
        T, P, I, kl = (f if g is None else g for g, f in zip(given, self.fitted_classes().values()))
        return affinities(q, T, P, I, self.head.bridge), kl

    def classify(self, q: torch.Tensor, *classes: torch.Tensor | None) -> torch.Tensor:
        """Blend scores [N, C] of image embeddings q [N, d] against a class set (as `affinities`)."""
        return blend(*self.affinities(q, *classes), self.head.params)

    def forward(
        self,
        image: torch.Tensor,
        text_classifier: torch.Tensor | None = None,
        bridged_prototypes: torch.Tensor | None = None,
        image_prototypes: torch.Tensor | None = None,
        class_kl: torch.Tensor | None = None,
        temperature: torch.Tensor | None = None,
        threshold: torch.Tensor | None = None,
        mcm_weight: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, ...]:
        x = self.preprocess(image) if self.preprocess is not None else image
        q = self.encoder(x).float()
        aff, kl = self.affinities(q, text_classifier, bridged_prototypes, image_prototypes, class_kl)
        scores = blend(aff, kl, self.head.params)
        defaults = self.decision_defaults()
        temperature = defaults[TEMPERATURE] if temperature is None else temperature
        threshold = defaults[THRESHOLD] if threshold is None else threshold
        w = defaults[MCM_WEIGHT] if mcm_weight is None else mcm_weight
        # semobridge_runtime.openset (open_set_score, decide) is the reference (tests/runtime/test_front_ends.py checks
        # every front-end); w = 0 or 1 gives one score exactly ((1 - 0)·p + 0·m = p in float32)
        probabilities = torch.softmax(scores / temperature, dim=-1)
        mcm = torch.softmax(aff[0] / MCM_TAU, dim=-1).max(dim=-1).values  # aff[0]: n(q)·T_c, the text cosines
        open_set_score = (1 - w) * probabilities.max(dim=-1).values + w * mcm
        known = open_set_score >= threshold
        return (scores, scores.argmax(dim=-1), F.normalize(q, dim=-1), q, self.head.bridge(q), probabilities, known,
                open_set_score)

    def example_input(self, batch: int = 2, size: tuple[int, int] | None = None) -> torch.Tensor:
        """An input of the right kind for tracing (`size` = H, W of uint8 images)."""
        S = self.image_size
        if self.input_kind == "float":
            return torch.zeros(batch, 3, S, S)
        h, w = size or (S + 37, S + 91)  # not square, not S: no accidental specialisation
        return torch.randint(0, 256, (batch, h, w, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))

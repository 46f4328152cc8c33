"""Text classifier, image and bridged prototypes, and the class weights (docs/method.md)."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from semobridge_runtime.head import kl_bits  # the KL formula's one home (torch-free; enrolment uses it too)

from .bridge import Bridge


@dataclass
class TextSide:
    """Per-class text quantities, computed once per label set."""

    classifier: torch.Tensor  # T [C, d] = n(mean_p n(e W))
    eos_target: torch.Tensor  # E [C, d_t] = n(mean_p n(e))
    eos_length: float  # L = mean_c ‖mean_p e‖


def class_means(x: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Per-class mean of the rows of x [N, k] -> [C, k]; every class must have a row."""
    sums = torch.zeros(num_classes, x.shape[1], dtype=x.dtype, device=x.device).index_add(0, labels, x)
    counts = torch.bincount(labels, minlength=num_classes).to(x.dtype)
    return sums / counts[:, None]


def prompt_embeddings(eos: torch.Tensor, text_projection: torch.Tensor) -> torch.Tensor:
    """n(e W) [M, d]: the prompts' text embeddings from their pooled EOS tokens e [M, d_t] (the exported
    text tower's output, export/text.py; the runtime averages and normalises them into T_c)."""
    return F.normalize(eos @ text_projection, dim=-1)


def text_side(eos: torch.Tensor, prompt_class: torch.Tensor, text_projection: torch.Tensor, num_classes: int) -> TextSide:
    """T, E and L from pooled EOS tokens e [M, d_t] of prompts of classes prompt_class [M]."""
    T = F.normalize(class_means(prompt_embeddings(eos, text_projection), prompt_class, num_classes), dim=-1)
    E = F.normalize(class_means(F.normalize(eos, dim=-1), prompt_class, num_classes), dim=-1)
    L = class_means(eos, prompt_class, num_classes).norm(dim=-1).mean()
    return TextSide(classifier=T, eos_target=E, eos_length=float(L))


def image_prototypes(images: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """I_c = n(mean_k F_{c,k})."""
    return F.normalize(class_means(images, labels, num_classes), dim=-1)


def bridged_prototypes(
    bridge: Bridge, images: torch.Tensor, labels: torch.Tensor, num_classes: int, class_bias: torch.Tensor | None = None
) -> torch.Tensor:
    """P_c = n(mean_k bridge(F_{c,k}, b = B_c))."""
    bias = class_bias[labels] if class_bias is not None else None
    return F.normalize(class_means(bridge(images, bias), labels, num_classes), dim=-1)


def class_kl(image_protos: torch.Tensor, text_classifier: torch.Tensor) -> torch.Tensor:
    """D_c = log2((1 + ε) / (softmax_j(I_c · T_j)[c] + ε)), in bits [C] (the formula of p -> D is the runtime's
    kl_bits, which enrolment uses on its running softmax denominators)."""
    p = torch.softmax(image_protos @ text_classifier.T, dim=-1).diagonal()
    return kl_bits(p, torch.log2)


def class_weights(kl: torch.Tensor, smoothness: float | torch.Tensor) -> torch.Tensor:
    """w_c = exp(σ · D_c)."""
    return torch.exp(smoothness * kl)

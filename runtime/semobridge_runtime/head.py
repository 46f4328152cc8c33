"""What enrolment computes on the device beside the exported graphs: means, normalisation and the class weights.

The head's maths is semobridge's (semobridge/prototypes.py, bridge.py; docs/method.md), and the runtime
does not copy it: the text tower outputs each prompt's text embedding n(e W) and the fused graph each
image's bridged features bridge(F) (both traced from the library's torch code), so a class's T, P and I
are each a normalised mean of rows a graph gives (`prototype`). The class KL's formula lives here,
torch-free, and semobridge's class_kl calls it (`kl_bits`); the running softmax denominators that let
an edit cost O(C·d) instead of a C x C product are the runtime's own (classes.py keeps them).
"""

from __future__ import annotations

from typing import Callable

import numpy as np

KL_EPS = 1e-6


def normalize(x: np.ndarray) -> np.ndarray:
    """n(x) = x / ‖x‖₂ along the last axis (a zero row stays zero, as torch's F.normalize)."""
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def prototype(rows: np.ndarray) -> np.ndarray:
    """n(mean_k x_k) [d] of one class's rows [K, d]: T_c from its prompts' text embeddings (text tower output
    `embedding`), P_c from its shots' `bridged_features` and I_c from their `features` (fused graph)."""
    return normalize(rows.mean(axis=0))


def stand_in_prototypes(text_classifier: np.ndarray, classes_T: np.ndarray, classes_P: np.ndarray,
                        classes_I: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(P_c, I_c) of a class enrolled from its name alone (no shots), docs/method.md "A class from its name":
    its text classifier T_c [d] moved by the class set's mean offset from the text classifier to the bridged
    prototypes, and to the image prototypes: P_c = n(T_c + mean_j (P_j - T_j)), I_c = n(T_c + mean_j (I_j - T_j))."""
    return (normalize(text_classifier + (classes_P - classes_T).mean(axis=0)),
            normalize(text_classifier + (classes_I - classes_T).mean(axis=0)))


def kl_bits(p, log2: Callable = np.log2):
    """D = log2((1 + ε) / (p + ε)) in bits: the class KL from p, the softmax probability of a class's own text
    classifier given its image prototype (docs/method.md). `p` may be a numpy array or, with log2=torch.log2,
    a torch tensor: semobridge's class_kl computes p with torch and calls this, so the formula exists once."""
    return log2((1 + KL_EPS) / (p + KL_EPS))


def own_probability(kl: np.ndarray) -> np.ndarray:
    """p = (1 + ε) / 2^D - ε, float64: kl_bits inverted."""
    return (1 + KL_EPS) / np.exp2(kl.astype(np.float64)) - KL_EPS


def affinity_sums(image_protos: np.ndarray, text_classifier: np.ndarray) -> np.ndarray:
    """Row sums Σ_j exp(I_c · T_j) [C]: the softmax denominators of the class KL (a float32 product,
    as semobridge's, summed in float64 so that later edits can add and subtract terms exactly)."""
    return np.exp((image_protos @ text_classifier.T).astype(np.float64)).sum(axis=1)


def own_affinities(image_protos: np.ndarray, text_classifier: np.ndarray) -> np.ndarray:
    """I_c · T_c [C], float64."""
    return np.einsum("cd,cd->c", image_protos, text_classifier).astype(np.float64)


def class_kl(image_protos: np.ndarray, text_classifier: np.ndarray, sums: np.ndarray | None = None) -> np.ndarray:
    """D_c = kl_bits(softmax_j(I_c · T_j)[c]) [C], float32.

    `sums` (affinity_sums of the same I and T) lets a caller that keeps them up to date as
    classes come and go skip the C x C product. The affinities are cosines (|I_c · T_j| <= 1),
    so the softmax needs no max subtraction.
    """
    if sums is None:
        sums = affinity_sums(image_protos, text_classifier)
    return kl_bits(np.exp(own_affinities(image_protos, text_classifier)) / sums).astype(np.float32)


def sums_from_kl(image_protos: np.ndarray, text_classifier: np.ndarray, kl: np.ndarray) -> np.ndarray | None:
    """The affinity sums recovered from the class KL in O(C·d): Σ_j exp(I_c · T_j) = exp(I_c · T_c) / p_c with
    p_c = own_probability(D_c) (within ~1e-6 relative, the float32 rounding of D). None if the KL does not
    fit (then compute affinity_sums)."""
    p = own_probability(kl)
    if not np.all(np.isfinite(p) & (p > 0)):
        return None
    return np.exp(own_affinities(image_protos, text_classifier)) / p

"""The training-free head's maths in numpy (docs/method.md), for enrolling classes on the device.

semobridge (semobridge/prototypes.py, bridge.py) is the source of truth: tests check these
functions against it number for number (tests/runtime/test_head.py), on random data and
through whole enrolments.
"""

from __future__ import annotations

import numpy as np

KL_EPS = 1e-6


def normalize(x: np.ndarray) -> np.ndarray:
    """n(x) = x / ‖x‖₂ along the last axis (a zero row stays zero, as torch's F.normalize)."""
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def text_classifier(eos: np.ndarray, text_projection: np.ndarray) -> np.ndarray:
    """T_c = n(mean_p n(e_p · W)) of one class from its prompts' pooled EOS tokens e [M, d_t]: [d]."""
    return normalize(normalize(eos @ text_projection).mean(axis=0))


def image_prototype(features: np.ndarray) -> np.ndarray:
    """I_c = n(mean_k F_k) of one class from its shots' image embeddings F [K, d] (not normalised): [d]."""
    return normalize(features.mean(axis=0))


def bridge(features: np.ndarray, pinv: np.ndarray, text_projection: np.ndarray, eos_length: float) -> np.ndarray:
    """bridge(x, b = 0) = L · n(x W⁺) · W: image embeddings [K, d] -> the text modality [K, d]."""
    return eos_length * normalize(features @ pinv) @ text_projection


def bridged_prototype(features: np.ndarray, pinv: np.ndarray, text_projection: np.ndarray, eos_length: float) -> np.ndarray:
    """P_c = n(mean_k bridge(F_k, b = 0)) of one class: [d]. New classes get no class bias (b = 0),
    also in SeMoBridge-T models, whose trained W⁺ is used as it is."""
    return normalize(bridge(features, pinv, text_projection, eos_length).mean(axis=0))


def stand_in_prototypes(text_classifier: np.ndarray, classes_T: np.ndarray, classes_P: np.ndarray,
                        classes_I: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(P_c, I_c) of a class enrolled from its name alone (no shots), docs/method.md "A class from its name":
    its text classifier T_c [d] moved by the class set's mean offset from the text classifier to the bridged
    prototypes, and to the image prototypes: P_c = n(T_c + mean_j (P_j - T_j)), I_c = n(T_c + mean_j (I_j - T_j))."""
    return (normalize(text_classifier + (classes_P - classes_T).mean(axis=0)),
            normalize(text_classifier + (classes_I - classes_T).mean(axis=0)))


def affinity_sums(image_protos: np.ndarray, text_classifier: np.ndarray) -> np.ndarray:
    """Row sums Σ_j exp(I_c · T_j) [C]: the softmax denominators of the class KL (a float32 product,
    as semobridge's, summed in float64 so that later edits can add and subtract terms exactly)."""
    return np.exp((image_protos @ text_classifier.T).astype(np.float64)).sum(axis=1)


def own_affinities(image_protos: np.ndarray, text_classifier: np.ndarray) -> np.ndarray:
    """I_c · T_c [C], float64."""
    return np.einsum("cd,cd->c", image_protos, text_classifier).astype(np.float64)


def class_kl(image_protos: np.ndarray, text_classifier: np.ndarray, sums: np.ndarray | None = None) -> np.ndarray:
    """D_c = log2((1 + ε) / (softmax_j(I_c · T_j)[c] + ε)) in bits [C], float32.

    `sums` (affinity_sums of the same I and T) lets a caller that keeps them up to date as
    classes come and go skip the C x C product. The affinities are cosines (|I_c · T_j| <= 1),
    so the softmax needs no max subtraction.
    """
    if sums is None:
        sums = affinity_sums(image_protos, text_classifier)
    p = np.exp(own_affinities(image_protos, text_classifier)) / sums
    return np.log2((1 + KL_EPS) / (p + KL_EPS)).astype(np.float32)


def sums_from_kl(image_protos: np.ndarray, text_classifier: np.ndarray, kl: np.ndarray) -> np.ndarray | None:
    """The affinity sums recovered from the class KL in O(C·d), inverting class_kl:
    p_c = (1 + ε) / 2^D_c - ε and Σ_j exp(I_c · T_j) = exp(I_c · T_c) / p_c (within ~1e-6 relative,
    the float32 rounding of D). None if the KL does not fit (then compute affinity_sums)."""
    p = (1 + KL_EPS) / np.exp2(kl.astype(np.float64)) - KL_EPS
    if not np.all(np.isfinite(p) & (p > 0)):
        return None
    return np.exp(own_affinities(image_protos, text_classifier)) / p

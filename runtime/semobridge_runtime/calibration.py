"""An edited class set's open-set calibration, recomputed in closed form without the image encoder.

A class set keeps the embeddings its temperature T, abstention score and threshold θ were calibrated on (the graph's
"features" F, not normalised, and "bridged_features" bridge(F) outputs): the fit's validation images and shots (stored with the model by
semobridge.calibrate.calibration_data), and the shots of every class enrolled since. After an edit the
held-out known images are scored against the new set exactly as the fit scores them
(semobridge.calibrate.calibrate_on: validation images by the blend, each shot leave-one-out against its
own class's prototypes recomputed without it, the class weights kept; their image-text cosines against the
set's text classifier), and openset.calibrated gives (T, score, θ): a from-scratch calibration on the same
data, in O(M·C·d) for M kept embeddings.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Mapping, Sequence

import numpy as np

from . import head, openset
from .errors import ModelError

if TYPE_CHECKING:  # classes.py imports this module
    from .classes import ClassSet

#: the tensors a model file (head.safetensors) and a class file keep them in
TENSORS = ("calibration_features", "calibration_bridged_features", "calibration_labels", "calibration_shot")
PARAMS = ("smoothness", "alpha", "beta", "gamma", "lambda1", "lambda2", "lambda3")  # the blend's, docs/method.md


@dataclass(frozen=True)
class CalibrationData:
    """Embeddings F [M, d] and bridge(F) [M, d] (float32, the graph's outputs), their class indices [M] (int64) and
    whether each is a shot [M] (bool; else a validation image). A class's shots are the ones its prototypes were
    averaged from."""

    features: np.ndarray
    bridged: np.ndarray
    labels: np.ndarray
    shot: np.ndarray

    @classmethod
    def of(cls, tensors: Mapping[str, np.ndarray], classes: int, dim: int, source: str) -> "CalibrationData | None":
        """From a file's tensors (None when it has none of them); ModelError when they do not fit the class set."""
        present = [n for n in TENSORS if n in tensors]
        if not present:
            return None
        f, b, y, s = (tensors.get(n) for n in TENSORS)
        ok = (len(present) == len(TENSORS) and f.dtype == b.dtype == np.float32 and y.dtype == np.int64
              and s.dtype == np.uint8 and f.ndim == 2 and f.shape[1] == dim and b.shape == f.shape
              and y.shape == s.shape == (len(f),)
              and bool(np.all((y >= 0) & (y < classes))) and bool(np.all(s <= 1)))
        if not ok:
            found = ", ".join(f"{n} {tensors[n].dtype}{list(tensors[n].shape)}" for n in present)
            raise ModelError(f"{source} has unusable calibration data ({found}; "
                             f"expected float32 [M, {dim}] twice, int64 [M] in [0, {classes}) and uint8 [M] of 0/1)",
                             hint="write it again from the model (Classifier.save_classes), or re-export the model")
        return cls(np.ascontiguousarray(f), np.ascontiguousarray(b), np.ascontiguousarray(y), s.astype(bool))

    def tensors(self) -> dict[str, np.ndarray]:
        return dict(zip(TENSORS, (self.features, self.bridged, self.labels, self.shot.astype(np.uint8))))

    def shots_of(self, c: int) -> int:
        return int(np.sum(self.shot & (self.labels == c)))

    def with_shots(self, c: int, features: np.ndarray, bridged: np.ndarray) -> "CalibrationData":
        """Plus shots F [K, d] of class c, and their bridge(F) [K, d]."""
        return CalibrationData(np.vstack([self.features, np.asarray(features, np.float32)]),
                               np.vstack([self.bridged, np.asarray(bridged, np.float32)]),
                               np.append(self.labels, np.full(len(features), c, np.int64)),
                               np.append(self.shot, np.ones(len(features), bool)))

    def without(self, c: int) -> "CalibrationData":
        """Without class c's images; the classes after it move down by one."""
        keep = self.labels != c
        labels = self.labels[keep]
        return CalibrationData(self.features[keep], self.bridged[keep], labels - (labels > c), self.shot[keep])


@dataclass(frozen=True)
class Blend:
    """The fitted head's scoring of embeddings against a class set with the blend's hyper-parameters
    (docs/method.md "Scores of a query q"; the graph computes the same, tests hold the two to 1e-6)."""

    params: tuple[float, ...]  # PARAMS order

    def scores(self, q: np.ndarray, qb: np.ndarray, T: np.ndarray, P: np.ndarray, I: np.ndarray, kl: np.ndarray) -> np.ndarray:
        """z [N, C] of normalised queries q and normalised bridged queries qb [N, d], float32 (as the graph)."""
        return self.blend(q @ T.T, q @ P.T, qb @ I.T, kl)

    def blend(self, a1: np.ndarray, a2: np.ndarray, a3: np.ndarray, kl: np.ndarray) -> np.ndarray:
        """z from the three affinities n(q)·T, n(q)·P, n(bridge(q))·I [N, C] and the class KL [C], float32:
        λ1 e^(-α(1 - a1)) + w (λ2 e^(-β(1 - a2)) + λ3 e^(-γ(1 - a3))), w = e^(σ D) (in place on a1, a2, a3)."""
        sigma, alpha, beta, gamma, l1, l2, l3 = (np.float32(v) for v in self.params)
        w = np.exp(sigma * np.asarray(kl, np.float32))
        for a, s in ((a1, alpha), (a2, beta), (a3, gamma)):
            a -= 1
            a *= s
            np.exp(a, out=a)
        a2 *= l2
        a3 *= l3
        a2 += a3
        a2 *= w
        a1 *= l1
        a1 += a2
        return a1


def held_out_scores(classes: ClassSet, data: CalibrationData, blend: Blend) -> tuple[openset.Held | None, openset.Held]:
    """(the validation images or None, the shots scored leave-one-out), with their blend scores, image-text cosines
    n(q)·T_c and labels: shots of classes with a single shot are left out."""
    T, P, I, kl = (np.asarray(a, np.float32) for a in (classes.text_classifier, classes.bridged_prototypes,
                                                         classes.image_prototypes, classes.class_kl))
    F, bridged = np.asarray(data.features, np.float32), np.asarray(data.bridged, np.float32)
    q, qb = head.normalize(F), head.normalize(bridged)
    val = ~data.shot
    val_part = openset.Held(blend.scores(q[val], qb[val], T, P, I, kl), q[val] @ T.T, data.labels[val]) if val.any() else None
    shot = data.shot & (np.bincount(data.labels[data.shot], minlength=len(T))[data.labels] > 1)
    y = data.labels[shot]
    a1, a2, a3 = q[shot] @ T.T, q[shot] @ P.T, qb[shot] @ I.T
    cosines = a1.copy()  # blend works in place
    if len(y):  # own class: prototypes recomputed without the shot
        C, d = len(T), F.shape[1]
        sum_i = np.zeros((C, d), np.float32)
        sum_b = np.zeros((C, d), np.float32)
        np.add.at(sum_i, data.labels[data.shot], F[data.shot])
        np.add.at(sum_b, data.labels[data.shot], bridged[data.shot])
        rows = np.arange(len(y))
        a2[rows, y] = np.einsum("md,md->m", q[shot], head.normalize(sum_b[y] - bridged[shot]))
        a3[rows, y] = np.einsum("md,md->m", qb[shot], head.normalize(sum_i[y] - F[shot]))
    return val_part, openset.Held(blend.blend(a1, a2, a3, kl), cosines, y)


def recalibrate(classes: ClassSet, data: CalibrationData, blend: Blend, accept: float = openset.ACCEPT,
                scores: Sequence[str] = openset.SCORES) -> openset.Calibrated | None:
    """T, score and θ of `classes` from its calibration data (openset.calibrated, choosing among `scores`: those
    the graph can compute); None when nothing is held out."""
    return openset.calibrated(*held_out_scores(classes, data, blend), accept, scores)

"""Calibrate the open-set decision of a fitted head: the temperature and the "unknown" threshold.

The decision itself (semobridge_runtime.openset) is shared with the runtimes; this module finds
its two constants from the data of the fit, never from test data (docs/method.md, "The open set"):

- the temperature T minimises the negative log-likelihood of the validation images under
  softmax(z / T) (of the leave-one-out shots when there is no validation split);
- the threshold accepts `accept` of the held-out known images: the validation images (at most
  MAX_VALIDATION_PER_CLASS a class) and every shot scored leave-one-out (its own class's prototypes
  recomputed without it).

The fit stores these images' embeddings with the model (calibration_data), so that a class set edited
on the device recalibrates in closed form (semobridge_runtime.calibration) without the image encoder.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from semobridge_runtime import openset
from semobridge_runtime.openset import ACCEPT, OpenSet

from .blend import blend
from .features import FeatureSet
from .model import SeMoBridge

MAX_VALIDATION_PER_CLASS = 32  # validation images per class kept for calibration (and stored with the model)


@torch.no_grad()
def leave_one_out_scores(head: SeMoBridge, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Blend scores z [M, C] of the shots, each against its own class's image and bridged prototypes
    recomputed without it (the class weights kept); shots of classes with a single shot are left out.

    Bridged prototypes are taken with b = 0 (a SeMoBridge-T class bias is not applied here)."""
    C = head.num_classes
    counts = torch.bincount(labels, minlength=C)
    keep = counts[labels] > 1
    images, labels = images[keep], labels[keep]
    if not len(labels):
        return torch.zeros(0, C), labels
    bridged = head.bridge(images)
    sum_i = torch.zeros(C, images.shape[1]).index_add(0, labels, images)
    sum_b = torch.zeros(C, images.shape[1]).index_add(0, labels, bridged)
    aff = head.affinities(images).clone()  # [3, M, C]
    q, qb = F.normalize(images, dim=-1), F.normalize(bridged, dim=-1)
    own_p = F.normalize(sum_b[labels] - bridged, dim=-1)
    own_i = F.normalize(sum_i[labels] - images, dim=-1)
    rows = torch.arange(len(labels))
    aff[1, rows, labels] = (q * own_p).sum(-1)
    aff[2, rows, labels] = (qb * own_i).sum(-1)
    return blend(aff, head.class_kl, head.params), labels


@dataclass
class Calibration:
    """The calibrated constants and what the fit prints about them."""

    open_set: OpenSet
    ece_before: float  # on the images the temperature was fitted on, at T = 1
    ece_after: float
    images: int  # known images the threshold was calibrated on

    def describe(self) -> str:
        o = self.open_set
        return (f"probabilities: temperature {o.temperature:.4g} (NLL on {o.source.split(';')[0]}), ECE {100 * self.ece_before:.2f} % "
                f"-> {100 * self.ece_after:.2f} %; unknown below a top probability of {o.threshold:.4f} "
                f"({100 * o.accept:.0f} % of {self.images} held-out known images accepted)")


@torch.no_grad()
def calibration_data(head: SeMoBridge, features: FeatureSet) -> dict[str, torch.Tensor]:
    """What the class set keeps to recalibrate after edits (semobridge_runtime.calibration, its tensor names): every
    shot and the first MAX_VALIDATION_PER_CLASS validation images of each class (a bounded file for large
    validation splits), their features F and bridged features bridge(F, b = 0) (the graph's outputs)."""
    shots, shot_labels = features.shot_image.cpu().float(), features.shot_label.cpu()
    val = features.val_image.cpu().float() if features.has_val else shots[:0]
    val_labels = features.val_label.cpu() if features.has_val else shot_labels[:0]
    if len(val_labels):
        rank = torch.zeros_like(val_labels)
        for c in val_labels.unique():
            where = torch.nonzero(val_labels == c).flatten()
            rank[where] = torch.arange(len(where))
        keep = rank < MAX_VALIDATION_PER_CLASS
        val, val_labels = val[keep], val_labels[keep]
    F = torch.cat([val, shots])
    return {"calibration_features": F, "calibration_bridged_features": head.bridge(F).float(),
            "calibration_labels": torch.cat([val_labels, shot_labels]),
            "calibration_shot": torch.cat([torch.zeros(len(val_labels), dtype=torch.uint8),
                                           torch.ones(len(shot_labels), dtype=torch.uint8)])}


@torch.no_grad()
def calibrate_on(head: SeMoBridge, data: dict[str, torch.Tensor], accept: float = ACCEPT) -> Calibration | None:
    """Temperature and threshold from calibration data (calibration_data's tensors): the validation images
    scored by the head, the shots leave-one-out (openset.calibrated); None when nothing is held out."""
    shot = data["calibration_shot"].bool()
    features, labels = data["calibration_features"], data["calibration_labels"]
    loo_z, loo_y = leave_one_out_scores(head, features[shot], labels[shot])
    val = (head(features[~shot]).numpy().astype(np.float64), labels[~shot].numpy()) if (~shot).any() else None
    loo = (loo_z.numpy().astype(np.float64), loo_y.numpy())
    found = openset.calibrated(val, loo, accept)
    if found is None:
        return None
    temperature, threshold = found
    fit_z, fit_y = val if val is not None else loo
    before = openset.ece(openset.probabilities(fit_z, 1.0), fit_y)
    after = openset.ece(openset.probabilities(fit_z, temperature), fit_y)
    sources = [f"{len(loo_y)} leave-one-out shots"]
    if val is not None:
        sources.insert(0, f"{len(val[1])} validation images")
    source = f"{sources[0]}; threshold: " + " and ".join(sources) if len(sources) > 1 else f"{sources[0]}"
    return Calibration(OpenSet(temperature, threshold, accept, source), before, after, len(loo_y) + (len(val[1]) if val else 0))


def calibrate(head: SeMoBridge, features: FeatureSet, accept: float = ACCEPT) -> Calibration | None:
    """Temperature and threshold from the fit's own images (calibration_data); None when there are no held-out
    known images (one shot per class and no validation split: the model then has no "unknown")."""
    return calibrate_on(head, calibration_data(head, features), accept)

"""Calibrate the open-set decision of a fitted head: the temperature, the abstention score and the "unknown" threshold.

The decision itself (semobridge_runtime.openset) is shared with the runtimes; this module scores the
held-out known images of the fit, never test data, and openset.calibrated finds the constants from them
(docs/method.md, "The open set"): the validation images (at most MAX_VALIDATION_PER_CLASS a class) and
every shot scored leave-one-out (its own class's prototypes recomputed without it), with their blend scores
and image-text cosines.

The fit stores these images' embeddings with the model (calibration_data), so that a class set edited
on the device recalibrates in closed form (semobridge_runtime.calibration) without the image encoder.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from semobridge_runtime import openset
from semobridge_runtime.openset import ACCEPT, Held, OpenSet

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
    loco: dict[str, float]  # openset.choose_score's figures ({}: no leave-one-class-out)

    def describe(self) -> str:
        o = self.open_set
        what = "top probability" if o.score == "max_probability" else "MCM"
        chosen = (f"score {o.score} (leave-one-class-out AUROC: max_probability {100 * self.loco['max_probability']:.1f} %, "
                  f"mcm {100 * self.loco['mcm']:.1f} %)" if self.loco else f"score {o.score} (no leave-one-class-out: "
                  "fewer than two classes with held-out images)")
        return (f"probabilities: temperature {o.temperature:.4g} (NLL on {o.source.split(';')[0]}), ECE {100 * self.ece_before:.2f} % "
                f"-> {100 * self.ece_after:.2f} %; {chosen}; unknown below {what} {o.threshold:.4f} "
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
    """Temperature, score and threshold from calibration data (calibration_data's tensors): the validation images
    scored by the head, the shots leave-one-out, with their image-text cosines (openset.calibrated); None when
    nothing is held out."""
    shot = data["calibration_shot"].bool()
    features, labels = data["calibration_features"], data["calibration_labels"]
    loo_z, loo_y = leave_one_out_scores(head, features[shot], labels[shot])
    kept = shot.clone()
    kept[shot] = torch.bincount(labels[shot], minlength=head.num_classes)[labels[shot]] > 1  # the shots scored
    val = Held(head(features[~shot]).numpy().astype(np.float64), head.zero_shot(features[~shot]).numpy(),
               labels[~shot].numpy()) if (~shot).any() else None
    loo = Held(loo_z.numpy().astype(np.float64), head.zero_shot(features[kept]).numpy(), loo_y.numpy())
    found = openset.calibrated(val, loo, accept)
    if found is None:
        return None
    before, after = (openset.ece(openset.probabilities(found.nll_on[0], t), found.nll_on[1]) for t in (1.0, found.temperature))
    sources = [f"{len(loo_y)} leave-one-out shots"]
    if val is not None:
        sources.insert(0, f"{len(val.labels)} validation images")
    source = f"{sources[0]}; threshold: " + " and ".join(sources) if len(sources) > 1 else f"{sources[0]}"
    if found.loco:
        source += (f"; score by leave-one-class-out AUROC: max_probability {100 * found.loco['max_probability']:.1f} %, "
                   f"mcm {100 * found.loco['mcm']:.1f} %")
    return Calibration(found.open_set(source), before, after, found.images, found.loco)


def calibrate(head: SeMoBridge, features: FeatureSet, accept: float = ACCEPT) -> Calibration | None:
    """Temperature, score and threshold from the fit's own images (calibration_data); None when there are no held-out
    known images (one shot per class and no validation split: the model then has no "unknown")."""
    return calibrate_on(head, calibration_data(head, features), accept)

"""Fit SeMoBridge (training-free) or SeMoBridge-T on a FeatureSet."""
from __future__ import annotations

from dataclasses import replace
from typing import Callable

import torch

from .blend import BlendParams
from .bridge import Bridge
from .calibrate import calibrate_on, calibration_data
from .features import FeatureSet
from .model import ModelInfo, SeMoBridge
from .prototypes import bridged_prototypes, class_kl, image_prototypes, text_side
from .protocol import Protocol, get_protocol
from .search import search_blend
from .train import train_bridge
from .validate import positive

#: What a model fitted from embeddings records when the backbone is not named (it cannot be exported).
UNKNOWN_BACKBONE = {"name": "unknown (fit-features)", "pretrained": "unknown", "weights_hash": "unknown"}


def build_head(
    features: FeatureSet,
    info: ModelInfo,
    bridge: Bridge | None = None,
    class_bias: torch.Tensor | None = None,
    prototypes: torch.Tensor | None = None,
) -> SeMoBridge:
    """The SeMoBridge head from features (training-free bridge unless one is given; bridged
    prototypes from the bridge and class bias unless given)."""
    C = features.num_classes
    W = features.text_projection
    text = text_side(features.text_eos, features.text_class, W, C)
    if bridge is None:
        bridge = Bridge(W, text.eos_length)
    with torch.no_grad():
        I = image_prototypes(features.shot_image, features.shot_label, C)
        P = prototypes if prototypes is not None else bridged_prototypes(bridge, features.shot_image, features.shot_label, C, class_bias)
        kl = class_kl(I, text.classifier)
    frozen = Bridge(W, float(bridge.eos_length), pinv=bridge.pinv)
    return SeMoBridge(frozen, text.classifier, P, I, kl, info, class_bias)


def features_info(features: FeatureSet, backbone=None) -> ModelInfo:
    """ModelInfo of a fit from embeddings: the backbone they come from when known (then the model
    can be exported), else marked unknown."""
    if backbone is not None:
        identity, size, mean, std = backbone.identity(), backbone.image_size, list(backbone.mean), list(backbone.std)
    else:
        identity, size, mean, std = dict(UNKNOWN_BACKBONE), 0, [], []
    return ModelInfo(
        class_names=features.class_names, backbone=identity, image_size=size, mean=mean, std=std,
        params=BlendParams().to_dict(), shots=round(features.shots), val_source="val split" if features.has_val else "none",
    )


@torch.no_grad()
def accuracy(head: SeMoBridge, images: torch.Tensor, labels: torch.Tensor) -> float:
    """Top-1 accuracy of the blend on embeddings."""
    return float((head(images).argmax(-1) == labels).float().mean())


def fit_features(
    features: FeatureSet,
    info: ModelInfo,
    params: BlendParams | None = None,
    search_trials: int | None = None,
    search: str = "coordinate",
    train: bool = False,
    steps: int = 5000,
    csb: bool = True,
    seed: int = 0,
    train_params: BlendParams | None = None,
    keep_last_step: bool = False,
    log: Callable[[dict], None] | None = None,
    device: torch.device | str = "cpu",
    protocol: str | Protocol | None = None,
) -> SeMoBridge:
    """Fit the head. With fixed `params` no search runs; else the blend is searched on val.

    `search` is the procedure (search.SEARCH_METHODS: "coordinate", or "tpe", the published one).
    Without a validation split the defaults are used (the published code searched on test;
    we never do). `protocol` (default: paper with `train`, else consistent) decides the order
    of SeMoBridge-T's model selection and where the prototypes come from.
    """
    positive(steps, "steps")
    protocol = get_protocol(protocol, train=train)
    features = features.to(device)
    info = replace(info, protocol=protocol.name, seed=seed, csb=bool(train and csb), variant="trained" if train else "training-free")
    if train:
        result = train_bridge(
            features, steps=steps, csb=csb, seed=seed, params=train_params or BlendParams(), log=log, keep_last=keep_last_step,
            protocol=protocol,
        )
        info.kept_step, info.steps = result.kept_step, result.updates
        head = build_head(features, info, result.bridge, result.class_bias, result.prototypes)
    else:
        head = build_head(features, info)
    if params is None and features.has_val:
        params = search_blend(head, features.val_image, features.val_label, trials=search_trials, seed=seed, method=search)
    head = head.with_params(params or BlendParams())
    if features.has_val:
        head.info.val_accuracy = accuracy(head, features.val_image, features.val_label)
    head = head.cpu()
    head.calibration = calibration_data(head, features.to("cpu"))
    calibration = calibrate_on(head, head.calibration)
    if calibration is not None:
        head.info.open_set = {**calibration.open_set.to_dict(), "ece_before": calibration.ece_before,
                              "ece_after": calibration.ece_after}
    return head

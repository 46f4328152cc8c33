"""SeMoBridge-T: train W⁺ and the class-specific bias with image and text supervision."""
from __future__ import annotations

import copy
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from .blend import BlendParams, affinities, blend
from .bridge import Bridge
from .features import FeatureSet
from .prototypes import TextSide, class_kl, class_means, image_prototypes, text_side

LAMBDA_IT, LAMBDA_CONS, LAMBDA_BIAS = 0.5, 0.1, 0.1
LR, LR_START, WARMUP, WEIGHT_DECAY = 1.5e-4, 1e-5, 500, 0.01
LOSS_TERMS = ("loss", "img", "txtp", "txte", "cons", "bias")


def learning_rate(step: int) -> float:
    """1e-5 at step 0, then 1.5e-4 · e / 500 for e < 500, then 1.5e-4."""
    if step == 0:
        return LR_START
    return LR * min(step, WARMUP) / WARMUP


def losses(
    bridge: Bridge,
    class_bias: torch.Tensor | None,
    images: torch.Tensor,
    labels: torch.Tensor,
    text: TextSide,
    logit_scale: float,
) -> dict[str, torch.Tensor]:
    """Every loss term of METHOD.md ("SeMoBridge-T training"), full batch."""
    C = text.classifier.shape[0]
    classes = torch.arange(C, device=images.device)
    eos = bridge.pseudo_eos(images, class_bias[labels] if class_bias is not None else None)  # Ê [N, d_t]
    G = eos @ bridge.text_projection  # bridged shots [N, d]
    P = F.normalize(class_means(G, labels, C), dim=-1)
    terms = {
        "img": F.cross_entropy(logit_scale * F.normalize(images, dim=-1) @ P.T, labels),
        "txtp": F.cross_entropy(P @ text.classifier.T, classes),
        "txte": F.cross_entropy(F.normalize(class_means(eos, labels, C), dim=-1) @ text.eos_target.T, classes),
        "cons": F.cross_entropy(F.normalize(G, dim=-1) @ P.T, labels),
    }
    if class_bias is not None:
        norms = class_bias.norm(dim=-1)
        terms["bias"] = ((norms - norms.mean()) ** 2).mean()
    else:
        terms["bias"] = torch.zeros((), device=images.device)
    terms["loss"] = (
        LAMBDA_IT * terms["img"]
        + (1 - LAMBDA_IT) * (terms["txtp"] + terms["txte"]) / 2
        + LAMBDA_CONS * terms["cons"]
        + LAMBDA_BIAS * terms["bias"]
    )
    return terms


@torch.no_grad()
def _val_accuracy(
    bridge: Bridge, class_bias: torch.Tensor | None, features: FeatureSet, text: TextSide, I: torch.Tensor, kl: torch.Tensor, params: torch.Tensor
) -> float:
    C = features.num_classes
    bias = class_bias[features.shot_label] if class_bias is not None else None
    P = F.normalize(class_means(bridge(features.shot_image, bias), features.shot_label, C), dim=-1)
    z = blend(affinities(features.val_image, text.classifier, P, I, bridge), kl, params)
    return float((z.argmax(-1) == features.val_label).float().mean())


def train_bridge(
    features: FeatureSet,
    steps: int = 5000,
    csb: bool = True,
    seed: int = 0,
    params: BlendParams = BlendParams(),
    log: Callable[[dict], None] | None = None,
    keep_last: bool = False,
    progress: bool = True,
) -> tuple[Bridge, torch.Tensor | None]:
    """Train the bridge; return the state of the first step with the best validation accuracy.

    Step e logs the loss terms at the parameters before update e (step 0: the initial,
    training-free parameters), then updates with learning rate `learning_rate(e)`. Without a
    validation split, or with `keep_last` (published for ImageNet), the last step is kept.
    """
    torch.manual_seed(seed)
    device = features.shot_image.device
    C = features.num_classes
    text = text_side(features.text_eos, features.text_class, features.text_projection, C)
    bridge = Bridge(features.text_projection, text.eos_length, trainable=True).to(device)
    class_bias = nn.Parameter(torch.zeros(C, bridge.pinv.shape[1], device=device)) if csb else None
    trainable = [bridge.pinv] + ([class_bias] if csb else [])
    optimiser = torch.optim.AdamW(trainable, lr=LR_START, weight_decay=WEIGHT_DECAY)
    I = image_prototypes(features.shot_image, features.shot_label, C)
    kl = class_kl(I, text.classifier)
    params_t = params.to_tensor().to(device)

    best_acc, best_state = -1.0, None
    bar = tqdm(range(steps), desc="SeMoBridge-T", disable=not progress)
    for step in bar:
        terms = losses(bridge, class_bias, features.shot_image, features.shot_label, text, features.logit_scale)
        record = {"step": step, **{k: float(terms[k].detach()) for k in LOSS_TERMS}, "lr": learning_rate(step)}
        if features.has_val:
            record["val_acc"] = _val_accuracy(bridge, class_bias, features, text, I, kl, params_t)
            if record["val_acc"] > best_acc and not keep_last:
                best_acc = record["val_acc"]
                best_state = copy.deepcopy((bridge.state_dict(), class_bias.detach().clone() if csb else None))
        if log is not None:
            log(record)
        if step % 25 == 0:
            bar.set_postfix({k: f"{v:.4f}" for k, v in record.items() if k in ("loss", "img", "txtp", "txte", "cons", "val_acc")})
        if step == steps - 1:
            break
        for group in optimiser.param_groups:
            group["lr"] = record["lr"]
        optimiser.zero_grad(set_to_none=True)
        terms["loss"].backward()
        optimiser.step()
    if best_state is not None:
        bridge.load_state_dict(best_state[0])
        class_bias = best_state[1]
    return bridge, (class_bias.detach() if class_bias is not None else None)

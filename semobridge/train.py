"""SeMoBridge-T: train W⁺ and the class-specific bias with image and text supervision.

`losses` states every loss term as docs/method.md writes it. `train_bridge` minimises the same
objective with a hand-written gradient (`Objective`) that needs fewer and larger matrix
products, and selects the kept state in the order of a protocol (semobridge.protocol).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from .blend import BlendParams, blend
from .bridge import Bridge
from .features import FeatureSet
from .prototypes import TextSide, bridged_prototypes, class_kl, class_means, image_prototypes, text_side
from .protocol import PAPER, Protocol, get_protocol

LAMBDA_IT, LAMBDA_CONS, LAMBDA_BIAS = 0.5, 0.1, 0.1
LR, LR_START, WARMUP, WEIGHT_DECAY = 1.5e-4, 1e-5, 500, 0.01
LOSS_TERMS = ("loss", "img", "txtp", "txte", "cons", "bias")
PRECISIONS = ("fp32", "bf16")  # of the step's products over the N = C x K shots (Objective)


def learning_rate(step: int) -> float:
    """1e-5 at step 0, then 1.5e-4 · e / 500 for e < 500, then 1.5e-4."""
    if step == 0:
        return LR_START
    return LR * min(step, WARMUP) / WARMUP


def total_loss(img, txtp, txte, cons, bias):
    """loss = λ_it · img + (1 − λ_it) · (txtp + txte) / 2 + λ_c · cons + λ_b · bias."""
    return LAMBDA_IT * img + (1 - LAMBDA_IT) * (txtp + txte) / 2 + LAMBDA_CONS * cons + LAMBDA_BIAS * bias


def losses(
    bridge: Bridge,
    class_bias: torch.Tensor | None,
    images: torch.Tensor,
    labels: torch.Tensor,
    text: TextSide,
    logit_scale: float,
) -> dict[str, torch.Tensor]:
    """Every loss term of docs/method.md ("SeMoBridge-T training"), full batch, differentiable."""
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
    terms["loss"] = total_loss(terms["img"], terms["txtp"], terms["txte"], terms["cons"], terms["bias"])
    return terms


def _rowdot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a * b).sum(-1, keepdim=True)


def _cross_entropy_(z: torch.Tensor, target: torch.Tensor, weight: float) -> float:
    """Mean cross-entropy of the rows of z; z is overwritten by weight × its gradient."""
    rows = torch.arange(len(z), device=z.device)
    picked = z[rows, target]
    top = z.amax(dim=1, keepdim=True)
    total = z.sub_(top).exp_().sum(dim=1, keepdim=True)  # z: exp(z - max)
    loss = float((top.squeeze(1) + total.log().squeeze(1) - picked).mean())
    z.mul_(weight / len(z) / total)  # weight × softmax / rows
    z[rows, target] -= weight / len(z)
    return loss


@dataclass
class BridgeState:
    """What the parameters (W⁺, B) give the few-shot set: ê, its class means Ē and P in the d_t basis."""

    pinv: torch.Tensor  # W⁺ [d, d_t]
    bias: torch.Tensor | None  # B [C, d_t]
    u: torch.Tensor  # F W⁺ + B_y [N, d_t]
    u_norm: torch.Tensor  # ‖u‖ [N, 1]
    eos: torch.Tensor  # ê = L n(u) [N, d_t]
    mean_eos: torch.Tensor  # Ē [C, d_t]
    h: torch.Tensor  # 1 / ‖Ē W‖ [C, 1]
    Pt: torch.Tensor  # Ē h: P = Pt W [C, d_t]
    PMt: torch.Tensor  # Pt W Wᵀ [C, d_t]


class Objective:
    """The SeMoBridge-T loss and its exact gradient, written in the d_t basis, without autograd.

    With M = W Wᵀ, P = Pt W (Pt_c = Ē_c / ‖Ē_c W‖) and n(G_i) = V_i W (V_i = ê_i / ‖ê_i W‖),
    every cosine of the loss is a product in the d_t basis: s n(F)·P = (s n(F) Wᵀ) Ptᵀ with a
    constant left factor, n(G)·P = V (Pt M)ᵀ, P·T = Pt (T Wᵀ)ᵀ. One step then costs eight
    products of N rows where the autograd form of `losses` and the previous validation needed
    eleven (benchmarks/train_time.py counts them).
    """

    def __init__(self, features: FeatureSet, text: TextSide, precision: str = "fp32"):
        if precision not in PRECISIONS:
            raise ValueError(f"precision {precision!r} is not one of {', '.join(PRECISIONS)}")
        self.low = torch.bfloat16 if precision == "bf16" else None
        W = features.text_projection
        self.images, self.labels = features.shot_image, features.shot_label
        self.C = features.num_classes
        self.classes = torch.arange(self.C, device=W.device)
        self.counts = torch.bincount(self.labels, minlength=self.C).to(W.dtype)[:, None]
        self.L = text.eos_length
        self.M = W @ W.T
        self.image_side = features.logit_scale * F.normalize(self.images, dim=-1) @ W.T  # s n(F) Wᵀ [N, d_t]
        self.text_side = text.classifier @ W.T  # T Wᵀ [C, d_t]
        self.eos_target = text.eos_target
        self._cast: dict[tuple, torch.Tensor] = {}  # the constant factors (views of them included), cast once

    def _mm(self, a: torch.Tensor, b: torch.Tensor, constant: str = "") -> torch.Tensor:
        """a @ b: in fp32, or with precision bf16 from bf16 factors (oneDNN accumulates in fp32) to an fp32 result;
        the factors named in `constant` ("a", "b") never change and are cast once."""
        if self.low is None:
            return a @ b
        def low(x: torch.Tensor, keep: bool) -> torch.Tensor:
            if not keep:
                return x.to(self.low)
            key = (x.data_ptr(), tuple(x.shape), tuple(x.stride()))
            if key not in self._cast:
                self._cast[key] = x.to(self.low)
            return self._cast[key]
        return (low(a, "a" in constant) @ low(b, "b" in constant)).float()

    def state(self, pinv: torch.Tensor, bias: torch.Tensor | None) -> BridgeState:
        u = self._mm(self.images, pinv, "a")
        if bias is not None:
            u += bias[self.labels]
        u_norm = u.norm(dim=1, keepdim=True)
        eos = u * (self.L / u_norm)
        mean_eos = class_means(eos, self.labels, self.C)
        mean_eos_M = mean_eos @ self.M
        h = _rowdot(mean_eos_M, mean_eos).rsqrt()
        return BridgeState(pinv, bias, u, u_norm, eos, mean_eos, h, mean_eos * h, mean_eos_M * h)

    def loss_and_grad(self, s: BridgeState) -> tuple[dict[str, float], torch.Tensor, torch.Tensor | None]:
        """The loss terms at state s and the gradient of the total with respect to W⁺ and B."""
        eM = self._mm(s.eos, self.M, "b")
        g_norm = _rowdot(eM, s.eos).sqrt()  # ‖ê W‖ = ‖G‖
        V = s.eos / g_norm
        mean_norm = s.mean_eos.norm(dim=1, keepdim=True)
        nE = s.mean_eos / mean_norm
        # logits, each overwritten by its weighted gradient
        Gi, Gc = self._mm(self.image_side, s.Pt.T, "a"), self._mm(V, s.PMt.T)
        Gp, Ge = s.Pt @ self.text_side.T, nE @ self.eos_target.T
        terms = {
            "img": _cross_entropy_(Gi, self.labels, LAMBDA_IT),
            "txtp": _cross_entropy_(Gp, self.classes, (1 - LAMBDA_IT) / 2),
            "txte": _cross_entropy_(Ge, self.classes, (1 - LAMBDA_IT) / 2),
            "cons": _cross_entropy_(Gc, self.labels, LAMBDA_CONS),
        }
        dPt = self._mm(Gi.T, self.image_side, "b") + Gp @ self.text_side + self._mm(Gc.T, V) @ self.M
        dV = self._mm(Gc, s.PMt)
        del Gi, Gc
        # Pt = Ē h, h = ‖Ē W‖⁻¹;  n(Ē) for txte
        d_mean = s.h * (dPt - s.PMt * _rowdot(dPt, s.Pt))
        dnE = Ge @ self.eos_target
        d_mean += (dnE - nE * _rowdot(dnE, nE)) / mean_norm
        # V = ê / ‖ê W‖, ‖ê W‖² = ê M êᵀ;  Ē = class means of ê
        d_eos = (dV - eM * (_rowdot(dV, s.eos) / g_norm**2)) / g_norm
        d_eos += (d_mean / self.counts)[self.labels]
        # ê = L n(u), u = F W⁺ + B_y
        nu = s.u / s.u_norm
        du = (self.L / s.u_norm) * (d_eos - nu * _rowdot(d_eos, nu))
        d_pinv = self._mm(self.images.T, du, "a")
        d_bias = None
        if s.bias is not None:
            norms = s.bias.norm(dim=1, keepdim=True)
            terms["bias"] = float(((norms - norms.mean()) ** 2).mean())
            d_norms = LAMBDA_BIAS * 2 / self.C * (norms - norms.mean())
            d_bias = torch.zeros_like(s.bias).index_add_(0, self.labels, du)
            d_bias += torch.where(norms > 0, d_norms / norms.clamp_min(1e-30), 0.0) * s.bias
        else:
            terms["bias"] = 0.0
        terms["loss"] = total_loss(terms["img"], terms["txtp"], terms["txte"], terms["cons"], terms["bias"])
        return terms, d_pinv, d_bias


class Validation:
    """Validation accuracy of the blend with fixed hyper-parameters, for W⁺ and the prototypes Pt.

    z1 and the class weights do not depend on the parameters; n(q)·P = (n(q) Wᵀ) Ptᵀ, and the
    bridged query n(bridge(q)) = n(q W⁺ W) needs q W⁺ once, times [W Iᵀ | M].
    """

    def __init__(self, features: FeatureSet, text: TextSide, image_protos: torch.Tensor, kl: torch.Tensor, params: torch.Tensor):
        W = features.text_projection
        q = features.val_image
        self.queries, self.labels = q, features.val_label
        self.zero_shot = F.normalize(q, dim=-1) @ text.classifier.T
        self.query_side = F.normalize(q, dim=-1) @ W.T  # n(q) Wᵀ [Nv, d_t]
        self.bridged_side = torch.cat([W @ image_protos.T, W @ W.T], dim=1)  # [W Iᵀ | M] [d_t, C + d_t]
        self.kl, self.params, self.C = kl, params, len(image_protos)

    def accuracy(self, pinv: torch.Tensor, Pt: torch.Tensor) -> float:
        R = self.queries @ pinv
        RI, RM = (R @ self.bridged_side).split([self.C, R.shape[1]], dim=1)
        aff = torch.stack([self.zero_shot, self.query_side @ Pt.T, RI / _rowdot(RM, R).sqrt()])
        z = blend(aff, self.kl, self.params)
        return float((z.argmax(-1) == self.labels).float().mean())


@dataclass
class TrainResult:
    """The kept W⁺ and B, the prototypes P to use at test time, and where they came from."""

    bridge: Bridge
    class_bias: torch.Tensor | None
    prototypes: torch.Tensor  # P [C, d]
    kept_step: int  # updates applied to reach the kept state
    updates: int  # updates applied in all
    protocol: str


def train_bridge(
    features: FeatureSet,
    steps: int = 5000,
    csb: bool = True,
    seed: int = 0,
    params: BlendParams = BlendParams(),
    log: Callable[[dict], None] | None = None,
    keep_last: bool = False,
    progress: bool = True,
    protocol: str | Protocol = PAPER,
    precision: str = "fp32",
) -> TrainResult:
    """Train the bridge; keep the first state with the best validation accuracy (strictly >).

    Record e logs the loss terms at the parameters before update e (record 0: the training-free
    parameters) and the learning rate of update e. paper: `steps` updates, each followed by a
    validation (logged in record e), so the training-free state is never kept and P comes from
    the last state. consistent: validation before each update, `steps - 1` updates, P from the
    kept state. Without a validation split, or with `keep_last` (published for ImageNet), the
    last state is kept and no validation runs. precision "bf16" runs the step's products over the shots with
    bf16 factors (fp32 accumulation and results; losses, softmax, the update and validation stay fp32): for CPUs
    with bf16 matrix engines (benchmarks/train_time.py --precision bf16 measures time and result).
    """
    protocol = get_protocol(protocol)
    torch.manual_seed(seed)
    C = features.num_classes
    text = text_side(features.text_eos, features.text_class, features.text_projection, C)
    bridge = Bridge(features.text_projection, text.eos_length, trainable=True)
    pinv = bridge.pinv
    bias = nn.Parameter(torch.zeros(C, pinv.shape[1], device=pinv.device)) if csb else None
    optimiser = torch.optim.AdamW([pinv] + ([bias] if csb else []), lr=LR_START, weight_decay=WEIGHT_DECAY)
    objective = Objective(features, text, precision)
    validation = None
    if features.has_val and not keep_last:
        I = image_prototypes(features.shot_image, features.shot_label, C)
        validation = Validation(features, text, I, class_kl(I, text.classifier), params.to_tensor().to(pinv.device))
    updates = steps if protocol.update_then_evaluate else max(steps - 1, 0)

    best_acc, kept = -1.0, None

    def consider(acc: float, done: int) -> None:
        nonlocal best_acc, kept
        if acc > best_acc:
            best_acc, kept = acc, (pinv.detach().clone(), bias.detach().clone() if csb else None, done)

    with torch.no_grad():
        state = objective.state(pinv, bias)
        bar = tqdm(range(steps), desc=f"SeMoBridge-T ({protocol.name})", disable=not progress)
        for step in bar:
            terms, d_pinv, d_bias = objective.loss_and_grad(state)
            record = {"step": step, **{k: terms[k] for k in LOSS_TERMS}, "lr": learning_rate(step)}
            if validation is not None and not protocol.update_then_evaluate:
                record["val_acc"] = validation.accuracy(pinv, state.Pt)
                consider(record["val_acc"], step)
            if step < updates:
                for group in optimiser.param_groups:
                    group["lr"] = record["lr"]
                pinv.grad = d_pinv
                if csb:
                    bias.grad = d_bias
                optimiser.step()
                state = objective.state(pinv, bias)
                if validation is not None and protocol.update_then_evaluate:
                    record["val_acc"] = validation.accuracy(pinv, state.Pt)
                    consider(record["val_acc"], step + 1)
            if log is not None:
                log(record)
            if step % 25 == 0:
                bar.set_postfix({k: f"{v:.4f}" for k, v in record.items() if k in ("loss", "img", "txtp", "txte", "cons", "val_acc")})
        last = (pinv.detach().clone(), bias.detach().clone() if csb else None, updates)
        kept = kept or last
        out = Bridge(features.text_projection, text.eos_length, pinv=kept[0])
        P_from = last if protocol.prototypes_from_last_step else kept
        P_bridge = Bridge(features.text_projection, text.eos_length, pinv=P_from[0])
        P = bridged_prototypes(P_bridge, features.shot_image, features.shot_label, C, P_from[1])
    return TrainResult(out, kept[1], P, kept[2], updates, protocol.name)

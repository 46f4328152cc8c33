"""The three-term blend of docs/method.md (its hyper-parameters live in params.py)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .bridge import Bridge
from .params import RANGES, BlendParams  # noqa: F401  (their home is params.py, torch-free)


def affinities(
    queries: torch.Tensor, text_classifier: torch.Tensor, bridged_protos: torch.Tensor, image_protos: torch.Tensor, bridge: Bridge
) -> torch.Tensor:
    """Cosine affinities [3, N, C]: n(q)·T, n(q)·P, n(bridge(q))·I."""
    q = F.normalize(queries, dim=-1)
    qb = F.normalize(bridge(queries), dim=-1)
    return torch.stack([q @ text_classifier.T, q @ bridged_protos.T, qb @ image_protos.T])


def blend(aff: torch.Tensor, kl: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
    """z for a batch of parameter rows.

    aff: [3, N, C] affinities; kl: [C] class KL in bits; params: [7] or [B, 7] in BlendParams
    order. Returns z [N, C] or [B, N, C].
    """
    single = params.ndim == 1
    p = params.reshape(-1, 7, 1, 1).to(aff)
    sigma, alpha, beta, gamma, l1, l2, l3 = p.unbind(1)
    log_w = sigma * kl  # log w_c, [B, 1, C]
    # λ w exp(s (a - 1)) = exp(log λ + log w - s + s a) (no w in the first term): one fused
    # pass per term, and λ = 0 gives exp(-inf) = 0
    z = torch.addcmul(l1.log() - alpha, alpha, aff[0]).exp_()
    z.add_(torch.addcmul(l2.log() + log_w - beta, beta, aff[1]).exp_())
    z.add_(torch.addcmul(l3.log() + log_w - gamma, gamma, aff[2]).exp_())
    return z[0] if single else z

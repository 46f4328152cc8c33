"""The three-term blend of METHOD.md and its hyper-parameters."""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields

import torch
import torch.nn.functional as F

from .bridge import Bridge

#: Search ranges of the published code (name -> (low, high)), in the order of BlendParams.
RANGES: dict[str, tuple[float, float]] = {
    "smoothness": (0.0, 1.5),
    "alpha": (0.0, 10.0),
    "beta": (0.0, 10.0),
    "gamma": (0.0, 10.0),
    "lambda1": (0.0, 1.0),
    "lambda2": (0.0, 1.0),
    "lambda3": (0.0, 1.0),
}


@dataclass(frozen=True)
class BlendParams:
    """σ, α, β, γ, λ1, λ2, λ3; the defaults are the published values before search."""

    smoothness: float = 0.01
    alpha: float = 1.0
    beta: float = 1.0
    gamma: float = 1.0
    lambda1: float = 0.5
    lambda2: float = 0.5
    lambda3: float = 0.5

    @classmethod
    def from_dict(cls, values: dict) -> "BlendParams":
        """Build from a dict with exactly the seven keys; a clear error otherwise."""
        names = [f.name for f in fields(cls)]
        unknown, missing = sorted(set(values) - set(names)), sorted(set(names) - set(values))
        if unknown or missing:
            raise ValueError(
                f"blend parameters need exactly the keys {', '.join(names)}"
                + (f"; unknown: {', '.join(unknown)}" if unknown else "")
                + (f"; missing: {', '.join(missing)}" if missing else "")
            )
        return cls(**{k: float(values[k]) for k in names})

    @classmethod
    def from_tensor(cls, row: torch.Tensor) -> "BlendParams":
        return cls(*(float(v) for v in row))

    def to_dict(self) -> dict[str, float]:
        return asdict(self)

    def to_tensor(self) -> torch.Tensor:
        return torch.tensor([getattr(self, f.name) for f in fields(self)], dtype=torch.float32)


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

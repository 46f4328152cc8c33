"""The blend hyper-parameters of docs/method.md and the ranges the published code searched (no PyTorch)."""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from .validate import blend_values

#: Blend searches: ours (search.py, coordinate ascent) and the published one (1,000 Optuna TPE trials).
SEARCH_METHODS = ("coordinate", "tpe")

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
    def from_dict(cls, values: Any, source: str = "blend parameters") -> "BlendParams":
        """From user input: exactly the seven keys, finite numbers inside the published ranges."""
        return cls(**blend_values(values, RANGES, source))

    @classmethod
    def from_tensor(cls, row) -> "BlendParams":
        return cls(*(float(v) for v in row))

    def to_dict(self) -> dict[str, float]:
        return asdict(self)

    def to_tensor(self):
        import torch

        return torch.tensor([getattr(self, f.name) for f in fields(self)], dtype=torch.float32)

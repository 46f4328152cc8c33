"""SeMoBridge: few-shot CLIP classification through a semantic modality bridge (ICLR 2026).

The public names below load on first use, so that light entry points (`semobridge --help`,
`semobridge info`) do not import PyTorch.
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "Backbone": "backbones", "load_backbone": "backbones", "BlendParams": "blend", "FeatureSet": "features",
    "fit_features": "fit", "ModelInfo": "model", "SeMoBridge": "model", "evaluate": "pipeline", "fit_dataset": "pipeline",
}
__all__ = [*_EXPORTS, "__version__"]


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'semobridge' has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)

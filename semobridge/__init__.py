"""SeMoBridge: few-shot CLIP classification through a semantic modality bridge (ICLR 2026)."""
__version__ = "0.1.0"

from .backbones import Backbone, load_backbone  # noqa: E402
from .blend import BlendParams  # noqa: E402
from .features import FeatureSet  # noqa: E402
from .fit import fit_features  # noqa: E402
from .model import ModelInfo, SeMoBridge  # noqa: E402
from .pipeline import evaluate, fit_dataset  # noqa: E402

__all__ = [
    "Backbone", "BlendParams", "FeatureSet", "ModelInfo", "SeMoBridge",
    "evaluate", "fit_dataset", "fit_features", "load_backbone", "__version__",
]

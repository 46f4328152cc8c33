"""SeMoBridge: few-shot CLIP classification through a semantic modality bridge."""
__version__ = "0.1.0"

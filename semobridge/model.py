"""The fitted SeMoBridge head (a plain nn.Module) and its safetensors model file."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from . import __version__
from .blend import BlendParams, affinities, blend
from .bridge import Bridge
from .files import atomic_output
from .prototypes import class_weights

FORMAT = "semobridge-model/1"


class ModelFileError(ValueError):
    """A model file that is missing, not ours, or made for another backbone."""


@dataclass
class ModelInfo:
    """Everything about a fitted model that is not a tensor."""

    class_names: list[str]
    backbone: dict[str, str]  # name, pretrained, weights_hash
    image_size: int
    mean: list[float]
    std: list[float]
    params: dict[str, float]
    variant: str = "training-free"  # or "trained" (SeMoBridge-T)
    shots: int | None = None
    seed: int | None = None
    val_accuracy: float | None = None
    val_source: str = "none"
    augment: str = ""
    dataset: str = ""
    csb: bool = False
    protocol: str = ""  # "paper" or "consistent" (semobridge.protocol); "" in files from before
    steps: int | None = None  # SeMoBridge-T updates applied
    kept_step: int | None = None  # updates applied to reach the kept W⁺ and class bias
    library_version: str = __version__
    extra: dict = field(default_factory=dict)


class SeMoBridge(nn.Module):
    """Query embeddings [N, d] (not normalised) -> blend scores z [N, C]."""

    def __init__(
        self,
        bridge: Bridge,
        text_classifier: torch.Tensor,
        bridged_protos: torch.Tensor,
        image_protos: torch.Tensor,
        kl: torch.Tensor,
        info: ModelInfo,
        class_bias: torch.Tensor | None = None,
    ):
        super().__init__()
        self.bridge = bridge
        self.register_buffer("text_classifier", text_classifier.detach().float())
        self.register_buffer("bridged_prototypes", bridged_protos.detach().float())
        self.register_buffer("image_prototypes", image_protos.detach().float())
        self.register_buffer("class_kl", kl.detach().float())
        self.register_buffer("params", BlendParams.from_dict(info.params).to_tensor())
        self.class_bias = class_bias.detach().float() if class_bias is not None else None
        self.info = info

    @property
    def num_classes(self) -> int:
        return self.text_classifier.shape[0]

    @property
    def class_weights(self) -> torch.Tensor:
        return class_weights(self.class_kl, self.params[0])

    def with_params(self, params: BlendParams) -> "SeMoBridge":
        """Set the blend hyper-parameters (in place) and return self."""
        self.params.copy_(params.to_tensor())
        self.info.params = params.to_dict()
        return self

    def affinities(self, queries: torch.Tensor) -> torch.Tensor:
        return affinities(queries, self.text_classifier, self.bridged_prototypes, self.image_prototypes, self.bridge)

    def forward(self, queries: torch.Tensor) -> torch.Tensor:
        return blend(self.affinities(queries), self.class_kl, self.params)

    def zero_shot(self, queries: torch.Tensor) -> torch.Tensor:
        """Zero-shot CLIP cosine scores n(q)·T [N, C]."""
        return torch.nn.functional.normalize(queries, dim=-1) @ self.text_classifier.T

    def save(self, path: str | Path) -> Path:
        """Write the model file atomically (no half-written file on failure)."""
        tensors = {
            "bridge.pinv": self.bridge.pinv,
            "bridge.text_projection": self.bridge.text_projection,
            "bridge.eos_length": self.bridge.eos_length.reshape(1),
            "text_classifier": self.text_classifier,
            "bridged_prototypes": self.bridged_prototypes,
            "image_prototypes": self.image_prototypes,
            "class_kl": self.class_kl,
            "class_weights": self.class_weights,
        }
        if self.class_bias is not None:
            tensors["class_bias"] = self.class_bias
        tensors = {k: v.detach().float().cpu().contiguous() for k, v in tensors.items()}
        # one metadata key: safetensors orders several keys arbitrarily, and the file should be reproducible
        meta = {"semobridge": json.dumps({"format": FORMAT, **asdict(self.info)})}
        path = Path(path)
        with atomic_output(path) as tmp:
            save_file(tensors, str(tmp), metadata=meta)
        return path

    @classmethod
    def load(cls, path: str | Path) -> "SeMoBridge":
        """Read a model file written by `save`; a clear error for anything else."""
        path = Path(path)
        if not path.is_file():
            raise ModelFileError(f"model file {path} does not exist")
        try:
            tensors = load_file(str(path))
            with safe_open(str(path), "pt") as f:
                meta = f.metadata() or {}
        except (SafetensorError, OSError, ValueError) as exc:
            raise ModelFileError(f"{path} is not a readable safetensors file ({exc}); re-run `semobridge fit`") from exc
        fields = json.loads(meta.get("semobridge", "{}"))
        if fields.pop("format", None) != FORMAT:
            raise ModelFileError(f"{path} is not a semobridge model file (no {FORMAT!r} metadata); fit one with `semobridge fit`")
        info = ModelInfo(**fields)
        W = tensors["bridge.text_projection"]
        bridge = Bridge(W, float(tensors["bridge.eos_length"][0]), pinv=tensors["bridge.pinv"])
        return cls(
            bridge,
            tensors["text_classifier"],
            tensors["bridged_prototypes"],
            tensors["image_prototypes"],
            tensors["class_kl"],
            info,
            tensors.get("class_bias"),
        )

    def check_backbone(self, backbone) -> None:
        """Refuse a backbone other than the one the model was fitted on."""
        mine, theirs = self.info.backbone, backbone.identity()
        if (mine["name"], mine["weights_hash"]) != (theirs["name"], theirs["weights_hash"]):
            raise ModelFileError(
                f"the model was fitted on {mine['name']} (pretrained={mine['pretrained']}, weights "
                f"{mine['weights_hash']}) but the backbone given is {theirs['name']} "
                f"(pretrained={theirs['pretrained']}, weights {theirs['weights_hash']}). "
                "Load the same backbone, or fit again on this one."
            )

"""The fitted SeMoBridge head (a plain nn.Module) and its safetensors model file."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file
from torch import nn

from semobridge_runtime.calibration import TENSORS as CALIBRATION  # kept for the runtime to recalibrate
from semobridge_runtime.calibration import CalibrationData
from semobridge_runtime.errors import ModelError

from .blend import BlendParams, affinities, blend
from .bridge import Bridge
from .files import atomic_output
from .modelfile import ModelFileError, ModelInfo, read_model
from .prototypes import class_weights


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
        #: the embeddings the open set was calibrated on (semobridge.calibrate.calibration_data), saved with the
        #: model so that the runtime recalibrates edited class sets; None: not kept (nothing recalibrates)
        self.calibration: dict[str, torch.Tensor] | None = None

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
        if self.calibration is not None:  # labels int64, the shot flags uint8: as the runtime reads them
            tensors.update({k: v.detach().cpu().contiguous() for k, v in self.calibration.items()})
        path = Path(path)
        with atomic_output(path, "model file") as tmp:
            save_file(tensors, str(tmp), metadata=self.info.to_metadata())
        return path

    @classmethod
    def load(cls, path: str | Path) -> "SeMoBridge":
        """Read a model file written by `save`, validated (metadata, tensor names and shapes) before use."""
        info, arrays = read_model(path)
        tensors = {name: torch.from_numpy(np.array(a, np.float32)) for name, a in arrays.items() if name not in CALIBRATION}
        W = tensors["bridge.text_projection"]
        bridge = Bridge(W, float(tensors["bridge.eos_length"][0]), pinv=tensors["bridge.pinv"])
        head = cls(
            bridge,
            tensors["text_classifier"],
            tensors["bridged_prototypes"],
            tensors["image_prototypes"],
            tensors["class_kl"],
            info,
            tensors.get("class_bias"),
        )
        try:  # the runtime's own check: a partial or malformed set is refused here, not at a later enrolment
            data = CalibrationData.of(arrays, *head.text_classifier.shape, str(path))
        except ModelError as exc:
            raise ModelFileError(str(exc), hint=exc.hint) from None
        if data is not None:
            head.calibration = {name: torch.from_numpy(np.array(arrays[name])) for name in CALIBRATION}
        return head

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

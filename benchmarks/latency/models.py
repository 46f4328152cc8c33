"""What is timed: the fused classifier and the bare encoder, and their exported files (made once, on first use)."""
from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from benchmarks.common import benchmark_head
from semobridge.backbones import load_backbone
from semobridge_export.formats import FORMATS, Job
from semobridge_export.fused import FusedClassifier
from semobridge_export.metadata import build_metadata
from semobridge_export.onnx_graph import dynamic_shapes
from semobridge_export.program import load_program, save_program
from semobridge_export.tensorrt import Profile

KINDS = ("fused", "bare")


class BareEncoder(FusedClassifier):
    """The fused classifier without its head: the same preprocessing and encoder, uint8 -> embedding [N, d]
    (unnormalised), exported through the same code as the fused model."""

    output_names = ("embedding",)

    def fitted_classes(self) -> dict[str, torch.Tensor]:  # no head, so no class-set inputs
        return {}

    def forward(self, image: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return self.encoder(self.preprocess(image)).float()


class HalfPrecision(nn.Module):
    """`module` converted to fp16 as a whole (stock `.half()`); its input is cast to fp16 on the way in."""

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module.half()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(x.half())


def with_half_encoder(model: FusedClassifier) -> FusedClassifier:
    """A copy of the model with its encoder in fp16; preprocessing and head stay fp32 (FusedClassifier casts the
    encoder's output back to float)."""
    model = copy.deepcopy(model)
    model.encoder = HalfPrecision(model.encoder)
    return model


@dataclass
class ExportCache:
    """The fused and bare models, and their files in each export format, written into `stage` on first use."""

    modules: dict[str, FusedClassifier]
    stage: Path
    profile: Profile
    jobs: dict[str, Job] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for kind, module in self.modules.items():
            self.jobs[kind] = Job(module, build_metadata(module), self.stage, stem=kind, profile=self.profile, log=lambda _: None)

    def artifact(self, kind: str, fmt_name: str) -> Path:
        """The exported file of `kind` in format `fmt_name` (a FORMATS key), exported once."""
        job = self.jobs[kind]
        if fmt_name not in job.written:
            if FORMATS[fmt_name].needs:
                self.artifact(kind, FORMATS[fmt_name].needs)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                job.written[fmt_name] = FORMATS[fmt_name].write(job)
        return job.written[fmt_name]

    def class_set(self, kind: str) -> dict[str, np.ndarray]:
        """The fitted class set of `kind` as the runtime feeds it to an engine (name -> array; none for the bare encoder)."""
        return {name: t.detach().numpy() for name, t in self.modules[kind].fitted_classes().items()}

    def cuda_program(self, kind: str) -> nn.Module:
        """torch.export program traced on CUDA (a CPU trace pins its constants to the CPU), saved and loaded back."""
        module = copy.deepcopy(self.modules[kind]).cuda()
        example = module.example_input(batch=2).cuda()
        with torch.device("cuda"), torch.no_grad():
            program = torch.export.export(module, (example,), dynamic_shapes=dynamic_shapes(module, None, head_as_data=False), strict=False)
        path = save_program(program, self.stage / f"{kind}_cuda.pt2", self.jobs[kind].meta)
        return load_program(path)[0]


def build_models(model: str, pretrained: str, classes: int, seed: int, stage: Path, sizes: list[tuple[int, int]],
                 batches: tuple[int, ...]) -> ExportCache:
    """Backbone, benchmark head, fused and bare models, and the TensorRT profile covering every (H, W) and batch."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the random-weights warning: expected here, speed does not depend on weights
        backbone = load_backbone(model, pretrained, device="cpu", seed=seed)
    head = benchmark_head(backbone, classes, seed=seed)
    modules = {"fused": FusedClassifier(head, backbone), "bare": BareEncoder(head, backbone)}
    small = min(sizes)
    big = (max(h for h, _ in sizes), max(w for _, w in sizes))
    profile = Profile(batch=(1, max(1, max(batches) // 8), max(batches)), sizes=(small, small, big))
    return ExportCache(modules, stage, profile)


def encoder_flops(model: FusedClassifier) -> float:
    """FLOPs of the bare image encoder for one image at its input size (attention included)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)  # the fused MHA kernel is invisible to the counter
    try:
        x = torch.zeros(1, 3, model.image_size, model.image_size)
        with FlopCounterMode(display=False) as counter, torch.no_grad(), sdpa_kernel(SDPBackend.MATH):
            model.encoder(x)
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)
    return float(counter.get_total_flops())

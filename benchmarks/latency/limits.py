"""What the hardware allows: a GPU's datasheet peak, and on the CPU a matrix product timed beside every case."""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .runners import OrtRunner
from .timing import Timer, wall_clock

#: Dense fp16/bf16 tensor-core peak in TFLOPS, by a part of the GPU's name (longest match wins).
GPU_PEAK_TFLOPS = {
    "H200": 989.0, "H100 PCIE": 756.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "L4": 121.0,
    "A10": 125.0, "T4": 65.0, "V100": 125.0, "ORIN": 42.5,  # AGX Orin 64 GB GPU, approximate
}
#: Rows of the reference CPU matrix product (a ViT-B/16 image is 197 tokens).
MATMUL_ROWS = 256


def peak_tflops(gpu: str | None) -> float | None:
    """Dense fp16 peak of a known GPU, None for unknown GPUs and the CPU."""
    if gpu is None:
        return None
    name = gpu.upper()
    matches = [key for key in GPU_PEAK_TFLOPS if key in name]
    return GPU_PEAK_TFLOPS[max(matches, key=len)] if matches else None


def largest_linear(module: nn.Module) -> tuple[int, int]:
    """(in, out) features of the module's largest nn.Linear; ViT-B's MLP (768, 3072) if it has none."""
    linears = [m for m in module.modules() if isinstance(m, nn.Linear)]
    if not linears:
        return 768, 3072
    big = max(linears, key=lambda m: m.weight.numel())
    return big.in_features, big.out_features


@dataclass
class CpuFloor:
    """One matrix product shaped like the encoder's largest layer (MATMUL_ROWS rows), in fp32 and quantised as the
    int8 export is, written into `stage` on first use. Timed beside every CPU case in the case's own library and
    precision, its rate is the CPU's practical peak: the encoder's FLOPs at that rate are a floor no backend beats
    without doing less arithmetic."""

    encoder: nn.Module
    stage: Path
    files: dict[str, Path] | None = None

    @property
    def shape(self) -> tuple[int, int, int]:
        return (MATMUL_ROWS, *largest_linear(self.encoder))

    @property
    def flop(self) -> float:
        return 2.0 * math.prod(self.shape)

    def timer(self, library: str, precision: str) -> Timer:
        """One call of the product: torch.mm in PyTorch, the MatMul node (fp32 or int8) in ONNX Runtime."""
        rows, k, n = self.shape
        x = np.random.default_rng(1).standard_normal((rows, k), dtype=np.float32)
        if library == "torch":
            a, w = torch.from_numpy(x), torch.randn(k, n, generator=torch.Generator().manual_seed(0))
            return wall_clock(lambda: torch.mm(a, w))
        files = self.files or self._write()
        return OrtRunner(files["int8" if precision == "int8" else "fp32"], ["CPUExecutionProvider"], cuda=False).host(x)

    def _write(self) -> dict[str, Path]:
        import onnx
        from onnx import TensorProto, helper, numpy_helper

        from semobridge_export.precision import quantize_matmuls

        rows, k, n = self.shape
        weight = np.random.default_rng(0).standard_normal((k, n), dtype=np.float32)
        graph = helper.make_graph(
            [helper.make_node("MatMul", ["image", "weight"], ["out"])], "matmul",
            [helper.make_tensor_value_info("image", TensorProto.FLOAT, [rows, k])],
            [helper.make_tensor_value_info("out", TensorProto.FLOAT, [rows, n])], [numpy_helper.from_array(weight, "weight")])
        self.files = {"fp32": self.stage / "matmul.onnx", "int8": self.stage / "matmul_int8.onnx"}
        onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), self.files["fp32"])
        quantize_matmuls(self.files["fp32"], self.files["int8"])
        return self.files

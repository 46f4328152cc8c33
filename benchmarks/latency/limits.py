"""What the hardware allows: a GPU's datasheet peak, and on the CPU a matrix product timed beside every case."""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .runners import OrtRunner
from .timing import Timer, sample, wall_clock

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
        """One call of the product: torch.mm in PyTorch (fp32, bf16), the MatMul node (fp32 or int8) in ONNX Runtime,
        a compiled MatMul with constant (packed) weights in OpenVINO (fp32, bf16, int8: u8 x s8 through FakeQuantize)."""
        rows, k, n = self.shape
        x = np.random.default_rng(1).standard_normal((rows, k), dtype=np.float32)
        if library == "torch":
            a, w = torch.from_numpy(x), torch.randn(k, n, generator=torch.Generator().manual_seed(0))
            if precision == "bf16":
                a, w = a.bfloat16(), w.bfloat16()
            return wall_clock(lambda: torch.mm(a, w))
        if library == "openvino":
            return openvino_matmul(x, n, precision)
        files = self.files or self._write()
        return OrtRunner(files["int8" if precision == "int8" else "fp32"], ["CPUExecutionProvider"], cuda=False).host(x)

    def rates(self, warmup: int, iters: int, budget_s: float) -> dict[str, float]:
        """GFLOP/s (GOP/s for int8) of every floor this machine has, timed in the same rounds: "library precision" ->
        rate. The floor that applies to a case is its library's at its precision; the lowest of a precision is the
        machine's (e.g. bf16 on matrix engines)."""
        import importlib.util

        names = [("torch", "fp32"), ("torch", "bf16"), ("onnxruntime", "fp32"), ("onnxruntime", "int8")]
        if importlib.util.find_spec("openvino") is not None:
            names += [("openvino", "fp32"), ("openvino", "bf16"), ("openvino", "int8")]
        timers = [self.timer(*name) for name in names]
        times = sample(timers, warmup, iters, budget_s)
        return {f"{lib} {prec}": self.flop / statistics.median(t) / 1e6 for (lib, prec), t in zip(names, times)}

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


def openvino_matmul(x: np.ndarray, n: int, precision: str) -> Timer:
    """x @ W (W constant [k, n]) compiled by OpenVINO's CPU plugin at `precision`: fp32, bf16, or int8 (x quantised
    to u8 and W to s8 by FakeQuantize nodes, which the plugin runs as one int8 product)."""
    from semobridge_runtime.backends.openvino import import_openvino

    ov = import_openvino()
    ops = ov.opset13

    weight = np.random.default_rng(0).standard_normal((x.shape[1], n), dtype=np.float32)
    param, w = ops.parameter(list(x.shape), ov.Type.f32), ops.constant(weight)
    config = {"INFERENCE_PRECISION_HINT": "bf16" if precision == "bf16" else "f32"}
    if precision == "int8":
        low, high = ops.constant(np.float32(-4)), ops.constant(np.float32(4))
        param_q = ops.fake_quantize(param, low, high, low, high, 256)
        w = ops.fake_quantize(w, low, high, low, high, 255)
        model = ov.Model([ops.matmul(param_q, w, False, False)], [param])
    else:
        model = ov.Model([ops.matmul(param, w, False, False)], [param])
    request = ov.Core().compile_model(model, "CPU", config).create_infer_request()
    return wall_clock(lambda: request.infer({0: x}))

"""The CPU floor of a case: the encoder's own matrix products at the case's batch, each timed as one call with
constant (pre-packed) weights in a library and precision. Their summed time is what those products alone take
there, a floor no run of the encoder in that library and precision beats without doing less arithmetic.

Timed by CPU time (--clock cpu), every product runs on one thread: that is its work, while a pool's workers
(PyTorch's OpenMP, OpenVINO's) count their waiting as CPU time on a shared machine (measured here: 197x768x2304
in bf16, 8.2 ms of CPU time on PyTorch's two threads against 1.4 ms on one).

The products are recorded from one forward of the encoder (weights times activations: nn.Linear, the patch
embedding's convolution as its im2col product, a projection matrix); products that share their input, like
the query, key and value projections, count as one (a library may pack them so). The attention core (QK^T and
AV, products of two activations) and the elementwise work are left out.
"""
from __future__ import annotations

import statistics
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from .runners import OrtRunner
from .timing import Timer, counts_work, sample, wall_clock

#: Every floor a CPU may have, as "library precision" pairs (OpenVINO's where it is installed).
FLOOR_KINDS = (("torch", "fp32"), ("torch", "bf16"), ("onnxruntime", "fp32"), ("onnxruntime", "int8"),
               ("openvino", "fp32"), ("openvino", "bf16"), ("openvino", "int8"))
_aten = torch.ops.aten


@dataclass(frozen=True)
class Product:
    """A matrix product the encoder does per image, `count` times: [rows, k] @ [k, n], the [k, n] a weight."""

    kind: str  # "linear", "convolution" (its im2col product) or "matmul"
    rows: int  # per image; a batch of B images has B x rows
    k: int
    n: int
    count: int = 1

    def flop(self, batch: int = 1) -> float:
        """FLOPs of all `count` products at `batch` images."""
        return 2.0 * self.count * batch * self.rows * self.k * self.n

    def label(self) -> str:
        return f"{self.rows}x{self.k}x{self.n}" + (f" x{self.count}" if self.count > 1 else "")


class _Recorder(TorchDispatchMode):
    """Records (kind, input tensor, rows, k, n) of every product of an activation with one of `weights` (storage pointers)."""

    def __init__(self, weights: set[int]):
        super().__init__()
        self.weights = weights
        self.calls: list[tuple[str, torch.Tensor, int, int, int]] = []  # the input held: compared by identity

    def _is_weight(self, t: Any) -> bool:
        return isinstance(t, torch.Tensor) and t.untyped_storage().data_ptr() in self.weights

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        packet = func.overloadpacket
        if packet not in (_aten.conv2d, _aten.convolution, _aten.linear, _aten.matmul, _aten.mm, _aten.addmm):
            return out
        x, w = args[1:3] if packet is _aten.addmm else args[:2]
        if packet in (_aten.conv2d, _aten.convolution) and self._is_weight(w):
            at = 6 if packet is _aten.conv2d else 8
            groups = args[at] if len(args) > at else 1
            rows = out.shape[0] * out.shape[2] * out.shape[3]
            k = w.shape[1] * w.shape[2] * w.shape[3]
            self.calls += [("convolution", x, rows, k, w.shape[0] // groups)] * groups
        elif packet is _aten.linear and self._is_weight(w):
            self.calls.append(("linear", x, x.numel() // x.shape[-1], w.shape[1], w.shape[0]))
        elif packet in (_aten.matmul, _aten.mm, _aten.addmm) and w.dim() == 2 and self._is_weight(w):
            self.calls.append(("matmul", x, x.numel() // x.shape[-1], w.shape[0], w.shape[1]))
        return out


def encoder_products(encoder: nn.Module, image_size: int) -> tuple[Product, ...]:
    """The weight products of one forward of `encoder` on one image (as PyTorch runs it, fused attention fast path
    off), in order of first use, with their counts; consecutive products of the same input merge into one."""
    weights = {p.untyped_storage().data_ptr() for p in encoder.parameters()}
    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)  # the fused kernel would hide the q/k/v projection
    try:
        with torch.inference_mode(), _Recorder(weights) as recorder:  # inference mode: linear is not decomposed
            encoder(torch.zeros(1, 3, image_size, image_size))
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)
    merged: list[list] = []
    for kind, source, rows, k, n in recorder.calls:
        if merged and kind == "linear" and merged[-1][0] == kind and merged[-1][1] is source and merged[-1][3] == k:
            merged[-1][4] += n
        else:
            merged.append([kind, source, rows, k, n])
    counts = Counter((kind, rows, k, n) for kind, _, rows, k, n in merged)
    return tuple(Product(*shape, count=count) for shape, count in counts.items())


def torch_product(x: np.ndarray, n: int, precision: str, threads: int | None = None) -> Timer:
    """x @ W in PyTorch at fp32 or bf16 (on `threads`, None: PyTorch's setting). oneDNN's packed path where PyTorch
    has it: W reordered once into oneDNN's blocked layout (mkldnn._reorder_linear_weight, as inductor's freezing
    does) and run by mkldnn._linear_pointwise. torch.mm in bf16 runs oneDNN's matmul on W's plain layout, which it
    copies into blocks on every call; in fp32 it runs MKL. Measured on ViT-B/16's 48 layer products (AVX-512 BF16, no
    AMX, one thread, CPU time): bf16 66.7 vs 72.9 ms at batch 1 and 525 vs 569 ms at batch 8, fp32 141 vs 320 ms."""
    generator = torch.Generator().manual_seed(0)
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    a = torch.from_numpy(x).to(dtype)
    w = torch.randn(n, x.shape[1], generator=generator).to(dtype)
    if torch.backends.mkldnn.is_available():
        packed = torch.ops.mkldnn._reorder_linear_weight(w, x.shape[0])
        call = wall_clock(lambda: torch.ops.mkldnn._linear_pointwise(a, packed, None, "none", [], ""))
    else:
        wt = w.t().contiguous()
        call = wall_clock(lambda: torch.mm(a, wt))
    if threads is None:
        return call

    def on_threads() -> float:
        before = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            return call()
        finally:
            torch.set_num_threads(before)

    return on_threads


def openvino_product(x: np.ndarray, n: int, precision: str, threads: int | None = None) -> Timer:
    """x @ W (W constant [k, n]) compiled by OpenVINO's CPU plugin at `precision` (on `threads`, None: its default),
    which packs the constant weights: fp32, bf16, or int8 (x quantised to u8 and W to s8 by FakeQuantize nodes, run
    as one int8 product)."""
    from semobridge_runtime.backends.openvino import import_openvino

    ov = import_openvino()
    ops = ov.opset13
    weight = np.random.default_rng(0).standard_normal((x.shape[1], n), dtype=np.float32)
    param = ops.parameter(list(x.shape), ov.Type.f32)
    a, w = param, ops.constant(weight)
    config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": "bf16" if precision == "bf16" else "f32"}
    if threads:
        config["INFERENCE_NUM_THREADS"] = threads
    if precision == "int8":
        low, high = ops.constant(np.float32(-4)), ops.constant(np.float32(4))
        a = ops.fake_quantize(a, low, high, low, high, 256)
        w = ops.fake_quantize(w, low, high, low, high, 255)
    model = ov.Model([ops.matmul(a, w, False, False)], [param])
    request = ov.Core().compile_model(model, "CPU", config).create_infer_request()
    return wall_clock(lambda: request.infer({0: x}))


@dataclass(frozen=True)
class CaseFloor:
    """The timers of a case's floor, one per product, and the products' counts."""

    timers: list[Timer]
    counts: list[int]

    def ms(self, times: list[list[float]]) -> float:
        """The floor: sum over the products of count x the median time of one call (`times` as `timers` orders them)."""
        return sum(count * statistics.median(t) for count, t in zip(self.counts, times))


@dataclass
class CpuFloors:
    """The encoder's products and their timers per (library, precision, batch), built on first use and shared by
    every case of that batch (the products do not depend on the input size: the graph resizes first). ONNX files
    (one MatMul per (k, n), rows dynamic; int8 quantised as the export is) are written into `stage`."""

    products: tuple[Product, ...]
    stage: Path
    _timers: dict[tuple[str, str, int], CaseFloor] = field(default_factory=dict)
    _onnx: dict[tuple[int, int, str, int | None], OrtRunner] = field(default_factory=dict)

    @property
    def gflop_per_image(self) -> float:
        return sum(p.flop() for p in self.products) / 1e9

    def case(self, library: str, precision: str, batch: int) -> CaseFloor:
        key = (library, precision, batch)
        if key not in self._timers:
            self._timers[key] = CaseFloor([self.timer(library, precision, p, batch) for p in self.products],
                                          [p.count for p in self.products])
        return self._timers[key]

    def timer(self, library: str, precision: str, product: Product, batch: int) -> Timer:
        """One call of `product` at `batch` images in `library` and `precision`, weights constant."""
        x = np.random.default_rng(1).standard_normal((batch * product.rows, product.k), dtype=np.float32)
        threads = 1 if counts_work() else None
        if library == "torch":
            return torch_product(x, product.n, precision, threads)
        if library == "openvino":
            return openvino_product(x, product.n, precision, threads)
        return self._ort(product.k, product.n, precision, threads).host(x)

    def machine(self, batches: tuple[int, ...], warmup: int, iters: int, budget_s: float) -> dict[int, dict[str, float]]:
        """Every floor this machine has at each batch ("library precision" -> ms per call of the batch), each batch's
        floors timed in the same rounds (OpenVINO's where it is installed, its bf16 where the CPU computes bf16)."""
        from .backends import openvino_missing

        kinds = [k for k in FLOOR_KINDS if k[0] != "openvino" or openvino_missing(k[1])() is None]
        out = {}
        for batch in batches:
            cases = [self.case(*kind, batch) for kind in kinds]
            times = sample([t for c in cases for t in c.timers], warmup, iters, budget_s)
            out[batch] = {}
            for kind, case in zip(kinds, cases):
                out[batch][" ".join(kind)], times = case.ms(times[:len(case.timers)]), times[len(case.timers):]
        return out

    def summary(self) -> dict[str, Any]:
        return {"products": [asdict(p) for p in self.products], "gflop_per_image": self.gflop_per_image,
                "attention_core": "left out"}

    def _ort(self, k: int, n: int, precision: str, threads: int | None) -> OrtRunner:
        key = (k, n, precision, threads)
        if key not in self._onnx:
            fp32, int8 = self._write(k, n)
            self._onnx[key] = OrtRunner(int8 if precision == "int8" else fp32, ["CPUExecutionProvider"], cuda=False,
                                        threads=threads)
        return self._onnx[key]

    def _write(self, k: int, n: int) -> tuple[Path, Path]:
        import onnx
        from onnx import TensorProto, helper, numpy_helper

        from semobridge_export.precision import quantize_matmuls

        fp32, int8 = self.stage / f"matmul_{k}x{n}.onnx", self.stage / f"matmul_{k}x{n}_int8.onnx"
        if not int8.exists():
            weight = np.random.default_rng(0).standard_normal((k, n), dtype=np.float32)
            graph = helper.make_graph(
                [helper.make_node("MatMul", ["x", "weight"], ["out"])], "matmul",
                [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["rows", k])],
                [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["rows", n])], [numpy_helper.from_array(weight, "weight")])
            onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), fp32)
            quantize_matmuls(fp32, int8)
        return fp32, int8


def machine_floor(floors: dict[str, float], precision: str) -> tuple[float, str] | None:
    """The machine's floor at `precision` (ms) and the library that sets it: the fastest library's."""
    found = [(ms, name.split()[0]) for name, ms in floors.items() if name.split()[1] == precision]
    return min(found) if found else None


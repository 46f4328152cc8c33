"""Latency of the fused classifier (uint8 pixels -> scores) on every backend present on this machine.

Every backend runs the same fitted model (a head fitted on random embeddings of the backbone's
widths; speed does not depend on weights or on what the head learned), and beside it the bare
image encoder (same preprocessing and encoder, no bridge, prototypes or blend), so the fused
graph's overhead is a ratio measured in the same backend and run.

    python -m benchmarks.latency                 # ViT-B-16, random weights, all backends found
    python -m benchmarks.latency --quick         # CI-sized: semobridge-tiny, batch 1 and 2
"""
from __future__ import annotations

import argparse
import copy
import fnmatch
import importlib.util
import math
import statistics
import sys
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence

if __package__ in (None, ""):  # run as a file: python benchmarks/latency.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from benchmarks.common import benchmark_head, default_out, fmt, machine, markdown_table, parse_ints, write_csv, write_json
from semobridge.backbones import load_backbone
from semobridge_export.formats import FORMATS, Job
from semobridge_export.fused import FusedClassifier
from semobridge_export.metadata import build_metadata
from semobridge_export.onnx_graph import dynamic_shapes
from semobridge_export.program import load_program, save_program
from semobridge_export.tensorrt import Profile

CPU_BATCHES = (1, 8)
GPU_BATCHES = (1, 8, 32, 256)
SIZES = "224x224,1280x720"  # W x H, as cameras name frames
KINDS = ("fused", "bare")
OVERHEAD_TARGET = 0.03
#: Dense fp16/bf16 tensor-core peak in TFLOPS, by a part of the GPU's name (longest match wins).
GPU_PEAK_TFLOPS = {
    "H200": 989.0, "H100 PCIE": 756.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "L4": 121.0,
    "A10": 125.0, "T4": 65.0, "V100": 125.0, "ORIN": 42.5,  # AGX Orin 64 GB GPU, approximate
}
#: Rows of the reference CPU matrix product (a ViT-B/16 image is 197 tokens).
MATMUL_ROWS = 256
Timer = Callable[[], float]  # one call; returns its duration in ms


# ---------------------------------------------------------------- models and artifacts


class BareEncoder(FusedClassifier):
    """The fused classifier without its head: the same preprocessing and encoder, uint8 -> embedding [N, d]
    (unnormalised), exported through the same code as the fused model."""

    output_names = ("embedding",)

    def fitted_classes(self) -> dict[str, torch.Tensor]:  # no head, so no class-set inputs
        return {}

    def forward(self, image: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return self.encoder(self.preprocess(image)).float()


class HalfInput(nn.Module):
    """Runs `module` in fp16; its input is cast to half (FusedClassifier casts the output back to float)."""

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module.half()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(x.half())


def half_copy(model: FusedClassifier) -> FusedClassifier:
    """The model with its encoder in fp16 (stock `.half()`); preprocessing and head stay fp32."""
    model = copy.deepcopy(model)
    model.encoder = HalfInput(model.encoder)
    return model


@dataclass
class Models:
    """The fused and bare models and their exported files (made on first use, in `stage`)."""

    modules: dict[str, FusedClassifier]
    stage: Path
    profile: Profile
    jobs: dict[str, Job] = field(default_factory=dict)
    matmul: tuple[tuple[int, int, int], dict[str, Path]] | None = None  # the CPU reference, written on first use

    def __post_init__(self) -> None:
        for kind, module in self.modules.items():
            self.jobs[kind] = Job(module, build_metadata(module), self.stage, stem=kind, profile=self.profile, log=lambda _: None)

    def matmul_reference(self, backend: Backend) -> tuple[Timer, float]:
        """A timer of the CPU reference matrix product in `backend`'s own library and precision, and its FLOPs:
        torch.mm for PyTorch backends, the MatMul node (fp32 or int8) in ONNX Runtime for the others."""
        if self.matmul is None:
            self.matmul = write_matmul_reference(self.modules["bare"].encoder, self.stage)
        shape, paths = self.matmul
        x = np.random.default_rng(1).standard_normal(shape[:2], dtype=np.float32)
        flop = 2.0 * math.prod(shape)
        if backend.name.startswith("torch"):
            a, w = torch.from_numpy(x), torch.randn(shape[1:], generator=torch.Generator().manual_seed(0))
            return wall_clock(lambda: torch.mm(a, w)), flop
        return OrtRunner(paths["int8" if backend.precision == "int8" else "fp32"], ["CPUExecutionProvider"], cuda=False).host(x), flop

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

    def cuda_program(self, kind: str) -> nn.Module:
        """torch.export program traced on CUDA (a CPU trace pins its constants to the CPU), saved and loaded back."""
        module = copy.deepcopy(self.modules[kind]).cuda()
        example = module.example_input(batch=2).cuda()
        with torch.device("cuda"), torch.no_grad():
            program = torch.export.export(module, (example,), dynamic_shapes=dynamic_shapes(module, None, head_as_data=False), strict=False)
        path = save_program(program, self.stage / f"{kind}_cuda.pt2", self.jobs[kind].meta)
        return load_program(path)[0]


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


def write_matmul_reference(encoder: nn.Module, stage: Path) -> tuple[tuple[int, int, int], dict[str, Path]]:
    """One MatMul node shaped like the encoder's largest layer (MATMUL_ROWS rows), as fp32 ONNX and quantised
    as the int8 export is: timed beside every CPU case, its rate is the CPU rows' practical peak."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from semobridge_export.precision import quantize_matmuls

    k, n = largest_linear(encoder)
    weight = np.random.default_rng(0).standard_normal((k, n), dtype=np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["image", "weight"], ["out"])], "matmul",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [MATMUL_ROWS, k])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [MATMUL_ROWS, n])], [numpy_helper.from_array(weight, "weight")])
    paths = {"fp32": stage / "matmul.onnx", "int8": stage / "matmul_int8.onnx"}
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), paths["fp32"])
    quantize_matmuls(paths["fp32"], paths["int8"])
    return (MATMUL_ROWS, k, n), paths


# ---------------------------------------------------------------- timing


def wall_clock(fn: Callable[[], Any]) -> Timer:
    """Host-to-host time of `fn` (which must return only when its results are on the host)."""

    def timed() -> float:
        start = time.perf_counter()
        fn()
        return (time.perf_counter() - start) * 1e3

    return timed


def cuda_events(fn: Callable[[], Any]) -> Timer:
    """Device time of `fn` on the current CUDA stream, by CUDA events."""
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)

    def timed() -> float:
        start.record()
        fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end)

    return timed


def staged_call(images: np.ndarray, staging: torch.Tensor, execute: Callable[[], Any], outputs: Sequence[torch.Tensor]) -> Timer:
    """Host-to-host time of a call on fixed device buffers: copy `images` into `staging`, `execute`, fetch `outputs`."""
    source = torch.from_numpy(images)

    def run() -> None:
        staging.copy_(source)
        execute()
        [o.cpu() for o in outputs]

    return wall_clock(run)


def sample(timers: list[Timer], warmup: int, iters: int, budget_s: float, min_iters: int = 3) -> list[list[float]]:
    """Warm up, then time the timers in turn, call by call, so that a change of machine load hits all of them
    alike: up to `iters` rounds (at least `min_iters`, no new round after `budget_s`). Times per timer."""
    for _ in range(warmup):
        for timer in timers:
            timer()
    times: list[list[float]] = [[] for _ in timers]
    start = time.perf_counter()
    while len(times[0]) < iters and (len(times[0]) < min_iters or time.perf_counter() - start < budget_s):
        for timer, out in zip(timers, times):
            out.append(timer())
    return times


# ---------------------------------------------------------------- runners (one per backend and model kind)


class Runner(Protocol):
    def host(self, images: np.ndarray) -> Timer:
        """One call from host uint8 images to host outputs."""

    def device(self, images: np.ndarray) -> Timer | None:
        """One call on device-resident input (CUDA events), None on the CPU."""


def _outputs(out: Any) -> tuple[torch.Tensor, ...]:
    return out if isinstance(out, tuple) else (out,)


class TorchRunner:
    """A PyTorch module (eager or a torch.export program) on `device`."""

    def __init__(self, module: nn.Module, device: str):
        self.module, self.on = module, torch.device(device)

    def _call(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        with torch.inference_mode(), self.on:  # preprocessing builds its weights on the default device
            return _outputs(self.module(x))

    def host(self, images: np.ndarray) -> Timer:
        x = torch.from_numpy(images)
        return wall_clock(lambda: [o.cpu() for o in self._call(x.to(self.on))])

    def device(self, images: np.ndarray) -> Timer | None:
        if self.on.type != "cuda":
            return None
        x = torch.from_numpy(images).to(self.on)
        return cuda_events(lambda: self._call(x))


class CudaGraphRunner:
    """A PyTorch module captured as one CUDA graph per input shape (static input and output buffers)."""

    def __init__(self, module: nn.Module):
        self.module = module
        self._graph: tuple[tuple[int, ...], torch.Tensor, torch.cuda.CUDAGraph, tuple[torch.Tensor, ...]] | None = None

    def _captured(self, images: np.ndarray) -> tuple[torch.Tensor, torch.cuda.CUDAGraph, tuple[torch.Tensor, ...]]:
        if self._graph is None or self._graph[0] != images.shape:
            self._graph = None  # free the previous shape's graph and pool first
            static = torch.from_numpy(images).cuda()
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side), torch.inference_mode(), torch.device("cuda"):
                for _ in range(3):
                    self.module(static)
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph), torch.inference_mode(), torch.device("cuda"):
                out = _outputs(self.module(static))
            self._graph = (images.shape, static, graph, out)
        return self._graph[1:]

    def host(self, images: np.ndarray) -> Timer:
        static, graph, out = self._captured(images)
        return staged_call(images, static, graph.replay, out)

    def device(self, images: np.ndarray) -> Timer | None:
        return cuda_events(self._captured(images)[1].replay)


class OrtRunner:
    """An ONNX Runtime session; on CUDA providers also with device-resident input through IO binding.

    CPU sessions run with intra-op spinning off: the benchmark interleaves sessions call by call, and a
    session's spinning threads slow the next session's call down (benchmarks/spinning.py measures it).
    """

    def __init__(self, path: Path, providers: list, cuda: bool):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.log_severity_level = 3
        if not cuda:
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(str(path), options, providers=providers)
        self.cuda = cuda

    def host(self, images: np.ndarray) -> Timer:
        feed = {"image": images}
        return wall_clock(lambda: self.session.run(None, feed))

    def device(self, images: np.ndarray) -> Timer | None:
        if not self.cuda:
            return None
        self._bound = torch.from_numpy(images).cuda()  # kept alive: the binding holds only its pointer
        binding = self.session.io_binding()
        binding.bind_input("image", "cuda", 0, np.uint8, list(self._bound.shape), self._bound.data_ptr())
        for output in self.session.get_outputs():
            binding.bind_output(output.name, "cuda", 0)
        return cuda_events(lambda: self.session.run_with_iobinding(binding))


class TensorRTRunner:
    """A serialized TensorRT engine run on torch-allocated device buffers (UNVERIFIED: no TensorRT where written)."""

    def __init__(self, path: Path):
        import tensorrt as trt

        self.trt = trt
        self.engine = trt.Runtime(trt.Logger(trt.Logger.WARNING)).deserialize_cuda_engine(path.read_bytes())
        if self.engine is None:
            raise RuntimeError(f"TensorRT could not deserialize {path}")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.input = next(n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT)
        self.outputs = [n for n in names if n != self.input]
        self.dtypes = {trt.float32: torch.float32, trt.float16: torch.float16, trt.int32: torch.int32,
                       trt.int64: torch.int64, trt.uint8: torch.uint8, trt.bool: torch.bool}

    def _bind(self, images: np.ndarray) -> tuple[torch.Tensor, list[torch.Tensor]]:
        x = torch.from_numpy(images).cuda()
        self.context.set_input_shape(self.input, tuple(x.shape))
        self.context.set_tensor_address(self.input, x.data_ptr())
        outs = []
        for name in self.outputs:
            dtype = self.dtypes[self.engine.get_tensor_dtype(name)]
            out = torch.empty(tuple(self.context.get_tensor_shape(name)), dtype=dtype, device="cuda")
            self.context.set_tensor_address(name, out.data_ptr())
            outs.append(out)
        return x, outs

    def _execute(self) -> None:
        if not self.context.execute_async_v3(torch.cuda.current_stream().cuda_stream):
            raise RuntimeError("TensorRT execution failed; see the TensorRT log")

    def host(self, images: np.ndarray) -> Timer:
        x, outs = self._bind(images)
        return staged_call(images, x, self._execute, outs)

    def device(self, images: np.ndarray) -> Timer | None:
        self._bind(images)
        return cuda_events(self._execute)


# ---------------------------------------------------------------- backends


def _no_cuda() -> str | None:
    return None if torch.cuda.is_available() else "no CUDA device"


def _ort_provider(provider: str) -> Callable[[], str | None]:
    def missing() -> str | None:
        import onnxruntime as ort

        if provider not in ort.get_available_providers():
            return f"onnxruntime has no {provider} (CPU build; install onnxruntime-gpu)"
        return _no_cuda()

    return missing


def _tensorrt() -> str | None:
    if importlib.util.find_spec("tensorrt") is None:
        return "tensorrt not installed"
    return _no_cuda()


def _cuda_providers(stage: Path, fp16: bool, tensorrt: bool, profile: Profile) -> list:
    """ONNX Runtime CUDA (or TensorRT + CUDA) providers on torch's current stream."""
    cuda = {"device_id": 0, "user_compute_stream": str(torch.cuda.current_stream().cuda_stream)}
    if not tensorrt:
        return [("CUDAExecutionProvider", cuda)]
    shapes = profile.shapes({"input": {"kind": "uint8", "shape": ["N", "H", "W", 3]}})
    dims = ["image:" + "x".join(str(d) for d in s) for s in shapes]
    trt_options = {
        **cuda, "trt_fp16_enable": fp16, "trt_engine_cache_enable": True, "trt_engine_cache_path": str(stage / "ort-trt"),
        "trt_profile_min_shapes": dims[0], "trt_profile_opt_shapes": dims[1], "trt_profile_max_shapes": dims[2],
    }
    return [("TensorrtExecutionProvider", trt_options), ("CUDAExecutionProvider", cuda)]


@dataclass(frozen=True)
class Backend:
    """One way to run the model: a name, a precision, a device, why it may be absent, and how to load it."""

    name: str
    precision: str
    device: str
    missing: Callable[[], str | None]
    load: Callable[[Models, str], Runner]

    @property
    def id(self) -> str:
        return f"{self.name}/{self.precision}/{self.device}"


def _ort(fmt_name: str, device: str, fp16: bool = False, tensorrt: bool = False) -> Callable[[Models, str], Runner]:
    def load(models: Models, kind: str) -> Runner:
        path = models.artifact(kind, fmt_name)
        if device == "cpu":
            return OrtRunner(path, ["CPUExecutionProvider"], cuda=False)
        return OrtRunner(path, _cuda_providers(models.stage, fp16, tensorrt, models.profile), cuda=True)

    return load


BACKENDS: tuple[Backend, ...] = (
    Backend("torch-eager", "fp32", "cpu", lambda: None, lambda m, k: TorchRunner(m.modules[k], "cpu")),
    Backend("torch-export", "fp32", "cpu", lambda: None, lambda m, k: TorchRunner(load_program(m.artifact(k, "pt2"))[0], "cpu")),
    Backend("onnxruntime-cpu", "fp32", "cpu", lambda: None, _ort("onnx", "cpu")),
    Backend("onnxruntime-cpu", "int8", "cpu", lambda: None, _ort("onnx-int8", "cpu")),
    Backend("torch-eager", "fp32", "cuda", _no_cuda, lambda m, k: TorchRunner(copy.deepcopy(m.modules[k]).cuda(), "cuda")),
    Backend("torch-eager", "fp16", "cuda", _no_cuda, lambda m, k: TorchRunner(half_copy(m.modules[k]).cuda(), "cuda")),
    Backend("torch-cuda-graph", "fp16", "cuda", _no_cuda, lambda m, k: CudaGraphRunner(half_copy(m.modules[k]).cuda())),
    Backend("torch-export", "fp32", "cuda", _no_cuda, lambda m, k: TorchRunner(m.cuda_program(k), "cuda")),
    Backend("onnxruntime-cuda", "fp32", "cuda", _ort_provider("CUDAExecutionProvider"), _ort("onnx", "cuda")),
    Backend("onnxruntime-cuda", "fp16", "cuda", _ort_provider("CUDAExecutionProvider"), _ort("onnx-fp16", "cuda")),
    Backend("onnxruntime-tensorrt", "fp16", "cuda", _ort_provider("TensorrtExecutionProvider"),
            _ort("onnx", "cuda", fp16=True, tensorrt=True)),
    Backend("tensorrt", "fp16", "cuda", _tensorrt, lambda m, k: TensorRTRunner(m.artifact(k, "engine"))),
)


def select_backends(patterns: list[str]) -> tuple[list[Backend], list[dict[str, str]]]:
    """Backends to run, and the skipped ones with why (absent here, or not matched by `patterns`)."""
    run, skipped = [], []
    for backend in BACKENDS:
        reason = backend.missing()
        if reason is None and not any(fnmatch.fnmatch(backend.id, p) for p in patterns):
            reason = f"not selected (--backends {','.join(patterns)})"
        if reason is None:
            run.append(backend)
        else:
            skipped.append({"backend": backend.name, "precision": backend.precision, "device": backend.device, "reason": reason})
    return run, skipped


# ---------------------------------------------------------------- cases and rows


@dataclass
class Row:
    """One measured case (host-to-host times; device_* on device-resident input, CUDA only)."""

    backend: str
    precision: str
    device: str
    model: str  # "fused" or "bare"
    input: str  # W x H
    batch: int
    iters: int = 0
    p50_ms: float | None = None
    p90_ms: float | None = None
    p99_ms: float | None = None
    images_per_s: float | None = None
    device_p50_ms: float | None = None
    device_p90_ms: float | None = None
    device_p99_ms: float | None = None
    device_images_per_s: float | None = None
    peak_fraction: float | None = None
    fused_over_bare: float | None = None
    cpu_matmul_gflop_per_s: float | None = None  # the CPU reference MatMul's rate, timed interleaved with this case
    status: str = "ok"

    def case(self) -> tuple:
        return self.backend, self.precision, self.device, self.input, self.batch

    @property
    def best_p50(self) -> float | None:
        """Device time where measured, else host-to-host."""
        return self.device_p50_ms if self.device_p50_ms is not None else self.p50_ms


def percentiles(times: list[float]) -> tuple[float, float, float]:
    p50, p90, p99 = np.percentile(times, [50, 90, 99])
    return float(p50), float(p90), float(p99)


@dataclass(frozen=True)
class Settings:
    warmup: int
    iters: int
    budget_s: float


def measure(rows: list[Row], runners: list[Runner], images: np.ndarray, settings: Settings,
            reference: tuple[Timer, float] | None = None) -> list[Row]:
    """Fill `rows` (one per runner, calls interleaved) with host and device percentiles; a failure is recorded, not raised.
    `reference` (a timer and its FLOPs) is timed in the same rounds; its rate goes to every row."""
    try:
        timers = [r.host(images) for r in runners] + ([reference[0]] if reference else [])
        host = sample(timers, settings.warmup, settings.iters, settings.budget_s)
        if reference:
            rate = reference[1] / statistics.median(host.pop()) * 1e3
            for row in rows:
                row.cpu_matmul_gflop_per_s = rate / 1e9
        for row, times in zip(rows, host):
            row.iters = len(times)
            row.p50_ms, row.p90_ms, row.p99_ms = percentiles(times)
            row.images_per_s = row.batch * 1e3 / row.p50_ms
        device_timers = [r.device(images) for r in runners]
        if all(t is not None for t in device_timers):
            for row, times in zip(rows, sample(device_timers, settings.warmup, settings.iters, settings.budget_s)):
                row.device_p50_ms, row.device_p90_ms, row.device_p99_ms = percentiles(times)
                row.device_images_per_s = row.batch * 1e3 / row.device_p50_ms
    except Exception as exc:  # one failing case must not lose the others
        for row in rows:
            row.status = f"failed: {type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
    return rows


def parse_sizes(text: str) -> list[tuple[str, tuple[int, int]]]:
    """"224x224,1280x720" (W x H) -> [(label, (H, W)), ...]."""
    out = []
    for label in (s.strip() for s in text.split(",") if s.strip()):
        w, h = (int(v) for v in label.lower().split("x"))
        out.append((label, (h, w)))
    return out


def random_images(batch: int, hw: tuple[int, int], seed: int = 0) -> np.ndarray:
    """uint8 RGB [batch, H, W, 3], as a camera or decoder hands them over."""
    return np.random.default_rng(seed).integers(0, 256, (batch, *hw, 3), dtype=np.uint8)


def run_backend(backend: Backend, models: Models, sizes, batches: tuple[int, ...], settings: Settings, bar) -> list[Row]:
    """Every case of one backend, the fused model and the bare encoder timed in turn."""
    runners = [backend.load(models, kind) for kind in KINDS]
    reference = models.matmul_reference(backend) if backend.device == "cpu" else None
    rows = []
    for label, hw in sizes:
        for batch in batches:
            bar.set_postfix_str(f"{backend.id} {label} x{batch}")
            case = [Row(backend.name, backend.precision, backend.device, kind, label, batch) for kind in KINDS]
            rows += measure(case, runners, random_images(batch, hw), settings, reference)
            bar.update(len(KINDS))
    return rows


def add_ratios(rows: list[Row], flops: float, peak: float | None) -> None:
    """Fused/bare ratio on fused rows (device time where measured), and the fraction of the peak: the GPU's
    datasheet fp16 peak, or on the CPU the reference MatMul's rate timed with the case."""
    bare = {r.case(): r for r in rows if r.model == "bare" and r.status == "ok"}
    for r in rows:
        if r.status != "ok":
            continue
        throughput = r.device_images_per_s or r.images_per_s
        if r.device == "cuda" and peak:
            r.peak_fraction = flops * throughput / (peak * 1e12)
        elif r.cpu_matmul_gflop_per_s:
            r.peak_fraction = flops * throughput / (r.cpu_matmul_gflop_per_s * 1e9)
        other = bare.get(r.case())
        if r.model == "fused" and other is not None and other.best_p50:
            r.fused_over_bare = r.best_p50 / other.best_p50


# ---------------------------------------------------------------- targets


def _find(rows: list[Row], **match: Any) -> list[Row]:
    return [r for r in rows if r.status == "ok" and all(getattr(r, k) == v for k, v in match.items())]


def targets(rows: list[Row], model: str, gpu: str | None, cores: int | None, flops: float) -> list[dict[str, Any]]:
    """The project's speed targets, each with what was measured and met / not met / n/a (never asserted).
    A CPU target under the encoder's `flops` at the reference MatMul's rate (a floor no backend beats) says so."""
    out: list[dict[str, Any]] = []

    def add(name: str, value: str, met: bool | None, note: str = "") -> None:
        out.append({"target": name, "measured": value, "met": met, "note": note})

    vit = model == "ViT-B-16"
    why_not = "" if vit else f"targets are for ViT-B-16, this run is {model}"
    for precision, limit in (("int8", 50.0), ("fp32", 140.0)):
        name = f"CPU (2 cores) ViT-B/16 fused {precision}, batch 1, 224x224: p50 <= {limit:g} ms"
        found = _find(rows, backend="onnxruntime-cpu", precision=precision, model="fused", input="224x224", batch=1)
        if not vit or not found:
            add(name, "n/a", None, why_not or "not measured")
        else:
            notes = [] if cores == 2 else [f"measured with {cores} cores"]
            rate = found[0].cpu_matmul_gflop_per_s
            floor = flops / (rate * 1e6) if rate else None
            if floor is not None and floor > limit:
                notes.append(f"below this machine's floor of {floor:.0f} ms: the encoder's FLOPs at the measured {precision} "
                             "matrix-product rate")
            add(name, f"{found[0].p50_ms:.1f} ms", found[0].p50_ms <= limit, "; ".join(notes))
    h200 = gpu is not None and "H200" in gpu.upper()
    gpu_why = why_not or ("" if h200 else f"targets are for an H200, this machine has {gpu or 'no GPU'}")
    for batch, name in ((1, "H200 ViT-B/16 fused fp16, batch 1, 224x224: device p50 <= 0.5 ms"),
                        (256, "H200 ViT-B/16 fused fp16, batch 256, 224x224: >= 15,000 images/s")):
        found = [r for r in _find(rows, device="cuda", precision="fp16", model="fused", input="224x224", batch=batch)]
        if gpu_why or not found:
            add(name, "n/a", None, gpu_why or "not measured")
        elif batch == 1:
            best = min(found, key=lambda r: r.best_p50)
            add(name, f"{best.best_p50:.3f} ms ({best.backend})", best.best_p50 <= 0.5)
        else:
            best = max(found, key=lambda r: r.device_images_per_s or r.images_per_s)
            rate = best.device_images_per_s or best.images_per_s
            add(name, f"{rate:,.0f} images/s ({best.backend})", rate >= 15000)
    for key in sorted({(r.backend, r.precision, r.device) for r in rows if r.fused_over_bare is not None}):
        ratios = [r.fused_over_bare for r in rows if (r.backend, r.precision, r.device) == key and r.fused_over_bare is not None]
        median = statistics.median(ratios)
        name = f"fused / bare encoder < {1 + OVERHEAD_TARGET:.2f} ({'/'.join(key)}, median of {len(ratios)} cases)"
        add(name, f"{median:.3f}", median < 1 + OVERHEAD_TARGET if vit else None, why_not)
    ref = _find(rows, backend="torch-cuda-graph", precision="fp16", model="bare", input="224x224", batch=1)
    add("reference: stock PyTorch fp16 bare encoder + CUDA graph on an H200, batch 1: 0.69 ms (~10,000 images/s at 256; "
        "compute limit ~22,000 images/s)", f"{ref[0].best_p50:.3f} ms" if ref else "n/a", None, "reference, not a target")
    return out


def status_text(target: dict[str, Any]) -> str:
    if target["met"] is None:
        return target["note"] or "n/a"
    return ("met" if target["met"] else "NOT met") + (f" ({target['note']})" if target["note"] else "")


# ---------------------------------------------------------------- report


TABLE_HEADERS = ["backend", "precision", "device", "input", "batch", "p50 ms", "p90 ms", "p99 ms", "images/s",
                 "device p50 ms", "device images/s", "% of peak", "bare p50 ms", "fused/bare"]


def cpu_rate_lines(result: dict[str, Any], rows: list[Row]) -> list[str]:
    """The CPU reference MatMul's median rate per precision and the encoder floor it implies (none if no CPU row)."""
    shape = result.get("cpu_matmul_shape")
    rates: dict[str, list[float]] = {}
    for r in rows:
        if r.cpu_matmul_gflop_per_s and r.model == "fused":
            library = "PyTorch" if r.backend.startswith("torch") else "ONNX Runtime"
            rates.setdefault(f"{library} {r.precision}", []).append(r.cpu_matmul_gflop_per_s)
    if not shape or not rates:
        return []
    flops = result["encoder_gflop_per_image"]
    parts = [f"{p} {fmt(statistics.median(v))} {'GOP/s' if p.endswith('int8') else 'GFLOP/s'} (encoder floor "
             f"{fmt(1e3 * flops / statistics.median(v))} ms per image)" for p, v in sorted(rates.items())]
    return [f"CPU reference: one {'x'.join(map(str, shape))} matrix product in the backend's library and precision, timed in "
            f"the same rounds as each CPU case (medians over cases): {'; '.join(parts)}. On the CPU, % of peak is against this rate."]


def report(result: dict[str, Any], rows: list[Row]) -> str:
    """The markdown report: the fused rows with their bare ratio, failures, skipped backends and targets."""
    bare = {r.case(): r for r in rows if r.model == "bare"}
    table = [
        [r.backend, r.precision, r.device, r.input, r.batch, r.p50_ms, r.p90_ms, r.p99_ms, r.images_per_s,
         r.device_p50_ms, r.device_images_per_s, f"{100 * r.peak_fraction:.1f}" if r.peak_fraction is not None else "n/a",
         bare[r.case()].best_p50 if r.case() in bare else None, r.fused_over_bare]
        for r in rows if r.model == "fused" and r.status == "ok"
    ]
    m = result["machine"]
    lines = [
        f"# Latency: {result['model']} (pretrained={result['pretrained']}), {result['classes']} classes",
        "",
        f"Machine: {m['gpu'] or 'no GPU'}; CPU {m['cpu']} x {m['cpu_count']} (torch {m['torch']}, onnxruntime {m['onnxruntime']}). "
        f"Encoder: {result['encoder_gflop_per_image']:.2f} GFLOP per image at {result['image_size']}"
        + (f"; GPU peak {fmt(result['peak_tflops'])} TFLOPS dense fp16." if result["peak_tflops"] else "."),
        *cpu_rate_lines(result, rows),
        "Times: host uint8 images in, host outputs back (preprocessing included); device = CUDA events on device-resident input. "
        "fused/bare = fused model over the bare encoder, same backend and run, calls interleaved (device time where measured).",
        "",
        markdown_table(TABLE_HEADERS, table),
    ]
    failed = [r for r in rows if r.status != "ok"]
    if failed:
        lines += ["", "## Failed cases", "", markdown_table(["backend", "precision", "device", "model", "input", "batch", "error"],
                                                            [[r.backend, r.precision, r.device, r.model, r.input, r.batch, r.status] for r in failed])]
    lines += ["", "## Skipped backends", "", markdown_table(["backend", "precision", "device", "reason"],
                                                             [[s["backend"], s["precision"], s["device"], s["reason"]] for s in result["skipped"]])]
    lines += ["", "## Targets", "", markdown_table(["target", "measured", "status"],
                                                   [[t["target"], t["measured"], status_text(t)] for t in result["targets"]])]
    return "\n".join(lines)


def plot(rows: list[Row], path: Path) -> Path:
    """p50 latency vs batch per backend (fused model), one panel per input size; dashed: device time."""
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = list(dict.fromkeys(r.input for r in rows))  # in the order measured
    fig, axes = plt.subplots(1, len(sizes), figsize=(6.5 * len(sizes), 4.5), squeeze=False)
    for ax, size in zip(axes[0], sizes):
        for key in sorted({(r.backend, r.precision, r.device) for r in rows}):
            case = sorted(_find(rows, backend=key[0], precision=key[1], device=key[2], model="fused", input=size), key=lambda r: r.batch)
            if not case:
                continue
            line, = ax.plot([r.batch for r in case], [r.p50_ms for r in case], "o-", label="/".join(key))
            if case[0].device_p50_ms is not None:
                ax.plot([r.batch for r in case], [r.device_p50_ms for r in case], "--", color=line.get_color())
        ax.set(yscale="log", xlabel="batch", ylabel="p50 latency (ms)", title=f"fused model, {size} input")
        ax.set_xscale("log", base=2)
        batches = sorted({r.batch for r in rows})
        ax.set_xticks(batches, [str(b) for b in batches])
        ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


# ---------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help="open_clip model (default ViT-B-16; --quick: semobridge-tiny)")
    p.add_argument("--pretrained", default="none", help="weights tag or file (default none: random; speed does not depend on weights)")
    p.add_argument("--classes", type=int, default=100, help="classes of the benchmark head (default 100)")
    p.add_argument("--batches", type=parse_ints, default=None, help=f"batch sizes for every backend (default CPU {CPU_BATCHES}, GPU {GPU_BATCHES})")
    p.add_argument("--sizes", default=None, help=f"input sizes W x H (default {SIZES}; --quick: 224x224)")
    p.add_argument("--backends", default="*", help="comma-separated fnmatch patterns on name/precision/device, e.g. 'onnxruntime-cpu/*/*,*/*/cuda'")
    p.add_argument("--warmup", type=int, default=None, help="warm-up calls per case (default 10; --quick: 1)")
    p.add_argument("--iters", type=int, default=None, help="timed calls per case at most (default 200; --quick: 3)")
    p.add_argument("--budget", type=float, default=None, help="seconds per case after at least 3 timed calls (default 10; --quick: 1)")
    p.add_argument("--out", type=Path, default=None, help="output folder (default benchmarks/results/<date>-<device>/)")
    p.add_argument("--quick", action="store_true", help="CI-sized run: semobridge-tiny, batch 1 and 2, 224x224, few iterations")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    quick = args.quick
    args.model = args.model or ("semobridge-tiny" if quick else "ViT-B-16")
    args.sizes = args.sizes or ("224x224" if quick else SIZES)
    args.batches = args.batches or ((1, 2) if quick else None)
    args.warmup = args.warmup if args.warmup is not None else (1 if quick else 10)
    args.iters = args.iters or (3 if quick else 200)
    args.budget = args.budget if args.budget is not None else (1.0 if quick else 10.0)
    args.out = args.out or default_out()
    return args


def build_models(args: argparse.Namespace, stage: Path, sizes, batches: tuple[int, ...]) -> Models:
    """Backbone, benchmark head, fused and bare models, and the TensorRT profile covering every case."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the random-weights warning: expected here, speed does not depend on weights
        backbone = load_backbone(args.model, args.pretrained, device="cpu", seed=args.seed)
    head = benchmark_head(backbone, args.classes, seed=args.seed)
    modules = {"fused": FusedClassifier(head, backbone), "bare": BareEncoder(head, backbone)}
    hws = [hw for _, hw in sizes]
    small = min(hws)
    big = (max(h for h, _ in hws), max(w for _, w in hws))
    profile = Profile(batch=(1, max(1, max(batches) // 8), max(batches)), sizes=(small, small, big))
    return Models(modules, stage, profile)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the benchmark; print the markdown report; write results.json, results.csv, results.md and latency.png."""
    args = parse_args(argv)
    sizes = parse_sizes(args.sizes)
    backends, skipped = select_backends([p.strip() for p in args.backends.split(",") if p.strip()])
    batches_of = {b.id: args.batches or (GPU_BATCHES if b.device == "cuda" else CPU_BATCHES) for b in backends}
    all_batches = tuple(sorted({n for v in batches_of.values() for n in v}))
    settings = Settings(args.warmup, args.iters, args.budget)
    with tempfile.TemporaryDirectory(prefix="semobridge-latency-") as tmp:
        models = build_models(args, Path(tmp), sizes, all_batches)
        flops = encoder_flops(models.modules["bare"])
        info = machine()
        peak = peak_tflops(info["gpu"])
        rows: list[Row] = []
        total = sum(len(sizes) * len(batches_of[b.id]) * len(KINDS) for b in backends)
        with tqdm(total=total, desc="latency", file=sys.stderr) as bar:
            for backend in backends:
                try:
                    rows += run_backend(backend, models, sizes, batches_of[backend.id], settings, bar)
                except Exception as exc:  # could not load or export for this backend: say so, go on
                    skipped.append({"backend": backend.name, "precision": backend.precision, "device": backend.device,
                                    "reason": f"failed to load: {type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"})
    add_ratios(rows, flops, peak)
    result = {
        "benchmark": "latency", "date": time.strftime("%Y-%m-%d %H:%M:%S"), "model": args.model, "pretrained": args.pretrained,
        "classes": args.classes, "image_size": models.modules["fused"].image_size, "machine": info,
        "encoder_gflop_per_image": flops / 1e9, "peak_tflops": peak,
        "cpu_matmul_shape": models.matmul[0] if models.matmul else None,
        "settings": {"warmup": args.warmup, "iters": args.iters, "budget_s": args.budget, "sizes": args.sizes, "batches": batches_of},
        "skipped": skipped, "rows": [asdict(r) for r in rows],
    }
    result["targets"] = targets(rows, args.model, info["gpu"], info["cpu_count"], flops)
    text = report(result, rows)
    print(text)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "results.json", result)
    write_csv(out / "results.csv", result["rows"])
    (out / "results.md").write_text(text + "\n", encoding="utf-8")
    plot(rows, out / "latency.png")
    print(f"\nwrote {out}/results.json, results.csv, results.md, latency.png", file=sys.stderr)
    return result


if __name__ == "__main__":
    main()

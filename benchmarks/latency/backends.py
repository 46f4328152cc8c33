"""The table of backends: a name, the library that runs it, a precision, a device, why it may be absent here,
and how to load a model into a runner."""
from __future__ import annotations

import copy
import fnmatch
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from semobridge_export.program import load_program
from semobridge_export.tensorrt import Profile

from .models import ExportCache, with_half_encoder
from .runners import CudaGraphRunner, OpenVinoRunner, OrtRunner, Runner, TensorRTRunner, TorchRunner

LIBRARIES = ("torch", "onnxruntime", "openvino", "tensorrt")


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


def openvino_missing(precision: str) -> Callable[[], str | None]:
    """Absent without openvino; bf16 also on CPUs that do not compute bf16 (OpenVINO would run f32 there)."""
    def missing() -> str | None:
        if importlib.util.find_spec("openvino") is None:
            return "openvino not installed (pip install 'semobridge-runtime[openvino]')"
        from semobridge_runtime.backends.openvino import import_openvino

        if precision == "bf16" and "BF16" not in import_openvino().Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
            return "this CPU does not compute bf16 (no AVX512_BF16 or AMX)"
        return None

    return missing


def _openvino_int8_missing() -> str | None:
    from semobridge_export.openvino_int8 import missing

    return missing()


def _openvino_int8(models: ExportCache, kind: str) -> Runner:
    """The static int8 IR as semobridge-export writes it (NNCF past the f32 preprocessing, calibrated on the export's
    synthetic check images: the benchmark's model has no fit images), run by the runtime's OpenVINO backend."""
    from semobridge_runtime.contract import openvino_int8_path

    from semobridge_export.exporter import CHECK_IMAGES
    from semobridge_export.openvino_int8 import write_int8_ir
    from semobridge_export.reference import synthetic_images

    path = models.artifact(kind, "onnx")
    pairing = write_int8_ir(path, openvino_int8_path(path), synthetic_images(CHECK_IMAGES, seed=0))
    return OpenVinoRunner(path, "int8", pairing)


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
    """One way to run the model: a name, its library (one of LIBRARIES), a precision, a device, why it may be
    absent, and how to load it."""

    name: str
    library: str
    precision: str
    device: str
    missing: Callable[[], str | None]
    load: Callable[[ExportCache, str], Runner]

    @property
    def id(self) -> str:
        return f"{self.name}/{self.precision}/{self.device}"


def _ort(fmt_name: str, device: str, fp16: bool = False, tensorrt: bool = False) -> Callable[[ExportCache, str], Runner]:
    def load(models: ExportCache, kind: str) -> Runner:
        path = models.artifact(kind, fmt_name)
        if device == "cpu":
            return OrtRunner(path, ["CPUExecutionProvider"], cuda=False)
        return OrtRunner(path, _cuda_providers(models.stage, fp16, tensorrt, models.profile), cuda=True)

    return load


BACKENDS: tuple[Backend, ...] = (
    Backend("torch-eager", "torch", "fp32", "cpu", lambda: None, lambda m, k: TorchRunner(m.modules[k], "cpu")),
    Backend("torch-export", "torch", "fp32", "cpu", lambda: None, lambda m, k: TorchRunner(load_program(m.artifact(k, "pt2"))[0], "cpu")),
    Backend("onnxruntime-cpu", "onnxruntime", "fp32", "cpu", lambda: None, _ort("onnx", "cpu")),
    Backend("onnxruntime-cpu", "onnxruntime", "int8", "cpu", lambda: None, _ort("onnx-int8", "cpu")),
    Backend("openvino-cpu", "openvino", "fp32", "cpu", openvino_missing("fp32"), lambda m, k: OpenVinoRunner(m.artifact(k, "onnx"), "f32")),
    Backend("openvino-cpu", "openvino", "bf16", "cpu", openvino_missing("bf16"), lambda m, k: OpenVinoRunner(m.artifact(k, "onnx"), "bf16")),
    Backend("openvino-cpu", "openvino", "int8", "cpu", _openvino_int8_missing, _openvino_int8),
    Backend("torch-eager", "torch", "fp32", "cuda", _no_cuda, lambda m, k: TorchRunner(copy.deepcopy(m.modules[k]).cuda(), "cuda")),
    Backend("torch-eager", "torch", "fp16", "cuda", _no_cuda, lambda m, k: TorchRunner(with_half_encoder(m.modules[k]).cuda(), "cuda")),
    Backend("torch-cuda-graph", "torch", "fp16", "cuda", _no_cuda, lambda m, k: CudaGraphRunner(with_half_encoder(m.modules[k]).cuda())),
    Backend("torch-export", "torch", "fp32", "cuda", _no_cuda, lambda m, k: TorchRunner(m.cuda_program(k), "cuda")),
    Backend("onnxruntime-cuda", "onnxruntime", "fp32", "cuda", _ort_provider("CUDAExecutionProvider"), _ort("onnx", "cuda")),
    Backend("onnxruntime-cuda", "onnxruntime", "fp16", "cuda", _ort_provider("CUDAExecutionProvider"), _ort("onnx-fp16", "cuda")),
    Backend("onnxruntime-tensorrt", "onnxruntime", "fp16", "cuda", _ort_provider("TensorrtExecutionProvider"),
            _ort("onnx", "cuda", fp16=True, tensorrt=True)),
    Backend("tensorrt", "tensorrt", "fp16", "cuda", _tensorrt, lambda m, k: TensorRTRunner(m.artifact(k, "engine"), m.class_set(k))),
)
LIBRARY = {b.name: b.library for b in BACKENDS}  # a row names its backend; this names the library


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

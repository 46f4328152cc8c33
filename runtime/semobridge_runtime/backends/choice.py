"""Which backend runs a model file, and why (Classifier.load's `backend`; the reason goes into its repr).

`auto`: TensorRT for engine files. For `.onnx`, OpenVINO where it is both faster and correct: the CPU has matrix
engines (AMX: there OpenVINO's bf16 measured 1.1-1.4x ONNX Runtime's int8, issue 21), ONNX Runtime would run on
the CPU only, openvino is installed, and the export measured OpenVINO's labels equal to the fp32 graph's on at
least 99 % of the fit images (metadata "openvino", written by semobridge-export --int8-cpu with openvino
installed). Everywhere else ONNX Runtime, with `model_int8.onnx` beside the model where its export measured it
(precision.int8_beside): on CPUs without AMX (AVX-512 with bf16 and VNNI included), OpenVINO's bf16 measured from
level to 1.6x slower than ONNX Runtime's int8 at batch 1 and from 0.7x to 1.16x its time at batch 8 (ViT-B/16, quiet
runs on two VMs, benchmarks/results/2026-12-06-cpu2-latency-quiet and -quiet-2), and it uses more CPU under load.

OpenVINO's static int8 (the export's NNCF IR, openvino_precision="int8") is never chosen here: it stays opt-in until
measured on a CPU with AMX int8 (without AMX it beat ONNX Runtime's int8 at batch 8 only; export/README.md).
"""

from __future__ import annotations

import importlib.util
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from ..contract import ENGINE_SUFFIXES
from ..errors import InputError
from ..precision import INT8_MIN_AGREEMENT, int8_beside, sidecar

BACKENDS = ("auto", "onnxruntime", "openvino", "tensorrt")
CPU_ONLY = ["CPUExecutionProvider"]


@dataclass(frozen=True)
class Choice:
    """The backend to load, the file it loads, and why."""

    backend: str
    path: Path
    reason: str


def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags (Linux /proc/cpuinfo; empty elsewhere)."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as info:
            for line in info:
                if line.startswith(("flags", "Features")):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def has_matrix_engines(flags: frozenset[str] | None = None) -> bool:
    """Intel AMX with bf16 (Sapphire Rapids and later)."""
    return "amx_bf16" in (cpu_flags() if flags is None else flags) and platform.machine() in ("x86_64", "AMD64")


def openvino_verdict(path: Path) -> tuple[bool, str]:
    """Whether `auto` runs `path` (an fp32 .onnx) with OpenVINO on this CPU, and why (or why not)."""
    if importlib.util.find_spec("openvino") is None:
        return False, "openvino not installed"
    if not has_matrix_engines():
        return False, "no AMX on this CPU (there OpenVINO measured slower than ONNX Runtime int8)"
    info = sidecar(path)
    measured = info.openvino if info is not None else None
    if measured is None or measured.label_agreement is None:
        return False, "the export did not measure OpenVINO (export with --int8-cpu and openvino installed)"
    agreement = measured.label_agreement
    if agreement < INT8_MIN_AGREEMENT:
        return False, f"OpenVINO's labels agreed with fp32 on only {agreement:.1%} of the fit images"
    return True, f"AMX; OpenVINO {measured.precision} agreed with fp32 on {agreement:.1%} of the fit images"


def choose(path: Path, backend: str, providers: Sequence[str] | None, prefer_int8: bool) -> Choice:
    """The backend and file for Classifier.load (see the module's docstring)."""
    if backend not in BACKENDS:
        raise InputError(f"unknown backend {backend!r}", hint=f"use one of {', '.join(map(repr, BACKENDS))}")
    if backend == "tensorrt" or (backend == "auto" and path.suffix in ENGINE_SUFFIXES):
        return Choice("tensorrt", path, "engine file" if backend == "auto" else "asked for")
    if backend == "openvino":
        return Choice("openvino", path, "asked for")
    from .session import choose_providers

    chosen = choose_providers(providers)
    reason = "asked for"
    if backend == "auto":
        if chosen != CPU_ONLY:
            reason = f"execution providers {chosen}"
        else:
            use, reason = openvino_verdict(path)
            if use:
                return Choice("openvino", path, reason)
            reason = f"not openvino: {reason}"
    int8 = int8_beside(path, chosen) if prefer_int8 else None
    return Choice("onnxruntime", int8 or path, reason)

"""What a GPU allows: its datasheet peak (the CPU's floors are measured: see floors)."""
from __future__ import annotations

#: Dense fp16/bf16 tensor-core peak in TFLOPS, by a part of the GPU's name (longest match wins).
GPU_PEAK_TFLOPS = {
    "H200": 989.0, "H100 PCIE": 756.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "L4": 121.0,
    "A10": 125.0, "T4": 65.0, "V100": 125.0, "ORIN": 42.5,  # AGX Orin 64 GB GPU, approximate
}


def peak_tflops(gpu: str | None) -> float | None:
    """Dense fp16 peak of a known GPU, None for unknown GPUs and the CPU."""
    if gpu is None:
        return None
    name = gpu.upper()
    matches = [key for key in GPU_PEAK_TFLOPS if key in name]
    return GPU_PEAK_TFLOPS[max(matches, key=len)] if matches else None

"""Cases and rows: every (input size, batch) of a backend, the fused model and the bare encoder timed in turn."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from semobridge.validate import parse_hw

from .backends import Backend
from .floors import CaseFloor, CpuFloors, machine_floor
from .models import KINDS, ExportCache
from .runners import Runner
from .timing import Timer, sample


@dataclass
class Row:
    """One measured case (host-to-host times; device_* on device-resident input, CUDA only)."""

    backend: str
    precision: str
    device: str
    model: str  # "fused" or "bare"
    input: str  # HEIGHTxWIDTH
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
    floor_ms: float | None = None  # CPU: the encoder's products at this batch, its library and precision, same rounds
    over_floor: float | None = None  # p50 / floor_ms
    over_bf16_floor: float | None = None  # p50 / the machine's bf16 floor at this batch (the fastest library's)
    over_int8_floor: float | None = None  # p50 / the machine's int8 floor at this batch
    status: str = "ok"

    def case(self) -> tuple:
        return self.backend, self.precision, self.device, self.input, self.batch

    @property
    def best_p50(self) -> float | None:
        """Device time where measured, else host-to-host."""
        return self.device_p50_ms if self.device_p50_ms is not None else self.p50_ms


@dataclass(frozen=True)
class Settings:
    warmup: int
    iters: int
    budget_s: float


def short_error(exc: BaseException) -> str:
    """`Type: first line of the message` (at most 200 characters of it), for a table cell."""
    message = str(exc).splitlines()[0][:200] if str(exc) else ""
    return f"{type(exc).__name__}: {message}"


def parse_sizes(text: str) -> list[tuple[str, tuple[int, int]]]:
    """"224x224,720x1280" (HEIGHTxWIDTH, as everywhere in semobridge) -> [(label, (H, W)), ...]."""
    return [(label, parse_hw(label, "input size")) for label in (s.strip() for s in text.split(",")) if label]


def random_images(batch: int, hw: tuple[int, int], seed: int = 0) -> np.ndarray:
    """uint8 RGB [batch, H, W, 3], as a camera or decoder hands them over."""
    return np.random.default_rng(seed).integers(0, 256, (batch, *hw, 3), dtype=np.uint8)


def percentiles(times: list[float]) -> tuple[float, float, float]:
    p50, p90, p99 = np.percentile(times, [50, 90, 99])
    return float(p50), float(p90), float(p99)


def measure(rows: list[Row], runners: list[Runner], images: np.ndarray, settings: Settings,
            floor: CaseFloor | None = None) -> list[Row]:
    """Fill `rows` (one per runner, calls interleaved) with host and device percentiles; a failure is recorded, not raised.
    `floor` (the case's products) is timed in the same rounds; its time goes to every row."""
    try:
        timers: list[Timer] = [r.host(images) for r in runners] + (floor.timers if floor else [])
        host = sample(timers, settings.warmup, settings.iters, settings.budget_s)
        if floor:
            floor_ms = floor.ms(host[len(runners):])
            for row in rows:
                row.floor_ms = floor_ms
        for row, times in zip(rows, host[:len(runners)]):
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
            row.status = f"failed: {short_error(exc)}"
    return rows


def run_backend(backend: Backend, models: ExportCache, floors: CpuFloors | None, sizes, batches: tuple[int, ...],
                settings: Settings, bar) -> list[Row]:
    """Every case of one backend, the fused model and the bare encoder timed in turn (and on the CPU the floor)."""
    runners = [backend.load(models, kind) for kind in KINDS]
    rows = []
    for label, hw in sizes:
        for batch in batches:
            bar.set_postfix_str(f"{backend.id} {label} x{batch}")
            case = [Row(backend.name, backend.precision, backend.device, kind, label, batch) for kind in KINDS]
            floor = floors.case(backend.library, backend.precision, batch) if floors and backend.device == "cpu" else None
            rows += measure(case, runners, random_images(batch, hw), settings, floor)
            bar.update(len(KINDS))
    return rows


def add_ratios(rows: list[Row], flops: float, peak: float | None, product_flops: float | None = None,
               machine: dict[int, dict[str, float]] | None = None) -> None:
    """Fused/bare ratio on fused rows (device time where measured); the fraction of the peak: the GPU's datasheet fp16
    peak, or on the CPU the rate of the encoder's products (`product_flops` per image) in the case's floor; on the CPU
    p50 over the case's floor and over the machine's bf16 and int8 floors at its batch (`machine`: batch -> floors)."""
    bare = {r.case(): r for r in rows if r.model == "bare" and r.status == "ok"}
    for r in rows:
        if r.status != "ok":
            continue
        throughput = r.device_images_per_s or r.images_per_s
        if r.device == "cuda" and peak:
            r.peak_fraction = flops * throughput / (peak * 1e12)
        elif r.floor_ms and product_flops:
            r.peak_fraction = flops * throughput / (product_flops * r.batch / r.floor_ms * 1e3)
        if r.floor_ms:
            r.over_floor = r.p50_ms / r.floor_ms
        for precision in ("bf16", "int8"):
            floor = machine_floor((machine or {}).get(r.batch, {}), precision) if r.device == "cpu" else None
            if floor:
                setattr(r, f"over_{precision}_floor", r.p50_ms / floor[0])
        other = bare.get(r.case())
        if r.model == "fused" and other is not None and other.best_p50:
            r.fused_over_bare = r.best_p50 / other.best_p50

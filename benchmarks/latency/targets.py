"""The project's speed targets, one table; each is reported with what was measured and met / not met / n/a
(never asserted). Targets are for ViT-B-16; a GPU target for the GPU it names."""
from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Any

from .measure import Row

TARGET_MODEL = "ViT-B-16"
B1 = {"model": "fused", "input": "224x224", "batch": 1}
ISSUE_21_CASES = (("224x224", 1), ("224x224", 8), ("480x640", 1), ("480x640", 8))
DEFAULT_CPU = {"backend": "onnxruntime-cpu", "precision": "int8", "model": "fused"}  # Classifier.load's CPU path here


@dataclass(frozen=True)
class Target:
    """`kind` says what is compared with `limit`: "p50" (ms, at most), "floor" (p50 over the floor measured with it,
    at most), "bf16 floor" / "int8 floor" (p50 over the machine's floor of that precision at the case's batch, at
    most, one line per case of `cases`), "device p50" (ms, the best backend, at most), "throughput" (images/s, the
    best backend, at least), "overhead" (median fused/bare per backend, below), "reference" (shown, not a target)."""

    name: str
    kind: str
    limit: float
    rows: dict[str, Any] = field(default_factory=dict)  # the fields the rows it reads have
    gpu: str | None = None  # a target for this GPU only
    cases: tuple[tuple[str, int], ...] = ()  # (input, batch) of a per-case target
    amx: bool = False  # set for a CPU with AMX: said so on CPUs without


TARGETS: tuple[Target, ...] = (
    Target("CPU (2 cores) ViT-B/16 fused int8, batch 1, 224x224: p50 <= 50 ms", "p50", 50.0,
           {"backend": "onnxruntime-cpu", "precision": "int8", **B1}),
    Target("CPU (2 cores) ViT-B/16 fused fp32, batch 1, 224x224: p50 <= 140 ms", "p50", 140.0,
           {"backend": "onnxruntime-cpu", "precision": "fp32", **B1}),
    Target("CPU ViT-B/16 fused int8, batch 1, 224x224: p50 <= 1.3 x its floor", "floor", 1.3,
           {"backend": "onnxruntime-cpu", "precision": "int8", **B1}),
    Target("CPU ViT-B/16 fused fp32, batch 1, 224x224: p50 <= 1.05 x its floor", "floor", 1.05,
           {"backend": "onnxruntime-cpu", "precision": "fp32", **B1}),
    Target("CPU default path (int8 artifact, ONNX Runtime) ViT-B/16 fused: p50 <= 1.5 x the machine's bf16 floor "
           "(issue 21)", "bf16 floor", 1.5, DEFAULT_CPU, cases=ISSUE_21_CASES, amx=True),
    Target("CPU default path (int8 artifact, ONNX Runtime) ViT-B/16 fused: p50 <= 1.2 x the machine's int8 floor "
           "(issue 21, stretch)", "int8 floor", 1.2, DEFAULT_CPU, cases=ISSUE_21_CASES, amx=True),
    Target("H200 ViT-B/16 fused fp16, batch 1, 224x224: device p50 <= 0.5 ms", "device p50", 0.5,
           {"device": "cuda", "precision": "fp16", **B1}, gpu="H200"),
    Target("H200 ViT-B/16 fused fp16, batch 256, 224x224: >= 15,000 images/s", "throughput", 15000.0,
           {"device": "cuda", "precision": "fp16", "model": "fused", "input": "224x224", "batch": 256}, gpu="H200"),
    Target("fused / bare encoder < 1.03", "overhead", 1.03),
    Target("reference: stock PyTorch fp16 bare encoder + CUDA graph on an H200, batch 1: 0.69 ms (~10,000 images/s at 256; "
           "compute limit ~22,000 images/s)", "reference", 0.69,
           {"backend": "torch-cuda-graph", "precision": "fp16", "model": "bare", "input": "224x224", "batch": 1}),
)


def find(rows: list[Row], **match: Any) -> list[Row]:
    return [r for r in rows if r.status == "ok" and all(getattr(r, k) == v for k, v in match.items())]


def _per_case(target: Target, found: list[Row], cpu: str) -> list[tuple[str, str, bool | None, str]]:
    """One line per case of a target against the machine's floor of a precision."""
    precision = target.kind.split()[0]
    note = "set for a CPU with AMX; this CPU has none" if target.amx and "amx" not in cpu.lower() else ""
    out = []
    for size, batch in target.cases:
        name = f"{target.name}, {size} batch {batch}"
        row = next((r for r in found if (r.input, r.batch) == (size, batch)), None)
        ratio = getattr(row, f"over_{precision}_floor") if row else None
        if ratio is None:
            out.append((name, "n/a", None, "not measured" if row is None else f"no {precision} floor measured"))
        else:
            out.append((name, f"{ratio:.2f} x ({row.p50_ms:.1f} ms over {row.p50_ms / ratio:.1f} ms)", ratio <= target.limit, note))
    return out


def _evaluate(target: Target, rows: list[Row], cores: int | None, cpu: str) -> list[tuple[str, str, bool | None, str]]:
    """(name, measured, met, note) for one target; several for "overhead" (one per backend) and per-case targets."""
    found = find(rows, **target.rows)
    if target.kind in ("bf16 floor", "int8 floor") and found:
        return _per_case(target, found, cpu)
    if target.kind == "reference":
        return [(target.name, f"{found[0].best_p50:.3f} ms" if found else "n/a", None, "reference, not a target")]
    if target.kind == "overhead":
        keys = sorted({(r.backend, r.precision, r.device) for r in rows if r.fused_over_bare is not None})
        out = []
        for key in keys:
            ratios = [r.fused_over_bare for r in rows if (r.backend, r.precision, r.device) == key and r.fused_over_bare is not None]
            median = statistics.median(ratios)
            out.append((f"{target.name} ({'/'.join(key)}, median of {len(ratios)} cases)", f"{median:.3f}", median < target.limit, ""))
        return out
    if not found:
        return [(target.name, "n/a", None, "not measured")]
    if target.kind == "device p50":
        best = min(found, key=lambda r: r.best_p50)
        return [(target.name, f"{best.best_p50:.3f} ms ({best.backend})", best.best_p50 <= target.limit, "")]
    if target.kind == "throughput":
        best = max(found, key=lambda r: r.device_images_per_s or r.images_per_s)
        rate = best.device_images_per_s or best.images_per_s
        return [(target.name, f"{rate:,.0f} images/s ({best.backend})", rate >= target.limit, "")]
    row, floor = found[0], found[0].floor_ms
    notes = [] if cores == 2 else [f"measured with {cores} cores"]
    if target.kind == "floor":
        if floor is None:
            return [(target.name, "n/a", None, "no floor measured")]
        ratio = row.p50_ms / floor
        return [(target.name, f"{ratio:.2f} x ({row.p50_ms:.1f} ms over a {floor:.1f} ms floor)", ratio <= target.limit, "")]
    if floor is not None and floor > target.limit:
        notes.append(f"below this machine's floor of {floor:.0f} ms: the encoder's matrix products alone, "
                     f"{row.precision}, in the same rounds")
    return [(target.name, f"{row.p50_ms:.1f} ms", row.p50_ms <= target.limit, "; ".join(notes))]


def targets(rows: list[Row], model: str, gpu: str | None, cores: int | None, cpu: str = "") -> list[dict[str, Any]]:
    """Every target of TARGETS with what was measured and met / not met / n/a (None); `cpu` names the CPU and its
    flags (benchmarks.common.cpu_model)."""
    out = []
    for target in TARGETS:
        why_not = "" if model == TARGET_MODEL else f"targets are for {TARGET_MODEL}, this run is {model}"
        if not why_not and target.gpu and (gpu is None or target.gpu not in gpu.upper()):
            why_not = f"targets are for an {target.gpu}, this machine has {gpu or 'no GPU'}"
        for name, measured, met, note in _evaluate(target, rows, cores, cpu):
            if why_not and target.kind != "reference":
                met, note = None, why_not
            out.append({"target": name, "measured": measured if not why_not or target.kind == "overhead" else "n/a",
                        "met": met, "note": note})
    return out


def status_text(target: dict[str, Any]) -> str:
    if target["met"] is None:
        return target["note"] or "n/a"
    return ("met" if target["met"] else "NOT met") + (f" ({target['note']})" if target["note"] else "")

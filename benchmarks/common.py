"""Shared pieces of the benchmarks: synthetic embeddings, result folders, tables and files."""
from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import math
import os
import platform
import socket
from pathlib import Path
from typing import Any, Iterable, Sequence

import torch

from semobridge.backbones import Backbone
from semobridge.blend import BlendParams
from semobridge.features import FeatureSet
from semobridge.fit import fit_features
from semobridge.model import ModelInfo, SeMoBridge

RESULTS = Path(__file__).resolve().parent / "results"
QUICK = "quick"  # results/quick/: CI-sized runs, not committed
REPO = Path(__file__).resolve().parents[1]
#: Noise of the synthetic embeddings, relative to the class signal: validation accuracy of the
#: default blend lands around 25-95 % for 10-1000 classes at d = 512 (neither chance nor 100 %).
TEXT_NOISE, IMAGE_NOISE = 1.2, 6.0


def synthetic_features(
    classes: int, shots: int, val: int, d_t: int, d: int, seed: int = 0, text_projection: torch.Tensor | None = None
) -> FeatureSet:
    """CLIP-like embeddings with a modality gap: images = class direction through W + a shared offset + noise.

    `val` validation images per class (0: none). `text_projection` fixes W (a backbone's), else a random one.
    """
    g = torch.Generator().manual_seed(seed)
    W = text_projection if text_projection is not None else torch.randn(d_t, d, generator=g) / math.sqrt(d_t)
    directions = torch.randn(classes, d_t, generator=g)
    prompts = 2
    eos = directions.repeat_interleave(prompts, 0) + TEXT_NOISE * torch.randn(classes * prompts, d_t, generator=g)
    scale = float((directions @ W).norm(dim=-1).mean()) / math.sqrt(d)  # per-coordinate size of the class signal
    gap = 3 * scale * torch.randn(d, generator=g)

    def images(k: int) -> tuple[torch.Tensor, torch.Tensor]:
        labels = torch.arange(classes).repeat_interleave(k)
        return directions[labels] @ W + gap + IMAGE_NOISE * scale * torch.randn(len(labels), d, generator=g), labels

    shot_image, shot_label = images(shots)
    val_image, val_label = images(val) if val else (None, None)
    return FeatureSet(
        text_projection=W, text_eos=eos, text_class=torch.arange(classes).repeat_interleave(prompts),
        shot_image=shot_image, shot_label=shot_label, val_image=val_image, val_label=val_label,
        logit_scale=100.0, class_names=[f"class {i}" for i in range(classes)],
    )


def info_for(features: FeatureSet, backbone: dict[str, str], image_size: int = 224, mean=(0.5,) * 3, std=(0.5,) * 3) -> ModelInfo:
    """Model info for a head fitted on `features` (default blend parameters)."""
    return ModelInfo(
        class_names=features.class_names, backbone=backbone, image_size=image_size, mean=list(mean), std=list(std),
        params=BlendParams().to_dict(), shots=int(round(features.shots)), seed=0,
    )


def benchmark_head(backbone: Backbone, classes: int, shots: int = 4, seed: int = 0) -> SeMoBridge:
    """A training-free head for `backbone` fitted with fixed blend parameters on random embeddings of its widths."""
    features = synthetic_features(classes, shots, 0, *backbone.text_projection.shape, seed=seed, text_projection=backbone.text_projection.cpu())
    info = info_for(features, backbone.identity(), backbone.image_size, backbone.mean, backbone.std)
    return fit_features(features, info, params=BlendParams())


def slug(text: str) -> str:
    """"NVIDIA H200" -> "nvidia-h200"."""
    return "-".join("".join(c if c.isalnum() else " " for c in text.lower()).split())


def gpu_name() -> str | None:
    """Name of CUDA device 0, or None without CUDA."""
    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None


def device_slug() -> str:
    """The GPU's name, else `cpu<cores>`."""
    return slug(gpu_name() or f"cpu{os.cpu_count()}")


def results_folder(out: Path | None, suffix: str = "", *, quick: bool = False, force: bool = False) -> Path:
    """Where a run writes, decided before it starts; results are never overwritten by default.

    `out` as given, refused if it exists and is not empty unless `force`; else a fresh
    benchmarks/results/<date>-<device><suffix>/ (-2, -3, ... when taken), under results/quick/ for a CI-sized
    `quick` run (ignored by git, so it never replaces a committed result).
    """
    if out is not None:
        if out.exists() and any(out.iterdir()) and not force:
            raise SystemExit(f"{out} already holds results; choose another --out, or pass --force to overwrite them")
        return out
    base = (RESULTS / QUICK if quick else RESULTS) / f"{dt.date.today().isoformat()}-{device_slug()}{suffix}"
    candidates = (base.with_name(f"{base.name}-{n}") if n > 1 else base for n in range(1, 10_000))
    return next(c for c in candidates if not c.exists())


def add_out_options(p: argparse.ArgumentParser, suffix: str = "", *, quick: bool = False) -> None:
    """--out and --force as every harness takes them (read by `results_folder`); `quick`: the harness has --quick."""
    where = f"a fresh benchmarks/results/<date>-<device>{suffix}/" + ("; --quick: under benchmarks/results/quick/" if quick else "")
    p.add_argument("--out", type=Path, default=None, help=f"output folder, refused if it holds results unless --force (default: {where})")
    p.add_argument("--force", action="store_true", help="write into an --out folder that already holds results")


#: CPU features that decide matrix-product speed (x86 vector widths and int8 dot products; Arm dot products).
CPU_FEATURES = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "avx_vnni", "amx_int8", "amx_bf16", "asimd",
                "asimddp", "i8mm", "bf16", "sve")


def cpu_model() -> str:
    """The CPU's model name and its matrix-relevant features, from /proc/cpuinfo where there is one."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return platform.processor() or platform.machine()
    fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    fields = {k.strip(): v.strip() for k, v in fields.items()}
    name = fields.get("model name") or fields.get("Model") or platform.machine()
    flags = set((fields.get("flags") or fields.get("Features") or "").split())
    found = [f for f in CPU_FEATURES if f in flags]
    return f"{name} ({platform.machine()}{': ' + ' '.join(found) if found else ''})"


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    import onnxruntime

    return {
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "gpu": gpu_name(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "onnxruntime": onnxruntime.__version__,
        "openvino": _version("openvino"),
        "torch_threads": torch.get_num_threads(),
    }


def _version(package: str) -> str | None:
    """An installed package's version, None if absent."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return None


def reset_peak_rss() -> None:
    """Start a new peak-memory measurement (Linux: /proc/self/clear_refs; elsewhere the peak since start)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def peak_rss_mb() -> float:
    """Peak resident memory of this process in MiB since start or the last reset_peak_rss()."""
    try:
        status = Path("/proc/self/status").read_text()
        return int(status.split("VmHWM:")[1].split()[0]) / 1024
    except (OSError, IndexError):
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
        return peak / (1024 * 1024 if platform.system() == "Darwin" else 1024)


def fmt(value: Any, digits: int = 3) -> str:
    """A table cell: floats to `digits` significant digits (at least integer precision), None as '-'."""
    if value is None:
        return "-"
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        if abs(value) >= 10 ** digits:
            return f"{value:,.0f}"
        return f"{value:.{digits}g}"
    return str(value)


def markdown_table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A GitHub markdown table."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(fmt(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def write_json(path: Path, data: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, default=str) + "\n", encoding="utf-8")
    return path


def write_report(out: Path, stem: str, data: Any, text: str) -> None:
    """`<stem>.json` and the markdown `<stem>.md` into `out`."""
    write_json(out / f"{stem}.json", data)
    (out / f"{stem}.md").write_text(text + "\n", encoding="utf-8")


def write_csv(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else [])
        writer.writeheader()
        writer.writerows(rows)
    return path


def parse_ints(text: str) -> tuple[int, ...]:
    """"1,8,32" -> (1, 8, 32)."""
    return tuple(int(v) for v in text.split(",") if v.strip())


def free_ports(n: int) -> list[int]:
    """n distinct free TCP ports on 127.0.0.1 (held together while picking, so they differ)."""
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def save_figure(fig: Any, axes: Iterable[Any], path: Path, dpi: int) -> Path:
    """Grid and legend on every panel, then the figure written to `path` (PNG) and closed."""
    import matplotlib.pyplot as plt

    for ax in axes:
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path

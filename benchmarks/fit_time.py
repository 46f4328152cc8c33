"""Fit time from cached embeddings: our blend search against the published Optuna TPE, fit, SeMoBridge-T.

Embeddings are synthetic, of ViT-B/16 widths (d_t = d = 512), C classes x K shots, K' = min(K, 4)
validation images per class and a held-out test split. Per seed, both searches run on the same
validation split, one after the other: ours (`search_blend`, the library's default) and the
published procedure (1,000 sequential Optuna TPE trials over blend.RANGES, objective = validation
accuracy). Each reports its time, peak memory, and validation and test accuracy of what it chose;
the table shows the median times, their ratio against the 20x target, and accuracies averaged
over the seeds. The training-free fit and SeMoBridge-T steps are timed on the first seed.

    python -m benchmarks.fit_time                # C 10/100/1000, K 1/16, 3 seeds, 5000 steps, CPU (+ CUDA)
    python -m benchmarks.fit_time --quick        # CI-sized
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

if __package__ in (None, ""):  # run as a file: python benchmarks/fit_time.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
from tqdm.auto import tqdm

from benchmarks.common import (
    add_out_options, fmt, info_for, machine, markdown_table, parse_ints, peak_rss_mb, reset_peak_rss, results_folder, synthetic_features, write_report,
)
from semobridge.blend import BlendParams
from semobridge.data import VAL_SHOTS_MAX
from semobridge.features import FeatureSet
from semobridge.fit import build_head, fit_features
from semobridge.model import SeMoBridge
from semobridge.search import DEFAULT_TRIALS, search_blend
from semobridge.train import train_bridge

WIDTH = 512  # ViT-B/16: d_t = d = 512
SYNTHETIC_BACKBONE = {"name": "synthetic ViT-B/16 widths", "pretrained": "none", "weights_hash": "0"}
TARGET = 20.0  # TPE time / our time (issue 12)
TEST_IMAGES = 2000  # held-out test images per case (at least 10 per class)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], Any], device: torch.device) -> tuple[Any, float]:
    """fn's result and its wall time in seconds (CUDA work included)."""
    synchronize(device)
    start = time.perf_counter()
    result = fn()
    synchronize(device)
    return result, time.perf_counter() - start


def measured(fn: Callable[[], Any], device: torch.device) -> tuple[Any, float, float, float]:
    """fn's result, wall time, CPU time of this process (less sensitive to other load on a shared machine)
    and peak memory in MiB while it ran (host RSS; on CUDA the device's allocations)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    reset_peak_rss()
    cpu = time.process_time()
    result, seconds = timed(fn, device)
    cpu = time.process_time() - cpu
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else peak_rss_mb()
    return result, seconds, cpu, peak


def with_test_split(classes: int, shots: int, seed: int) -> tuple[FeatureSet, torch.Tensor, torch.Tensor]:
    """Synthetic features with K' validation images per class, and a test split drawn from the same classes."""
    val = min(shots, VAL_SHOTS_MAX)
    test = max(10, TEST_IMAGES // classes)
    features = synthetic_features(classes, shots, val + test, WIDTH, WIDTH, seed=seed)
    rank = torch.zeros_like(features.val_label)  # index of each image within its class
    for c in range(classes):
        where = (features.val_label == c).nonzero().squeeze(-1)
        rank[where] = torch.arange(len(where))
    is_val = rank < val
    test_image, test_label = features.val_image[~is_val], features.val_label[~is_val]
    features.val_image, features.val_label = features.val_image[is_val], features.val_label[is_val]
    return features, test_image, test_label


@torch.no_grad()
def accuracy(head: SeMoBridge, params: BlendParams, images: torch.Tensor, labels: torch.Tensor) -> float:
    return float((head.with_params(params)(images).argmax(-1) == labels).float().mean())


def one_seed(classes: int, shots: int, seed: int, device: torch.device, args: argparse.Namespace) -> dict[str, Any]:
    """Both searches on one synthetic split: time, peak memory, validation and test accuracy."""
    features, test_image, test_label = with_test_split(classes, shots, seed)
    features = features.to(device)
    test_image, test_label = test_image.to(device), test_label.to(device)
    head = build_head(features, info_for(features, SYNTHETIC_BACKBONE))
    row: dict[str, Any] = {"seed": seed, "val_images": len(features.val_label), "test_images": len(test_label)}
    for name, method, trials in (("ours", "coordinate", args.trials), ("tpe", "tpe", args.tpe_trials)):
        params, seconds, cpu, peak = measured(lambda: search_blend(
            head, features.val_image, features.val_label, trials=trials, seed=seed, progress=False, method=method), device)
        row |= {f"{name}_s": seconds, f"{name}_cpu_s": cpu, f"{name}_peak_mb": peak, f"{name}_params": params.to_dict(),
                f"{name}_val_acc": accuracy(head, params, features.val_image, features.val_label),
                f"{name}_test_acc": accuracy(head, params, test_image, test_label)}
    row |= {"defaults_val_acc": accuracy(head, BlendParams(), features.val_image, features.val_label),
            "defaults_test_acc": accuracy(head, BlendParams(), test_image, test_label)}
    return row


def case(classes: int, shots: int, device: torch.device, args: argparse.Namespace) -> dict[str, Any]:
    """One (device, C, K): both searches over the seeds; fit and SeMoBridge-T steps on the first seed."""
    runs = [one_seed(classes, shots, seed, device, args) for seed in args.seeds]
    features = synthetic_features(classes, shots, min(shots, VAL_SHOTS_MAX), WIDTH, WIDTH, seed=args.seeds[0])
    info = info_for(features, SYNTHETIC_BACKBONE)
    _, fit_s = timed(lambda: fit_features(features, info, params=BlendParams(), device=device), device)
    _, train_s = timed(lambda: train_bridge(features.to(device), steps=args.steps, seed=args.seeds[0], progress=args.progress), device)
    median = lambda key: statistics.median(r[key] for r in runs)  # noqa: E731
    mean = lambda key: statistics.fmean(r[key] for r in runs)  # noqa: E731
    return {
        "device": device.type, "classes": classes, "shots": shots, "seeds": list(args.seeds),
        "val_per_class": min(shots, VAL_SHOTS_MAX), "trials": args.trials or DEFAULT_TRIALS["coordinate"], "tpe_trials": args.tpe_trials,
        "search_s": median("ours_s"), "tpe_s": median("tpe_s"), "tpe_over_search_time": median("tpe_s") / median("ours_s"),
        "search_cpu_s": median("ours_cpu_s"), "tpe_cpu_s": median("tpe_cpu_s"),
        "tpe_over_search_cpu": median("tpe_cpu_s") / median("ours_cpu_s"), "target": TARGET,
        **{f"{name}_{split}_acc": mean(f"{name}_{split}_acc") for name in ("ours", "tpe", "defaults") for split in ("val", "test")},
        "ours_peak_mb": max(r["ours_peak_mb"] for r in runs), "tpe_peak_mb": max(r["tpe_peak_mb"] for r in runs),
        "fit_s": fit_s, "train_steps": args.steps, "train_s": train_s, "train_ms_per_step": 1e3 * train_s / args.steps,
        "runs": runs,
    }


def warm_up(device: torch.device, args: argparse.Namespace) -> None:
    """One small untimed case per device, so library loading and CUDA start-up are not timed."""
    small = argparse.Namespace(**{**vars(args), "steps": 2, "tpe_trials": 2, "trials": 16, "seeds": (0,), "progress": False})
    case(4, 1, device, small)


def devices(names: str) -> tuple[list[torch.device], list[str]]:
    """Requested devices that exist here, and notes for those that do not."""
    found, notes = [], []
    for name in (n.strip() for n in names.split(",") if n.strip()):
        if name == "cuda" and not torch.cuda.is_available():
            notes.append("cuda skipped: no CUDA device")
        else:
            found.append(torch.device(name))
    return found, notes


HEADERS = ["device", "C", "K", "seeds", "our search s", "TPE s", "TPE time / ours", f"target >= {TARGET:g}x", "CPU s: ours / TPE",
           "TPE CPU / ours",
           "val: ours", "val: TPE", "test: ours", "test: TPE", "ours >= TPE (val, test)", "defaults val / test",
           "peak MiB: ours", "peak MiB: TPE", "fit s", "SeMoBridge-T steps", "SeMoBridge-T s", "ms/step"]


def table(rows: list[dict[str, Any]]) -> str:
    pct = lambda v: f"{100 * v:.2f}"  # noqa: E731
    return markdown_table(HEADERS, [
        [r["device"], r["classes"], r["shots"], len(r["seeds"]), r["search_s"], r["tpe_s"], f"{r['tpe_over_search_time']:.3g}x",
         "met" if r["tpe_over_search_time"] >= r["target"] else "NOT met",
         f"{fmt(r['search_cpu_s'])} / {fmt(r['tpe_cpu_s'])}", f"{r['tpe_over_search_cpu']:.3g}x",
         pct(r["ours_val_acc"]), pct(r["tpe_val_acc"]), pct(r["ours_test_acc"]), pct(r["tpe_test_acc"]),
         ", ".join("yes" if r[f"ours_{s}_acc"] >= r[f"tpe_{s}_acc"] else "NO" for s in ("val", "test")),
         f"{pct(r['defaults_val_acc'])} / {pct(r['defaults_test_acc'])}", r["ours_peak_mb"], r["tpe_peak_mb"],
         r["fit_s"], r["train_steps"], r["train_s"], r["train_ms_per_step"]]
        for r in rows
    ])


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--classes", type=parse_ints, default=None, help="class counts C (default 10,100,1000; --quick: 10)")
    p.add_argument("--shots", type=parse_ints, default=(1, 16), help="shots K (default 1,16)")
    p.add_argument("--seeds", type=parse_ints, default=None, help="data and search seeds (default 0,1,2; --quick: 0)")
    p.add_argument("--trials", type=int, default=None, help="our search's candidates (default: the library's)")
    p.add_argument("--steps", type=int, default=None, help="SeMoBridge-T steps (default 5000, the published count; --quick: 10)")
    p.add_argument("--tpe-trials", type=int, default=None, help="Optuna TPE trials (default 1000, as published; --quick: 50)")
    p.add_argument("--devices", default="cpu,cuda", help="devices to time on (cuda only where present)")
    p.add_argument("--threads", type=int, default=None, help="PyTorch CPU threads (default: PyTorch's, one per core)")
    add_out_options(p, "-fit-time", quick=True)
    p.add_argument("--quick", action="store_true", help="CI-sized: C 10, one seed, 10 steps, 50 TPE trials")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no per-step progress bars")
    args = p.parse_args(argv)
    args.classes = args.classes or ((10,) if args.quick else (10, 100, 1000))
    args.seeds = args.seeds or ((0,) if args.quick else (0, 1, 2))
    args.steps = args.steps or (10 if args.quick else 5000)
    args.tpe_trials = args.tpe_trials or (50 if args.quick else DEFAULT_TRIALS["tpe"])
    args.out = results_folder(args.out, "-fit-time", quick=args.quick, force=args.force)
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run every case; print the markdown table; write fit_time.json and fit_time.md."""
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    found, notes = devices(args.devices)
    cases = [(c, k, d) for d in found for c in args.classes for k in args.shots]
    for device in found:
        warm_up(device, args)
    rows = [case(c, k, d, args) for c, k, d in tqdm(cases, desc="fit time", file=sys.stderr)]
    result = {
        "benchmark": "fit_time", "date": time.strftime("%Y-%m-%d %H:%M:%S"), "machine": machine(), "width": WIDTH,
        "command": " ".join(["python -m benchmarks.fit_time", *(argv if argv is not None else sys.argv[1:])]),
        "embeddings": "synthetic (random, CLIP-like with a modality gap); accuracies compare the two searches, nothing else",
        "notes": notes, "rows": rows,
    }
    text = "\n".join([
        "# Fit time from cached embeddings (synthetic, d_t = d = 512)", "",
        f"`{result['command']}` on {result['machine']['cpu']}, {result['machine']['cpu_count']} CPUs"
        + (f", {result['machine']['gpu']}" if result["machine"]["gpu"] else "") + ".",
        f"PyTorch threads: {result['machine']['torch_threads']}. Times are medians over the seeds (wall, and CPU "
        "time of the process, which other load on a shared machine disturbs less), accuracies (%) means over them; "
        "peak memory is the maximum (host RSS of the whole process while the search ran; on CUDA the device's "
        "allocations). Accuracies are on synthetic embeddings: they compare our search with TPE on the same splits, "
        "nothing more.",
        *(f"- {n}" for n in notes), "", table(rows),
    ])
    print(text)
    write_report(args.out, "fit_time", result, text)
    return result


if __name__ == "__main__":
    main()

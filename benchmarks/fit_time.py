"""Fit time from cached embeddings: training-free fit, blend search against Optuna TPE, SeMoBridge-T.

Embeddings are synthetic, of ViT-B/16 widths (d_t = d = 512), C classes x K shots and
K' = min(K, 4) validation images per class. Our blend search (thousands of candidates per
tensor op) runs beside the published procedure, 1,000 sequential Optuna TPE trials over the
same seven ranges (blend.RANGES) with the same objective (validation accuracy of the blend),
one trial at a time; both reach a validation accuracy, shown side by side with the time ratio.

    python -m benchmarks.fit_time                # C 10/100/1000, K 1/16, 5000 steps, CPU (+ CUDA)
    python -m benchmarks.fit_time --quick        # CI-sized
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any, Callable

if __package__ in (None, ""):  # run as a file: python benchmarks/fit_time.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
from tqdm.auto import tqdm

from benchmarks.common import default_out, info_for, machine, markdown_table, parse_ints, synthetic_features, write_report
from semobridge.blend import RANGES, BlendParams, blend
from semobridge.data import VAL_SHOTS_MAX
from semobridge.features import FeatureSet
from semobridge.fit import build_head, fit_features
from semobridge.model import SeMoBridge
from semobridge.search import search_blend
from semobridge.train import train_bridge

WIDTH = 512  # ViT-B/16: d_t = d = 512
SYNTHETIC_BACKBONE = {"name": "synthetic ViT-B/16 widths", "pretrained": "none", "weights_hash": "0"}


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


@torch.no_grad()
def val_accuracy(aff: torch.Tensor, kl: torch.Tensor, labels: torch.Tensor, params: torch.Tensor) -> float:
    """Validation top-1 accuracy of the blend with one parameter row (the objective of both searches)."""
    return float((blend(aff, kl, params).argmax(-1) == labels).float().mean())


def tpe_search(head: SeMoBridge, features: FeatureSet, trials: int, seed: int, progress: bool) -> BlendParams:
    """The published procedure: `trials` sequential Optuna TPE trials over blend.RANGES, maximising validation accuracy."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with torch.no_grad():
        aff = head.affinities(features.val_image)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed))

    def objective(trial: optuna.Trial) -> float:
        row = torch.tensor([trial.suggest_float(name, lo, hi) for name, (lo, hi) in RANGES.items()], device=aff.device)
        return val_accuracy(aff, head.class_kl, features.val_label, row)

    study.optimize(objective, n_trials=trials, show_progress_bar=progress)
    return BlendParams.from_dict(study.best_params)


def case(classes: int, shots: int, device: torch.device, args: argparse.Namespace) -> dict[str, Any]:
    """One (device, C, K): training-free fit, both searches with their validation accuracy, SeMoBridge-T steps."""
    features = synthetic_features(classes, shots, min(shots, VAL_SHOTS_MAX), WIDTH, WIDTH, seed=args.seed)
    info = info_for(features, SYNTHETIC_BACKBONE)
    _, fit_s = timed(lambda: fit_features(features, info, params=BlendParams(), device=device), device)
    on_device = features.to(device)
    head = build_head(on_device, info)
    aff = head.affinities(on_device.val_image)

    def accuracy(params: BlendParams) -> float:
        return val_accuracy(aff, head.class_kl, on_device.val_label, params.to_tensor().to(device))

    ours, search_s = timed(lambda: search_blend(head, on_device.val_image, on_device.val_label, seed=args.seed, progress=False), device)
    tpe, tpe_s = timed(lambda: tpe_search(head, on_device, args.tpe_trials, args.seed, args.progress), device)
    _, train_s = timed(lambda: train_bridge(on_device, steps=args.steps, seed=args.seed, progress=args.progress), device)
    return {
        "device": device.type, "classes": classes, "shots": shots, "val_per_class": min(shots, VAL_SHOTS_MAX),
        "fit_s": fit_s,
        "search_s": search_s, "search_val_acc": accuracy(ours),
        "tpe_trials": args.tpe_trials, "tpe_s": tpe_s, "tpe_val_acc": accuracy(tpe),
        "tpe_over_search_time": tpe_s / search_s,
        "defaults_val_acc": accuracy(BlendParams()),
        "train_steps": args.steps, "train_s": train_s, "train_ms_per_step": 1e3 * train_s / args.steps,
    }


def warm_up(device: torch.device, args: argparse.Namespace) -> None:
    """One small untimed case per device, so library loading and CUDA start-up are not timed."""
    small = argparse.Namespace(**{**vars(args), "steps": 2, "tpe_trials": 2, "progress": False})
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


HEADERS = ["device", "C", "K", "fit (training-free) s", "our search s", "our val acc", "TPE trials", "TPE s", "TPE val acc",
           "TPE time / ours", "ours >= TPE", "defaults val acc", "SeMoBridge-T steps", "SeMoBridge-T s", "ms/step"]


def table(rows: list[dict[str, Any]]) -> str:
    return markdown_table(HEADERS, [
        [r["device"], r["classes"], r["shots"], r["fit_s"], r["search_s"], f"{100 * r['search_val_acc']:.2f}", r["tpe_trials"],
         r["tpe_s"], f"{100 * r['tpe_val_acc']:.2f}", f"{r['tpe_over_search_time']:.3g}x",
         "yes" if r["search_val_acc"] >= r["tpe_val_acc"] else "NO", f"{100 * r['defaults_val_acc']:.2f}",
         r["train_steps"], r["train_s"], r["train_ms_per_step"]]
        for r in rows
    ])


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--classes", type=parse_ints, default=None, help="class counts C (default 10,100,1000; --quick: 10)")
    p.add_argument("--shots", type=parse_ints, default=(1, 16), help="shots K (default 1,16)")
    p.add_argument("--steps", type=int, default=None, help="SeMoBridge-T steps (default 5000, the published count; --quick: 10)")
    p.add_argument("--tpe-trials", type=int, default=None, help="Optuna TPE trials (default 1000, as published; --quick: 50)")
    p.add_argument("--devices", default="cpu,cuda", help="devices to time on (cuda only where present)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=None, help="output folder (default benchmarks/results/<date>-<device>-fit-time/)")
    p.add_argument("--quick", action="store_true", help="CI-sized: C 10, 10 steps, 50 TPE trials")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no per-step progress bars")
    args = p.parse_args(argv)
    args.classes = args.classes or ((10,) if args.quick else (10, 100, 1000))
    args.steps = args.steps or (10 if args.quick else 5000)
    args.tpe_trials = args.tpe_trials or (50 if args.quick else 1000)
    args.out = args.out or default_out("-fit-time")
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run every case; print the markdown table; write fit_time.json and fit_time.md."""
    args = parse_args(argv)
    found, notes = devices(args.devices)
    cases = [(c, k, d) for d in found for c in args.classes for k in args.shots]
    for device in found:
        warm_up(device, args)
    rows = [case(c, k, d, args) for c, k, d in tqdm(cases, desc="fit time", file=sys.stderr)]
    result = {
        "benchmark": "fit_time", "date": time.strftime("%Y-%m-%d %H:%M:%S"), "machine": machine(), "width": WIDTH,
        "embeddings": "synthetic (random, CLIP-like with a modality gap); accuracies compare the two searches, nothing else",
        "notes": notes, "rows": rows,
    }
    text = "\n".join([
        "# Fit time from cached embeddings (synthetic, d_t = d = 512)", "",
        "Accuracies are on synthetic validation embeddings: they compare our search with TPE on the same split, "
        "nothing more.", *(f"- {n}" for n in notes), "", table(rows),
    ])
    print(text)
    write_report(args.out, "fit_time", result, text)
    return result


if __name__ == "__main__":
    main()

"""The paper's accuracy protocol on the datasets found under a folder, beside the published numbers.

CoOp few-shot splits (1, 2, 4, 8, 16 shots; seeds 1, 2, 3), top-1 on the test split, training-free
SeMoBridge and/or SeMoBridge-T (`--train`), the paper's prompts (the packaged CuPL descriptions, or
`--cupl-dir`) and augmentations, in the published code's order of operations (`--protocol paper`,
the default; semobridge.protocol), through `semobridge.pipeline.fit_dataset` and `evaluate`.
Datasets are the sub-folders of `--root` named like the paper's (caltech101, eurosat, dtd, ...;
see semobridge.datasets), each readable by `semobridge.data.load_dataset`.

    python -m benchmarks.accuracy --root /data/coop --pretrained openai --train

The published averages are over all 11 datasets with ViT-B/16 OpenAI weights; an average over
fewer datasets, or another backbone, is not comparable to them.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file: python benchmarks/accuracy.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tqdm.auto import tqdm

from benchmarks.common import add_out_options, machine, markdown_table, parse_ints, results_folder, write_report
from semobridge.backbones import RANDOM_WARNING, load_backbone
from semobridge.datasets import DATASETS, SHOT_COUNTS, find_dataset
from semobridge.encode import EmbeddingCache
from semobridge.pipeline import PromptOptions, evaluate, fit_dataset
from semobridge.protocol import PROTOCOLS

TRAINING_FREE, TRAINED, ZERO_SHOT = "SeMoBridge (training-free)", "SeMoBridge-T", "zero-shot CLIP"
#: docs/method.md: average top-1 (%) over the 11 datasets, ViT-B/16 OpenAI weights, by shots.
PUBLISHED: dict[str, dict[int, float]] = {
    ZERO_SHOT: {1: 65.52},
    TRAINING_FREE: {1: 72.25, 2: 73.91, 4: 75.77, 8: 77.00, 16: 78.09},
    TRAINED: {1: 74.01, 2: 76.20, 4: 78.21, 8: 80.10, 16: 82.20},
}
MEANINGLESS = "MEANINGLESS: random weights (--pretrained none)"


def find_datasets(root: Path, only: list[str] | None = None) -> dict[str, Path]:
    """Paper dataset key -> folder, for the sub-folders of `root` named like a paper dataset."""
    if not root.is_dir():
        raise SystemExit(f"--root {root} is not a folder")
    found: dict[str, Path] = {}
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        spec = find_dataset(folder.name)
        if spec is not None and (not only or spec.key in only):
            found.setdefault(spec.key, folder)
    if not found:
        raise SystemExit(f"no paper dataset under {root}; expected sub-folders named like: {', '.join(DATASETS)}")
    return found


def dataset_keys(text: str) -> list[str]:
    """"EuroSAT,dtd" -> ["eurosat", "dtd"]; unknown names refused."""
    specs = {name: find_dataset(name) for name in (n.strip() for n in text.split(",")) if name}
    unknown = [name for name, spec in specs.items() if spec is None]
    if unknown:
        raise argparse.ArgumentTypeError(f"not a paper dataset: {', '.join(unknown)} (known: {', '.join(DATASETS)})")
    return [spec.key for spec in specs.values()]


def mean(values: list[float]) -> float | None:
    return statistics.fmean(values) if values else None


def dataset_mean(runs: list[dict[str, Any]], dataset: str, variant: str, shots: int) -> float | None:
    """Mean top-1 (%) over seeds of one dataset, variant and shot count (zero-shot: its one run, any shots)."""
    return mean([100 * r["accuracy"] for r in runs if r["dataset"] == dataset and r["variant"] == variant
                 and (variant == ZERO_SHOT or r["shots"] == shots)])


def cells(values: dict[int, float | None], variant: str, shots: tuple[int, ...]) -> list[str]:
    """One table row's percentages; zero-shot (which has no shots) only in the first column, as in the paper."""
    shown = [values.get(k) if variant != ZERO_SHOT or i == 0 else None for i, k in enumerate(shots)]
    return ["-" if v is None else f"{v:.2f}" for v in shown]


def summary(runs: list[dict[str, Any]], shots: tuple[int, ...]) -> dict[str, dict[int, float | None]]:
    """Average top-1 (%) by variant and shots: mean over seeds per dataset, then over datasets (as the paper)."""
    datasets = sorted({r["dataset"] for r in runs})
    out: dict[str, dict[int, float | None]] = {}
    for variant in (ZERO_SHOT, TRAINING_FREE, TRAINED):
        row: dict[int, float | None] = {}
        for k in shots[:1] if variant == ZERO_SHOT else shots:
            values = [dataset_mean(runs, d, variant, k) for d in datasets]
            row[k] = mean(values) if all(v is not None for v in values) else None
        if any(v is not None for v in row.values()):
            out[variant] = row
    return out


def per_dataset(runs: list[dict[str, Any]], shots: tuple[int, ...]) -> list[list[Any]]:
    """Rows dataset | variant | mean top-1 (%) over seeds at each shot count."""
    rows = []
    for d in sorted({r["dataset"] for r in runs}):
        for variant in (ZERO_SHOT, TRAINING_FREE, TRAINED):
            values = {k: dataset_mean(runs, d, variant, k) for k in shots}
            if any(v is not None for v in values.values()):
                rows.append([d, variant, *cells(values, variant, shots)])
    return rows


def side_by_side(ours: dict[str, dict[int, float | None]], shots: tuple[int, ...], label: str) -> list[list[Any]]:
    """Rows variant | source | value at each shot count: ours, then the published average."""
    rows = []
    for variant in (ZERO_SHOT, TRAINING_FREE, TRAINED):
        if variant in ours:
            published = {k: PUBLISHED[variant].get(1 if variant == ZERO_SHOT else k) for k in shots}
            rows.append([variant, label, *cells(ours[variant], variant, shots)])
            rows.append([variant, "published (11 datasets, ViT-B/16)", *cells(published, variant, shots)])
    return rows


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Fit and evaluate every dataset x shots x seed x variant; zero-shot once per dataset."""
    datasets = find_datasets(args.root, args.datasets)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the random-weights warning is printed by main, louder
        backbone = load_backbone(args.model, args.pretrained, device=args.device)
    cache = EmbeddingCache(args.cache_dir) if args.cache_dir else EmbeddingCache()
    prompts = PromptOptions(cupl_dir=args.cupl_dir)
    variants = ([TRAINING_FREE] if args.training_free else []) + ([TRAINED] if args.train else [])
    jobs = [(key, k, seed, v) for key in datasets for k in args.shots for seed in args.seeds for v in variants]
    runs, zero_shot_done = [], set()
    for key, k, seed, variant in tqdm(jobs, desc="accuracy", file=sys.stderr):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            head = fit_dataset(
                datasets[key], k, seed=seed, train=variant == TRAINED, steps=args.steps, search_trials=args.search_trials,
                dataset_name=key, prompts=prompts, cache=cache, backbone=backbone, protocol=args.protocol,
            ).head
        result = evaluate(head, backbone, datasets[key], "test", cache)
        base = {"dataset": key, "shots": k, "seed": seed, "test_images": result["images"]}
        runs.append({**base, "variant": variant, "accuracy": result["accuracy"], "val_accuracy": head.info.val_accuracy})
        if key not in zero_shot_done:  # the text classifier does not depend on shots or seed
            zero_shot_done.add(key)
            runs.append({**base, "variant": ZERO_SHOT, "shots": None, "accuracy": result["zero_shot_accuracy"], "val_accuracy": None})
    return runs


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", type=Path, required=True, help="folder holding the datasets, one sub-folder each, named like the paper's")
    p.add_argument("--datasets", type=dataset_keys, default=None,
                   help="only these datasets (comma-separated paper names)")
    p.add_argument("--shots", type=parse_ints, default=SHOT_COUNTS, help="shot counts (default 1,2,4,8,16)")
    p.add_argument("--seeds", type=parse_ints, default=(1, 2, 3), help="CoOp sampling seeds (default 1,2,3)")
    p.add_argument("--model", default="ViT-B-16")
    p.add_argument("--pretrained", default="openai", help="weights tag or local checkpoint (none: random, results meaningless)")
    p.add_argument("--train", action="store_true", help="also fit SeMoBridge-T")
    p.add_argument("--no-training-free", dest="training_free", action="store_false", help="skip training-free SeMoBridge")
    p.add_argument("--steps", type=int, default=5000, help="SeMoBridge-T steps (default 5000, as published)")
    p.add_argument("--search-trials", type=int, default=None, help="blend search candidates (default: the library's)")
    p.add_argument("--cupl-dir", type=Path, default=None,
                   help="folder with the paper's CuPL description files (default: the package's; ImageNet's is not shipped)")
    p.add_argument("--protocol", choices=list(PROTOCOLS), default="paper",
                   help="paper (default): the published code's order of operations; consistent: ours (semobridge.protocol)")
    p.add_argument("--cache-dir", type=Path, default=None, help="embedding cache (default ~/.cache/semobridge)")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when present)")
    add_out_options(p, "-accuracy")
    args = p.parse_args(argv)
    if not (args.training_free or args.train):
        p.error("nothing to run: --no-training-free without --train")
    args.out = results_folder(args.out, "-accuracy", force=args.force)
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the protocol; print our table beside the published one; write accuracy.json and accuracy.md."""
    args = parse_args(argv)
    random_weights = args.pretrained in (None, "", "none")
    if random_weights:
        print("\n" + "!" * 100 + f"\n{RANDOM_WARNING}\n{MEANINGLESS}: every accuracy below is NOT an accuracy.\n" + "!" * 100 + "\n",
              file=sys.stderr)
    runs = run(args)
    datasets = sorted({r["dataset"] for r in runs})
    ours = summary(runs, args.shots)
    label = f"ours ({len(datasets)} dataset{'s' if len(datasets) != 1 else ''}, {args.model})"
    if random_weights:
        label += f" [{MEANINGLESS}]"
    headers = ["variant", "source", *(f"{k} shot{'s' if k > 1 else ''}" for k in args.shots)]
    lines = [f"# Accuracy: {args.model} (pretrained={args.pretrained}), top-1 % on the test split, protocol {args.protocol}", ""]
    if random_weights:
        lines += [f"**{MEANINGLESS}. These numbers only show that the harness runs.**", ""]
    if len(datasets) < len(DATASETS):
        lines += [f"Averages over {len(datasets)} of the {len(DATASETS)} datasets ({', '.join(datasets)}): "
                  "not comparable with the published 11-dataset averages.", ""]
    lines += [markdown_table(headers, side_by_side(ours, args.shots, label)), "", "## Per dataset (mean over seeds)", "",
              markdown_table(["dataset", "variant", *headers[2:]], per_dataset(runs, args.shots))]
    text = "\n".join(lines)
    print(text)
    result = {
        "benchmark": "accuracy", "date": time.strftime("%Y-%m-%d %H:%M:%S"), "machine": machine(), "model": args.model,
        "pretrained": args.pretrained, "meaningless": random_weights, "datasets": datasets, "shots": list(args.shots),
        "seeds": list(args.seeds), "cupl_dir": str(args.cupl_dir) if args.cupl_dir else "packaged", "steps": args.steps,
        "protocol": args.protocol,
        "ours": {v: {str(k): x for k, x in row.items()} for v, row in ours.items()},
        "published": {v: {str(k): x for k, x in row.items()} for v, row in PUBLISHED.items()},
        "runs": runs,
    }
    write_report(args.out, "accuracy", result, text)
    return result


if __name__ == "__main__":
    main()

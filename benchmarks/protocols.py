"""Paper vs consistent protocol (semobridge.protocol): SeMoBridge-T test accuracy on synthetic embeddings.

For each seed: C classes x K shots of the benchmarks' synthetic CLIP-like embeddings
(benchmarks/common.py, d_t = d = --width), `--val` validation and `--test` test embeddings per
class. Three runs of `train_bridge` on the same embeddings:

- consistent: validation on min(K, 4) embeddings per class (what `few_shot_split` samples),
  evaluate then update, prototypes from the kept state;
- paper (same val): the published order only (M1 prototypes from the last step, M2 update then
  evaluate), on the same validation embeddings;
- paper: M1 + M2 + M3, validation on all `--val` embeddings per class.

Each is scored on the test embeddings at the training blend (the published defaults) and after
the blend search on its validation embeddings. Random embeddings: the figures show what the
order of operations changes, not what the method reaches on images.

    python -m benchmarks.protocols                        # C 10, 100; K 1, 4, 16; seeds 0-2
    python -m benchmarks.protocols --quick                # CI-sized
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file: python benchmarks/protocols.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
from tqdm.auto import tqdm

from benchmarks.common import add_out_options, info_for, machine, markdown_table, parse_ints, results_folder, synthetic_features, write_report
from semobridge.blend import BlendParams
from semobridge.data import VAL_SHOTS_MAX
from semobridge.features import FeatureSet
from semobridge.fit import accuracy, build_head
from semobridge.search import search_blend
from semobridge.train import train_bridge

VARIANTS = ("consistent", "paper (same val)", "paper")
SYNTHETIC_BACKBONE = {"name": "synthetic", "pretrained": "none", "weights_hash": "0"}


def split_per_class(images: torch.Tensor, labels: torch.Tensor, first: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first `first` rows of every class, and the rest."""
    rank = torch.zeros_like(labels)
    for c in labels.unique():
        where = labels == c
        rank[where] = torch.arange(int(where.sum()))
    return rank < first, rank >= first


def with_val(features: FeatureSet, images: torch.Tensor, labels: torch.Tensor) -> FeatureSet:
    return FeatureSet(features.text_projection, features.text_eos, features.text_class, features.shot_image,
                      features.shot_label, images, labels, features.logit_scale, list(features.class_names))


def run(classes: int, shots: int, seed: int, args: argparse.Namespace) -> list[dict[str, Any]]:
    pool = synthetic_features(classes, shots, args.val + args.test, args.width, args.width, seed=seed)
    val, test = split_per_class(pool.val_image, pool.val_label, args.val)
    few, _ = split_per_class(pool.val_image, pool.val_label, min(shots, VAL_SHOTS_MAX))
    test_image, test_label = pool.val_image[test], pool.val_label[test]
    runs = {
        "consistent": ("consistent", with_val(pool, pool.val_image[few], pool.val_label[few])),
        "paper (same val)": ("paper", with_val(pool, pool.val_image[few], pool.val_label[few])),
        "paper": ("paper", with_val(pool, pool.val_image[val], pool.val_label[val])),
    }
    rows = []
    for variant, (protocol, features) in runs.items():
        result = train_bridge(features, steps=args.steps, seed=seed, protocol=protocol, progress=False)
        head = build_head(features, info_for(features, SYNTHETIC_BACKBONE), result.bridge, result.class_bias, result.prototypes)
        default_acc = accuracy(head.with_params(BlendParams()), test_image, test_label)
        searched = search_blend(head, features.val_image, features.val_label, seed=seed, progress=False)
        rows.append({
            "classes": classes, "shots": shots, "seed": seed, "variant": variant, "val_per_class": len(features.val_label) // classes,
            "kept_step": result.kept_step, "updates": result.updates,
            "test_acc_default_blend": default_acc, "test_acc_searched": accuracy(head.with_params(searched), test_image, test_label),
        })
    return rows


def summary(rows: list[dict[str, Any]]) -> list[list[Any]]:
    """Per (C, K): mean test accuracy (%) over seeds of each variant, and paper - consistent in points."""
    out = []
    for c, k in sorted({(r["classes"], r["shots"]) for r in rows}):
        mine = [r for r in rows if (r["classes"], r["shots"]) == (c, k)]
        mean = {(v, key): 100 * statistics.fmean(r[key] for r in mine if r["variant"] == v)
                for v in VARIANTS for key in ("test_acc_default_blend", "test_acc_searched")}
        for key, label in (("test_acc_default_blend", "training blend"), ("test_acc_searched", "after search")):
            diffs = [100 * (p[key] - q[key]) for p, q in zip([r for r in mine if r["variant"] == "paper"],
                                                              [r for r in mine if r["variant"] == "consistent"])]
            out.append([c, k, label, *(f"{mean[(v, key)]:.2f}" for v in VARIANTS),
                        f"{mean[('paper', key)] - mean[('consistent', key)]:+.2f}",
                        f"{min(diffs):+.2f} .. {max(diffs):+.2f}"])
    return out


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--classes", type=parse_ints, default=None, help="class counts (default 10,100; --quick: 5)")
    p.add_argument("--shots", type=parse_ints, default=None, help="shots (default 1,4,16; --quick: 2)")
    p.add_argument("--seeds", type=parse_ints, default=None, help="seeds (default 0,1,2; --quick: 0)")
    p.add_argument("--steps", type=int, default=None, help="SeMoBridge-T updates (default 5000, as published; --quick: 30)")
    p.add_argument("--width", type=int, default=256, help="d_t = d of the synthetic embeddings (default 256)")
    p.add_argument("--val", type=int, default=20, help="validation embeddings per class of the whole split (default 20)")
    p.add_argument("--test", type=int, default=50, help="test embeddings per class (default 50)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    add_out_options(p, "-protocols", quick=True)
    p.add_argument("--quick", action="store_true", help="CI-sized")
    args = p.parse_args(argv)
    args.classes = args.classes or ((5,) if args.quick else (10, 100))
    args.shots = args.shots or ((2,) if args.quick else (1, 4, 16))
    args.seeds = args.seeds or ((0,) if args.quick else (0, 1, 2))
    args.steps = args.steps or (30 if args.quick else 5000)
    args.out = results_folder(args.out, "-protocols", quick=args.quick, force=args.force)
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run every case; print the tables; write protocols.json and protocols.md."""
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    cases = [(c, k, s) for c in args.classes for k in args.shots for s in args.seeds]
    rows: list[dict[str, Any]] = []
    for i, (c, k, s) in enumerate(tqdm(cases, desc="protocols", file=sys.stderr)):
        rows += run(c, k, s, args)
        result, text = report(rows, cases[: i + 1], args)
        write_report(args.out, "protocols", result, text)  # after every case: a long run interrupted keeps its rows
    print(text)
    return result


def report(rows: list[dict[str, Any]], cases: list[tuple[int, int, int]], args: argparse.Namespace) -> tuple[dict[str, Any], str]:
    """The markdown text and the JSON of the cases run so far."""
    headers = ["C", "K", "test accuracy", *VARIANTS, "paper - consistent (mean)", "per seed"]
    text = "\n".join([
        f"# Paper vs consistent protocol: SeMoBridge-T on synthetic embeddings (d = {args.width}, {args.steps} updates)", "",
        f"Validation: consistent and 'paper (same val)' min(K, 4) embeddings per class, 'paper' all {args.val}; "
        f"test: {args.test} per class; seeds {', '.join(map(str, args.seeds))}. Random embeddings: the differences show "
        "what the order of operations changes, not accuracy on images.", "",
        markdown_table(headers, summary(rows)), "", "## Kept step (updates applied to reach the kept state)", "",
        markdown_table(["C", "K", "seed", *VARIANTS], [
            [c, k, s, *(next(r["kept_step"] for r in rows if (r["classes"], r["shots"], r["seed"], r["variant"]) == (c, k, s, v))
                        for v in VARIANTS)] for c, k, s in cases
        ]),
    ])
    result = {"benchmark": "protocols", "date": time.strftime("%Y-%m-%d %H:%M:%S"), "machine": machine(),
              "args": {k: v for k, v in vars(args).items() if k != "out"}, "rows": rows}
    return result, text


if __name__ == "__main__":
    main()

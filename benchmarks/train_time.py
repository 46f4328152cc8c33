"""SeMoBridge-T step time against its floor: FLOPs of one step, the machine's matrix-product rate, ours vs autograd.

One step = the loss terms, their gradient, one AdamW update and the validation accuracy of the
blend (synthetic embeddings of ViT-B/16 widths, d_t = d = 512, C classes x K shots, min(K, 4)
validation images per class). Three figures per case, measured in one run with rounds interleaved:

- FLOPs of the matrix products of one step, for the autograd trainer (`losses` + backward +
  the validation that bridged the shots again) and for ours (`semobridge.train.Objective`);
- the floor: the time of exactly our step's matrix products, timed alone with the same shapes
  (so the rest is elementwise work and overhead), and the machine's fp32 rate on the largest one;
- the time per step of both trainers, and the projected time of a full default run (5,000 steps).

`--check-steps N` also runs both trainers for N steps and reports the largest relative
difference of the loss terms and the kept step (the change must not change the result).

    python -m benchmarks.train_time                         # C 100, 1000; K 16
    python -m benchmarks.train_time --classes 1000 --check-steps 200
    python -m benchmarks.train_time --quick                 # CI-sized
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

if __package__ in (None, ""):  # run as a file: python benchmarks/train_time.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from benchmarks.common import add_out_options, machine, markdown_table, parse_ints, results_folder, synthetic_features, write_report
from semobridge.blend import BlendParams, affinities, blend
from semobridge.bridge import Bridge
from semobridge.data import VAL_SHOTS_MAX
from semobridge.features import FeatureSet
from semobridge.prototypes import bridged_prototypes, class_kl, image_prototypes, text_side
from semobridge.train import LOSS_TERMS, LR_START, WEIGHT_DECAY, learning_rate, losses, train_bridge

WIDTH = 512  # ViT-B/16: d_t = d = 512
FULL_RUN_STEPS = 5000
TARGET_S = 600.0  # issue 12: a full default run in <= 10 minutes


def autograd_trainer(features: FeatureSet, steps: int, params: BlendParams = BlendParams(), on_step: Callable[[], None] | None = None):
    """The trainer before the hand-written gradient: `losses` through autograd, validation before each
    update (bridging the shots again), `steps - 1` updates. Returns the records and the kept step."""
    C = features.num_classes
    text = text_side(features.text_eos, features.text_class, features.text_projection, C)
    bridge = Bridge(features.text_projection, text.eos_length, trainable=True)
    bias = torch.nn.Parameter(torch.zeros(C, bridge.pinv.shape[1]))
    optimiser = torch.optim.AdamW([bridge.pinv, bias], lr=LR_START, weight_decay=WEIGHT_DECAY)
    I = image_prototypes(features.shot_image, features.shot_label, C)
    kl, p = class_kl(I, text.classifier), params.to_tensor()
    records, best, kept = [], -1.0, 0
    for step in range(steps):
        terms = losses(bridge, bias, features.shot_image, features.shot_label, text, features.logit_scale)
        record = {"step": step, **{k: float(terms[k].detach()) for k in LOSS_TERMS}}
        if features.has_val:
            with torch.no_grad():
                P = bridged_prototypes(bridge, features.shot_image, features.shot_label, C, bias)
                z = blend(affinities(features.val_image, text.classifier, P, I, bridge), kl, p)
                record["val_acc"] = float((z.argmax(-1) == features.val_label).float().mean())
            if record["val_acc"] > best:
                best, kept = record["val_acc"], step
        records.append(record)
        if step < steps - 1:
            for group in optimiser.param_groups:
                group["lr"] = learning_rate(step)
            optimiser.zero_grad(set_to_none=True)
            terms["loss"].backward()
            optimiser.step()
        if on_step is not None:
            on_step()
    return records, kept


def step_products(N: int, C: int, d_t: int, d: int, V: int) -> dict[str, list[tuple[int, int, int]]]:
    """(m, k, n) of every matrix product of one step with N shots and V validation images."""
    autograd = [
        (N, d, d_t), (N, d_t, d), (N, d, C), (N, d, C), (C, d, C), (C, d_t, C),  # forward
        (C, N, d), (N, C, d), (C, N, d), (C, C, d), (C, C, d_t), (N, d, d_t), (d, N, d_t),  # backward
    ]
    if V:  # the shots bridged again, then n(q)·T, n(q)·P, bridge(q), n(bridge(q))·I
        autograd += [(N, d, d_t), (N, d_t, d), (V, d, C), (V, d, C), (V, d, d_t), (V, d_t, d), (V, d, C)]
    ours = [
        (N, d, d_t), (C, d_t, d_t), (N, d_t, d_t), (N, d_t, C), (N, d_t, C), (C, d_t, C), (C, d_t, C),  # state, logits
        (C, N, d_t), (C, N, d_t), (C, d_t, d_t), (C, C, d_t), (N, C, d_t), (C, C, d_t), (d, N, d_t),  # gradient
    ]
    if V:  # q W⁺, then times [W Iᵀ | M], and (n(q) Wᵀ) Ptᵀ
        ours += [(V, d, d_t), (V, d_t, C + d_t), (V, d_t, C)]
    return {"autograd": autograd, "ours": ours}


def flops(products: list[tuple[int, int, int]]) -> float:
    return float(sum(2 * m * k * n for m, k, n in products))


def time_products(products: list[tuple[int, int, int]], rounds: int) -> float:
    """Seconds to run these fp32 products back to back (median of `rounds`), inputs made beforehand."""
    operands = [(torch.randn(m, k), torch.randn(k, n)) for m, k, n in products]
    for a, b in operands:
        a @ b
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        for a, b in operands:
            a @ b
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def time_steps(run: Callable[[Callable[[], None]], Any], steps: int) -> float:
    """Median seconds per step after the first (which includes set-up)."""
    stamps = [time.perf_counter()]
    run(lambda: stamps.append(time.perf_counter()))
    gaps = [b - a for a, b in zip(stamps[1:], stamps[2:])]
    return statistics.median(gaps) if gaps else float("nan")


def case(classes: int, shots: int, args: argparse.Namespace) -> dict[str, Any]:
    val = min(shots, VAL_SHOTS_MAX)
    features = synthetic_features(classes, shots, val, WIDTH, WIDTH, seed=args.seed)
    N, V = len(features.shot_label), len(features.val_label)
    products = step_products(N, classes, WIDTH, WIDTH, V)
    largest = max(products["ours"], key=lambda p: p[0] * p[1] * p[2])
    floor, rate, ours, old = [], [], [], []
    for _ in range(args.rounds):  # interleaved: each round times everything once
        floor.append(time_products(products["ours"], 3))
        rate.append(flops([largest]) / time_products([largest], 3))
        ours.append(time_steps(lambda tick: train_bridge(features, steps=args.steps, progress=False, protocol="consistent",
                                                         log=lambda _: tick()), args.steps))
        old.append(time_steps(lambda tick: autograd_trainer(features, args.steps, on_step=tick), args.steps))
    row = {
        "classes": classes, "shots": shots, "shot_rows": N, "val_rows": V,
        "gflop_autograd": flops(products["autograd"]) / 1e9, "gflop_ours": flops(products["ours"]) / 1e9,
        "matmul_gflops": statistics.median(rate) / 1e9, "floor_s": statistics.median(floor),
        "ours_s": statistics.median(ours), "autograd_s": statistics.median(old),
    }
    row["full_run_min"] = FULL_RUN_STEPS * row["ours_s"] / 60
    row["floor_full_run_min"] = FULL_RUN_STEPS * row["floor_s"] / 60
    if args.check_steps:
        new_records: list[dict] = []
        kept_new = train_bridge(features, steps=args.check_steps, progress=args.progress, protocol="consistent",
                                log=new_records.append).kept_step
        old_records, kept_old = autograd_trainer(features, args.check_steps)
        row["check_steps"] = args.check_steps
        row["max_rel_loss_diff"] = max(abs(a["loss"] - b["loss"]) / abs(a["loss"]) for a, b in zip(old_records, new_records))
        row["kept_step_autograd"], row["kept_step_ours"] = kept_old, kept_new
    return row


def bf16_case(classes: int, shots: int, args: argparse.Namespace) -> dict[str, Any]:
    """Our trainer with precision="bf16" against fp32: seconds per step (rounds interleaved) and, over --check-steps,
    the loss trajectories, the kept step and the validation accuracy of the kept state."""
    features = synthetic_features(classes, shots, min(shots, VAL_SHOTS_MAX), WIDTH, WIDTH, seed=args.seed)
    times: dict[str, list[float]] = {"fp32": [], "bf16": []}
    for _ in range(args.rounds):
        for precision, out in times.items():
            out.append(time_steps(lambda tick: train_bridge(features, steps=args.steps, progress=False, protocol="consistent",
                                                            log=lambda _: tick(), precision=precision), args.steps))
    row: dict[str, Any] = {"classes": classes, "shots": shots, **{f"{p}_s": statistics.median(t) for p, t in times.items()}}
    if args.check_steps:
        records: dict[str, list[dict]] = {"fp32": [], "bf16": []}
        kept = {p: train_bridge(features, steps=args.check_steps, progress=args.progress, protocol="consistent",
                                log=records[p].append, precision=p).kept_step for p in records}
        row |= {"check_steps": args.check_steps, "kept_step_fp32": kept["fp32"], "kept_step_bf16": kept["bf16"],
                "max_rel_loss_diff": max(abs(a["loss"] - b["loss"]) / abs(a["loss"]) for a, b in zip(*records.values())),
                "loss_first_last_fp32": (records["fp32"][0]["loss"], records["fp32"][-1]["loss"]),
                "loss_first_last_bf16": (records["bf16"][0]["loss"], records["bf16"][-1]["loss"]),
                "best_val_acc_fp32": max(r["val_acc"] for r in records["fp32"]),
                "best_val_acc_bf16": max(r["val_acc"] for r in records["bf16"])}
    return row


def bf16_table(rows: list[dict[str, Any]]) -> str:
    return markdown_table(["C", "K", "fp32 s/step", "bf16 s/step", "fp32 / bf16", "full run min bf16", "steps compared",
                           "max relative loss difference", "kept step fp32 / bf16", "best val acc fp32 / bf16"], [
        [r["classes"], r["shots"], r["fp32_s"], r["bf16_s"], f"{r['fp32_s'] / r['bf16_s']:.2f}x", FULL_RUN_STEPS * r["bf16_s"] / 60,
         r.get("check_steps", "-"), f"{r['max_rel_loss_diff']:.2e}" if "max_rel_loss_diff" in r else "-",
         f"{r['kept_step_fp32']} / {r['kept_step_bf16']}" if "check_steps" in r else "-",
         f"{r['best_val_acc_fp32']:.4f} / {r['best_val_acc_bf16']:.4f}" if "check_steps" in r else "-"]
        for r in rows])


HEADERS = ["C", "K", "GFLOP/step autograd", "GFLOP/step ours", "fp32 GFLOP/s (largest product)", "floor s/step (our products)",
           "ours s/step", "autograd s/step", "speed-up", "ours / floor", "full run min (5,000 steps)", "floor full run min",
           "target min"]


def table(rows: list[dict[str, Any]]) -> str:
    return markdown_table(HEADERS, [
        [r["classes"], r["shots"], r["gflop_autograd"], r["gflop_ours"], r["matmul_gflops"], r["floor_s"], r["ours_s"],
         r["autograd_s"], f"{r['autograd_s'] / r['ours_s']:.2f}x", f"{r['ours_s'] / r['floor_s']:.2f}x", r["full_run_min"],
         r["floor_full_run_min"], TARGET_S / 60]
        for r in rows
    ])


def check_table(rows: list[dict[str, Any]]) -> str:
    rows = [r for r in rows if "check_steps" in r]
    if not rows:
        return ""
    return markdown_table(["C", "K", "steps", "max relative loss difference", "kept step autograd", "kept step ours"], [
        [r["classes"], r["shots"], r["check_steps"], f"{r['max_rel_loss_diff']:.2e}", r["kept_step_autograd"], r["kept_step_ours"]]
        for r in rows
    ])


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--classes", type=parse_ints, default=None, help="class counts C (default 100,1000; --quick: 10)")
    p.add_argument("--shots", type=parse_ints, default=(16,), help="shots K (default 16)")
    p.add_argument("--steps", type=int, default=None, help="timed steps per trainer and round (default 6; --quick: 3)")
    p.add_argument("--rounds", type=int, default=None, help="interleaved rounds (default 3; --quick: 1)")
    p.add_argument("--check-steps", type=int, default=0, help="also compare both trainers' loss over this many steps")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--bf16", action="store_true", help="instead: our trainer with bf16 products against fp32 (time, result)")
    add_out_options(p, "-train-time", quick=True)
    p.add_argument("--quick", action="store_true", help="CI-sized: C 10, 3 steps, 1 round")
    p.add_argument("--no-progress", dest="progress", action="store_false")
    args = p.parse_args(argv)
    args.classes = args.classes or ((10,) if args.quick else (100, 1000))
    args.steps = args.steps or (3 if args.quick else 6)
    args.rounds = args.rounds or (1 if args.quick else 3)
    args.out = results_folder(args.out, "-train-time", quick=args.quick, force=args.force)
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run every case; print the tables; write train_time.json and train_time.md."""
    args = parse_args(argv)
    if args.bf16:
        rows = [bf16_case(c, k, args) for c in args.classes for k in args.shots]
        result = {"benchmark": "train_time_bf16", "date": time.strftime("%Y-%m-%d %H:%M:%S"), "machine": machine(),
                  "command": " ".join(["python -m benchmarks.train_time", *(argv if argv is not None else sys.argv[1:])]),
                  "width": WIDTH, "steps_timed": args.steps, "rounds": args.rounds, "rows": rows}
        text = "\n".join(["# SeMoBridge-T with bf16 products against fp32 (synthetic, d_t = d = 512, CPU)", "",
                          f"CPU: {result['machine']['cpu']}, {result['machine']['torch_threads']} threads", "", bf16_table(rows)])
        print(text)
        write_report(args.out, "train_time_bf16", result, text)
        return result
    rows = [case(c, k, args) for c in args.classes for k in args.shots]
    result = {"benchmark": "train_time", "date": time.strftime("%Y-%m-%d %H:%M:%S"), "machine": machine(), "width": WIDTH,
              "steps_timed": args.steps, "rounds": args.rounds, "rows": rows}
    text = "\n".join([
        "# SeMoBridge-T step time (synthetic, d_t = d = 512, CPU fp32)", "",
        f"Target (issue 12): a full default run ({FULL_RUN_STEPS:,} steps) in {TARGET_S / 60:.0f} minutes. The floor is the "
        "time of our step's matrix products alone, timed with the same shapes in the same run.", "",
        f"CPU: {result['machine']['cpu']}, {result['machine']['torch_threads']} threads", "", table(rows), "",
        check_table(rows),
    ])
    print(text)
    write_report(args.out, "train_time", result, text)
    return result


if __name__ == "__main__":
    main()

"""ONNX Runtime CPU sessions with intra-op spinning on (ONNX Runtime's default) and off (what benchmarks.latency
uses, since it interleaves sessions): one session on its own, as an app with one model runs it, and
two sessions (fp32 and int8) taking turns call by call, as an app with two models does.

Sessions are made afresh for each block of calls and blocks alternate between the two settings.

    python -m benchmarks.spinning                    # ViT-B-16 fused fp32 and int8, batch 1, 224x224
    python -m benchmarks.spinning --model semobridge-tiny --blocks 2
"""
from __future__ import annotations

import argparse
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file: python benchmarks/spinning.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
from tqdm.auto import tqdm

from benchmarks.common import add_out_options, machine, markdown_table, results_folder, write_report
from benchmarks.latency import build_models, random_images
from benchmarks.latency.runners import OrtRunner
from benchmarks.latency.timing import sample

FORMATS = {"fp32": "onnx", "int8": "onnx-int8"}
SIZE = (224, 224)


def time_block(paths: list[Path], spinning: bool, images: np.ndarray, warmup: int, calls: int) -> list[list[float]]:
    """Fresh sessions of `paths`, intra-op spinning on or off, taking turns call by call: after `warmup`
    rounds, `calls` timed runs (ms) per session."""
    timers = [OrtRunner(path, ["CPUExecutionProvider"], cuda=False, spinning=spinning).host(images) for path in paths]
    return sample(timers, warmup, calls, budget_s=math.inf, min_iters=calls)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="ViT-B-16")
    p.add_argument("--blocks", type=int, default=6, help="blocks per setting (default 6)")
    p.add_argument("--calls", type=int, default=10, help="timed calls per block (default 10)")
    add_out_options(p, "-spinning")
    args = p.parse_args(argv)
    out = results_folder(args.out, "-spinning", force=args.force)
    images = random_images(1, SIZE)
    rows = []
    with tempfile.TemporaryDirectory(prefix="semobridge-spinning-") as tmp:
        models = build_models(args.model, "none", 100, 0, Path(tmp), [SIZE], (1,))
        paths = {precision: models.artifact("fused", fmt) for precision, fmt in FORMATS.items()}
        setups = [("alone", [p]) for p in paths] + [("taking turns", list(paths))]  # (how, precisions run together)
        times = {(how, p, spin): [] for how, group in setups for p in group for spin in (True, False)}
        with tqdm(total=len(setups) * args.blocks * 2, desc="spinning", file=sys.stderr) as bar:
            for _ in range(args.blocks):
                for how, group in setups:
                    for spinning in (True, False):
                        block = time_block([paths[p] for p in group], spinning, images, warmup=2, calls=args.calls)
                        for p, t in zip(group, block):
                            times[how, p, spinning] += t
                        bar.update()
        for how, group in setups:
            for p in group:
                on, off = statistics.median(times[how, p, True]), statistics.median(times[how, p, False])
                rows.append({"sessions": how, "precision": p, "calls": len(times[how, p, True]),
                             "spinning_on_p50_ms": on, "spinning_off_p50_ms": off, "off_over_on": off / on})
    m = machine()
    text = "\n".join([
        f"# ONNX Runtime CPU: intra-op spinning on vs off ({args.model} fused, batch 1, 224x224)",
        "",
        f"CPU {m['cpu']} x {m['cpu_count']}, onnxruntime {m['onnxruntime']}. Fresh sessions per block of {args.calls} calls, "
        f"{args.blocks} blocks per setting, alternating. 'taking turns': the fp32 and int8 sessions exist together and run "
        "one call each in turn.",
        "",
        markdown_table(["sessions", "precision", "calls each", "spinning on p50 ms", "spinning off p50 ms", "off / on"],
                       [[r["sessions"], r["precision"], r["calls"], r["spinning_on_p50_ms"], r["spinning_off_p50_ms"],
                         r["off_over_on"]] for r in rows]),
    ])
    print(text)
    result = {"benchmark": "spinning", "date": time.strftime("%Y-%m-%d %H:%M:%S"), "model": args.model, "machine": m, "rows": rows}
    write_report(out, "spinning", result, text)
    return result


if __name__ == "__main__":
    main()

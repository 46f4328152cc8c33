"""`python -m benchmarks.latency`: options, the run, and the files it writes."""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from benchmarks.common import add_out_options, machine, parse_ints, results_folder, write_csv, write_json

from . import __doc__ as DOC
from .backends import select_backends
from .floors import CpuFloors, encoder_products
from .limits import peak_tflops
from .measure import Row, Settings, add_ratios, parse_sizes, run_backend, short_error
from .models import KINDS, build_models, encoder_flops
from .report import plot, report
from .targets import targets
from .timing import CLOCKS, use_clock

CPU_BATCHES = (1, 8)
GPU_BATCHES = (1, 8, 32, 256)
SIZES = "224x224,720x1280"  # HEIGHTxWIDTH: a square crop and a 720p landscape frame


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.latency", description=DOC, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help="open_clip model (default ViT-B-16; --quick: semobridge-tiny)")
    p.add_argument("--pretrained", default="none", help="weights tag or file (default none: random; speed does not depend on weights)")
    p.add_argument("--classes", type=int, default=100, help="classes of the benchmark head (default 100)")
    p.add_argument("--batches", type=parse_ints, default=None, help=f"batch sizes for every backend (default CPU {CPU_BATCHES}, GPU {GPU_BATCHES})")
    p.add_argument("--sizes", default=None, help=f"input sizes HEIGHTxWIDTH (default {SIZES}; --quick: 224x224)")
    p.add_argument("--backends", default="*", help="comma-separated fnmatch patterns on name/precision/device, e.g. 'onnxruntime-cpu/*/*,*/*/cuda'")
    p.add_argument("--warmup", type=int, default=None, help="warm-up calls per case (default 10; --quick: 1)")
    p.add_argument("--iters", type=int, default=None, help="timed calls per case at most (default 200; --quick: 3)")
    p.add_argument("--budget", type=float, default=None, help="seconds per case after at least 3 timed calls (default 10; --quick: 1)")
    add_out_options(p, quick=True)
    p.add_argument("--clock", choices=sorted(CLOCKS), default="wall",
                   help="host times by the wall clock (latency, default) or by CPU time (work; for ratios on a shared machine)")
    p.add_argument("--quick", action="store_true", help="CI-sized run: semobridge-tiny, batch 1 and 2, 224x224, few iterations")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    quick = args.quick
    args.model = args.model or ("semobridge-tiny" if quick else "ViT-B-16")
    args.sizes = args.sizes or ("224x224" if quick else SIZES)
    args.batches = args.batches or ((1, 2) if quick else None)
    args.warmup = args.warmup if args.warmup is not None else (1 if quick else 10)
    args.iters = args.iters or (3 if quick else 200)
    args.budget = args.budget if args.budget is not None else (1.0 if quick else 10.0)
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the benchmark; print the markdown report; write results.json, results.csv, results.md and latency.png."""
    args = parse_args(argv)
    out = results_folder(args.out, quick=args.quick, force=args.force)
    use_clock(args.clock)
    sizes = parse_sizes(args.sizes)
    backends, skipped = select_backends([p.strip() for p in args.backends.split(",") if p.strip()])
    batches_of = {b.id: args.batches or (GPU_BATCHES if b.device == "cuda" else CPU_BATCHES) for b in backends}
    all_batches = tuple(sorted({n for v in batches_of.values() for n in v}))
    settings = Settings(args.warmup, args.iters, args.budget)
    with tempfile.TemporaryDirectory(prefix="semobridge-latency-") as tmp:
        models = build_models(args.model, args.pretrained, args.classes, args.seed, Path(tmp), [hw for _, hw in sizes], all_batches)
        bare = models.modules["bare"]
        cpu = any(b.device == "cpu" for b in backends)
        floors = CpuFloors(encoder_products(bare.encoder, bare.image_size), Path(tmp)) if cpu else None
        flops = encoder_flops(bare)
        info = machine()
        peak = peak_tflops(info["gpu"])
        rows: list[Row] = []
        total = sum(len(sizes) * len(batches_of[b.id]) * len(KINDS) for b in backends)
        with tqdm(total=total, desc="latency", file=sys.stderr) as bar:
            for backend in backends:
                try:
                    rows += run_backend(backend, models, floors, sizes, batches_of[backend.id], settings, bar)
                except Exception as exc:  # could not load or export for this backend: say so, go on
                    skipped.append({"backend": backend.name, "precision": backend.precision, "device": backend.device,
                                    "reason": f"failed to load: {short_error(exc)}"})
        cpu_batches = tuple(sorted({n for b in backends if b.device == "cpu" for n in batches_of[b.id]}))
        machine_floors = floors.machine(cpu_batches, args.warmup, args.iters, args.budget) if floors else {}
    add_ratios(rows, flops, peak, floors.gflop_per_image * 1e9 if floors else None, machine_floors)
    result = {
        "benchmark": "latency", "command": " ".join(["python -m benchmarks.latency", *(argv if argv is not None else sys.argv[1:])]),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"), "model": args.model, "pretrained": args.pretrained,
        "classes": args.classes, "image_size": models.modules["fused"].image_size, "machine": info,
        "encoder_gflop_per_image": flops / 1e9, "peak_tflops": peak,
        "cpu_floor": {**floors.summary(), "machine_floors_ms": machine_floors} if floors else None,
        "settings": {"warmup": args.warmup, "iters": args.iters, "budget_s": args.budget, "sizes": args.sizes, "batches": batches_of,
                     "clock": args.clock},
        "skipped": skipped, "rows": [asdict(r) for r in rows],
    }
    result["targets"] = targets(rows, args.model, info["gpu"], info["cpu_count"], info["cpu"])
    text = report(result, rows)
    print(text)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "results.json", result)
    write_csv(out / "results.csv", result["rows"])
    (out / "results.md").write_text(text + "\n", encoding="utf-8")
    plot(rows, out / "latency.png")
    print(f"\nwrote {out}/results.json, results.csv, results.md, latency.png", file=sys.stderr)
    return result

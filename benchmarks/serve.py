"""Throughput and latency of semobridge-serve against the in-process runtime, by client concurrency.

For each model (a head of `--classes` classes fitted on random embeddings of the backbone's widths,
exported to ONNX; speed does not depend on weights): `c` concurrent clients (1, 4, 16, 64) each send
one 224x224 image per request, back to back, for `--budget` seconds, to

  serve batching     semobridge-serve with dynamic batching (--max-batch 64, --max-queue-delay-us)
  serve no batching  semobridge-serve with --max-batch 1 (every request its own model run)
  in-process         c threads calling one shared Classifier.predict (no server)

and, as the ceiling, the in-process runtime on batches of 1, 4, 16, 64 images from one thread, with
ONNX Runtime's intra-op spinning on (the runtime's default) and off (what the server's sessions use).
The clients are gRPC (tritonclient's asyncio client, one event loop) on the same machine, so on
a small CPU they take cores from the server: the ratios are conservative there.

    python -m benchmarks.serve                                  # semobridge-tiny and ViT-B-16
    python -m benchmarks.serve --quick                          # CI-sized: tiny, concurrency 1 and 4
"""
from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import threading
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

if __package__ in (None, ""):  # run as a file: python benchmarks/serve.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
from semobridge_runtime.contract import RUN_OUTPUTS

from benchmarks.common import (add_out_options, benchmark_head, fmt, free_ports, machine, markdown_table, parse_ints,
                               results_folder, save_figure, write_report)

MODELS = ("semobridge-tiny", "ViT-B-16")
CONCURRENCY = (1, 4, 16, 64)
BATCHES = (1, 4, 16, 64)
IMAGE_HW = (224, 224)
SERVE_MAX_BATCH = 64
MODES = ("serve batching", "serve no batching", "in-process")


@dataclass
class Row:
    """One measured case."""

    model: str
    mode: str  # one of MODES, or "in-process batch" (", no spinning")
    concurrency: int  # clients (threads for in-process); 1 for batch rows
    batch: int  # images per request (per call for batch rows)
    requests: int
    seconds: float
    images_per_s: float
    p50_ms: float
    p99_ms: float


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def row(model: str, mode: str, concurrency: int, batch: int, latencies: list[float], seconds: float) -> Row:
    return Row(model, mode, concurrency, batch, len(latencies), seconds, len(latencies) * batch / seconds,
               1000 * statistics.median(latencies), 1000 * percentile(latencies, 99))


def closed_loop(concurrency: int, budget_s: float, call: Callable[[int], None]) -> tuple[list[float], float]:
    """`concurrency` threads calling `call(i)` back to back until the budget is spent (each at least twice)."""
    latencies: list[float] = []
    lock = threading.Lock()
    start = time.perf_counter()
    deadline = start + budget_s

    def worker(index: int) -> None:
        done = 0
        while done < 2 or time.perf_counter() < deadline:
            t = time.perf_counter()
            call(index)
            with lock:
                latencies.append(time.perf_counter() - t)
            done += 1

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return latencies, time.perf_counter() - start


async def _grpc_clients(url: str, concurrency: int, budget_s: float, images: np.ndarray) -> tuple[list[float], float]:
    import tritonclient.grpc.aio as aio
    from tritonclient.grpc import InferInput, InferRequestedOutput

    def request(i: int) -> list:
        tensor = InferInput("image", [1, *images.shape[1:]], "UINT8")
        tensor.set_data_from_numpy(images[i % len(images)][None])
        return [tensor]

    inputs = [request(i) for i in range(len(images))]
    outputs = [InferRequestedOutput(n) for n in RUN_OUTPUTS]
    latencies: list[float] = []
    client = aio.InferenceServerClient(url)
    try:
        for i in range(concurrency):  # warm-up: every client once
            await client.infer("semobridge", inputs[i % len(inputs)], outputs=outputs)
        start = time.perf_counter()
        deadline = start + budget_s

        async def worker(index: int) -> None:
            done = 0
            while done < 2 or time.perf_counter() < deadline:
                t = time.perf_counter()
                await client.infer("semobridge", inputs[(index + done) % len(inputs)], outputs=outputs)
                latencies.append(time.perf_counter() - t)
                done += 1

        await asyncio.gather(*(worker(i) for i in range(concurrency)))
        return latencies, time.perf_counter() - start
    finally:
        await client.close()


def measure_server(model_path: Path, name: str, mode: str, images: np.ndarray, args: argparse.Namespace) -> list[Row]:
    from semobridge_runtime.serve.repository import Batching
    from semobridge_runtime.serve.server import Endpoints, TritonServer
    from semobridge_runtime.serve.settings import ServeSettings, load_classifier

    settings = ServeSettings(str(model_path))
    batching = Batching(SERVE_MAX_BATCH, args.queue_delay_us) if mode == "serve batching" else Batching(1)
    http, grpc, metrics = free_ports(3)
    server = TritonServer(settings, load_classifier(settings), "semobridge", batching,
                          Endpoints("127.0.0.1", http, grpc, metrics))
    server.start()
    try:
        rows = []
        for c in args.concurrency:
            latencies, seconds = asyncio.run(_grpc_clients(f"127.0.0.1:{grpc}", c, args.budget, images))
            rows.append(row(name, mode, c, 1, latencies, seconds))
            print(f"  {mode:<18} c={c:<3} {rows[-1].images_per_s:7.1f} images/s  p99 {rows[-1].p99_ms:8.1f} ms",
                  file=sys.stderr)
        return rows
    finally:
        server.stop()


def measure_in_process(model_path: Path, name: str, images: np.ndarray, args: argparse.Namespace) -> list[Row]:
    """Batches with ONNX Runtime's spinning on (the runtime's default) and off (the server's), then threads (default)."""
    from semobridge_runtime import Classifier

    rows = []
    for spinning in (True, False):
        classifier = Classifier.load(model_path, allow_spinning=spinning)
        classifier.predict(images[:4])  # warm-up
        for b in args.batches:
            batch = np.stack([images[i % len(images)] for i in range(b)])
            latencies, seconds = closed_loop(1, args.budget, lambda _: classifier.predict(batch))
            rows.append(row(name, f"in-process batch{'' if spinning else ', no spinning'}", 1, b, latencies, seconds))
    for c in args.concurrency:
        latencies, seconds = closed_loop(c, args.budget, lambda i: classifier.predict(images[i % len(images)]))
        rows.append(row(name, "in-process", c, 1, latencies, seconds))
        print(f"  {'in-process':<18} c={c:<3} {rows[-1].images_per_s:7.1f} images/s  p99 {rows[-1].p99_ms:8.1f} ms",
              file=sys.stderr)
    return rows


def export_model(name: str, classes: int, stage: Path) -> Path:
    """The fused ONNX graph of `name` (random weights) with a benchmark head."""
    from semobridge.backbones import load_backbone
    from semobridge_export import export

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the random-weights warning: speed does not depend on weights
        backbone = load_backbone(name, "none", device="cpu", seed=0)
    head = benchmark_head(backbone, classes)
    return export(head, backbone, stage / name, formats=("onnx",), log=lambda _: None)["onnx"]


def summary(rows: list[Row]) -> list[dict[str, Any]]:
    """Per model: the best in-process batch throughput, the best served one, their ratio (target >= 0.9),
    and the served p99 at concurrency 16."""
    out = []
    for model in dict.fromkeys(r.model for r in rows):
        mine = [r for r in rows if r.model == model]
        best_batch = max((r for r in mine if r.mode.startswith("in-process batch")), key=lambda r: r.images_per_s)
        served = [r for r in mine if r.mode == "serve batching"]
        best_served = max(served, key=lambda r: r.images_per_s) if served else None
        at16 = next((r for r in served if r.concurrency == 16), None)
        out.append({"model": model, "in_process_best_images_per_s": best_batch.images_per_s,
                    "in_process_best_batch": best_batch.batch, "in_process_best_mode": best_batch.mode,
                    "serve_best_images_per_s": best_served.images_per_s if best_served else None,
                    "serve_best_concurrency": best_served.concurrency if best_served else None,
                    "serve_over_in_process": best_served.images_per_s / best_batch.images_per_s if best_served else None,
                    "serve_p99_ms_at_16": at16.p99_ms if at16 else None})
    return out


def report(result: dict[str, Any], rows: list[Row]) -> str:
    m = result["machine"]
    lines = [f"# semobridge-serve vs the in-process runtime ({result['date']})", "",
             f"CPU: {m['cpu']}, {m['cpu_count']} cores; onnxruntime {m['onnxruntime']}; images {IMAGE_HW[0]}x{IMAGE_HW[1]}; "
             f"{result['settings']['budget_s']} s per case; serve: --max-batch {SERVE_MAX_BATCH} "
             f"--max-queue-delay-us {result['settings']['queue_delay_us']} (batching) or --max-batch 1, one instance; "
             "clients: gRPC on the same machine.", "",
             "## Target: served throughput (with batching) >= 90 % of the in-process runtime at its best batch", "",
             markdown_table(["model", "in-process best (images/s, batch)", "served best (images/s, clients)",
                             "served / in-process", "served p99 at 16 clients (ms)"],
                            [[s["model"], f"{fmt(s['in_process_best_images_per_s'])} (batch {s['in_process_best_batch']}"
                              f"{s['in_process_best_mode'][len('in-process batch'):]})",
                              f"{fmt(s['serve_best_images_per_s'])} (c={s['serve_best_concurrency']})",
                              fmt(s["serve_over_in_process"]), fmt(s["serve_p99_ms_at_16"])] for s in result["summary"]]),
             "", "## All cases", "",
             markdown_table(["model", "mode", "clients", "images/request", "requests", "images/s", "p50 ms", "p99 ms"],
                            [[r.model, r.mode, r.concurrency, r.batch, r.requests, r.images_per_s, r.p50_ms, r.p99_ms]
                             for r in rows])]
    return "\n".join(lines)


def plot(rows: list[Row], path: Path) -> Path:
    """Per model: throughput and p99 latency against concurrency; dashed: the in-process best batch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(dict.fromkeys(r.model for r in rows))
    fig, axes = plt.subplots(len(models), 2, figsize=(11, 4 * len(models)), squeeze=False)
    for (throughput, tail), model in zip(axes, models):
        for mode in MODES:
            case = sorted((r for r in rows if r.model == model and r.mode == mode), key=lambda r: r.concurrency)
            if case:
                throughput.plot([r.concurrency for r in case], [r.images_per_s for r in case], "o-", label=mode)
                tail.plot([r.concurrency for r in case], [r.p99_ms for r in case], "o-", label=mode)
        best = max((r.images_per_s for r in rows if r.model == model and r.mode.startswith("in-process batch")),
                   default=None)
        if best:
            throughput.axhline(best, ls="--", color="gray", label="in-process, best batch")
        throughput.set(xscale="log", xlabel="concurrent clients", ylabel="images/s", title=f"{model}: throughput")
        tail.set(xscale="log", yscale="log", xlabel="concurrent clients", ylabel="p99 latency (ms)", title=f"{model}: p99")
    return save_figure(fig, axes.flat, path, dpi=110)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.serve", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default=None, help=f"open_clip models, comma-separated (default {','.join(MODELS)}; "
                                                  "--quick: semobridge-tiny)")
    p.add_argument("--onnx", type=Path, default=None, help="measure this exported model.onnx instead of exporting --models")
    p.add_argument("--classes", type=int, default=100, help="classes of the benchmark head (default 100)")
    p.add_argument("--concurrency", type=parse_ints, default=None, help="client counts (default 1,4,16,64; --quick: 1,4)")
    p.add_argument("--batches", type=parse_ints, default=None, help="in-process batch sizes (default 1,4,16,64; --quick: 1,4)")
    p.add_argument("--budget", type=float, default=None, help="seconds per case (default 15; --quick: 1)")
    p.add_argument("--queue-delay-us", type=int, default=1000, help="serve batching: --max-queue-delay-us (default 1000)")
    p.add_argument("--quick", action="store_true", help="CI-sized run: semobridge-tiny, few short cases")
    add_out_options(p, "-serve", quick=True)
    args = p.parse_args(argv)
    args.models = [m for m in (args.models or ("semobridge-tiny" if args.quick else ",".join(MODELS))).split(",") if m]
    args.concurrency = args.concurrency or ((1, 4) if args.quick else CONCURRENCY)
    args.batches = args.batches or ((1, 4) if args.quick else BATCHES)
    args.budget = args.budget if args.budget is not None else (1.0 if args.quick else 15.0)
    args.out = results_folder(args.out, "-serve", quick=args.quick, force=args.force)
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the benchmark; print the markdown report; write serve.json, serve.md and serve.png into --out."""
    args = parse_args(argv)
    images = np.random.default_rng(0).integers(0, 256, (64, *IMAGE_HW, 3), dtype=np.uint8)
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="semobridge-serve-bench-") as tmp:
        targets = [(args.onnx.stem, args.onnx)] if args.onnx else [(m, None) for m in args.models]
        for name, path in targets:
            print(f"{name}:", file=sys.stderr)
            path = path or export_model(name, args.classes, Path(tmp))
            rows += measure_in_process(path, name, images, args)
            for mode in MODES[:2]:
                rows += measure_server(path, name, mode, images, args)
    result = {"benchmark": "serve", "date": time.strftime("%Y-%m-%d %H:%M:%S"), "machine": machine(),
              "settings": {"budget_s": args.budget, "concurrency": list(args.concurrency), "batches": list(args.batches),
                           "queue_delay_us": args.queue_delay_us, "serve_max_batch": SERVE_MAX_BATCH,
                           "image_hw": list(IMAGE_HW), "classes": args.classes},
              "summary": summary(rows), "rows": [asdict(r) for r in rows]}
    text = report(result, rows)
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    write_report(args.out, "serve", result, text)
    plot(rows, args.out / "serve.png")
    print(f"\nwrote {args.out}/serve.json, serve.md, serve.png", file=sys.stderr)
    return result


if __name__ == "__main__":
    main()

"""The markdown report (the fused rows with their bare ratio, failures, skipped backends, targets) and the plot."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from benchmarks.common import fmt, markdown_table, save_figure

from .floors import machine_floor
from .measure import Row
from .targets import find, status_text

LIBRARY_NAMES = {"torch": "PyTorch", "onnxruntime": "ONNX Runtime", "openvino": "OpenVINO", "tensorrt": "TensorRT"}

TABLE_HEADERS = ["backend", "precision", "device", "input", "batch", "p50 ms", "p90 ms", "p99 ms", "images/s",
                 "device p50 ms", "device images/s", "% of peak", "bare p50 ms", "fused/bare", "floor ms", "x floor",
                 "x bf16 floor", "x int8 floor"]


def cpu_floor_lines(result: dict[str, Any]) -> list[str]:
    """What the CPU floors are, and the machine's floors per batch (none if no CPU backend ran)."""
    floor = result.get("cpu_floor")
    if not floor:
        return []
    products = ", ".join(f"{p['rows']}x{p['k']}x{p['n']}" + (f" x{p['count']}" if p["count"] > 1 else "") for p in floor["products"])
    rest = result["encoder_gflop_per_image"] - floor["gflop_per_image"]
    lines = [
        f"CPU floors: the encoder's own weight products at the case's batch (per image, rows x k x n x count: {products}; "
        f"{fmt(floor['gflop_per_image'])} GFLOP of the encoder's {fmt(result['encoder_gflop_per_image'])}; left out: the "
        f"attention core's QK^T and AV, {fmt(rest)} GFLOP, and the elementwise work), each timed as one call with constant, "
        "pre-packed weights: PyTorch through oneDNN's packed linear (weights reordered once), ONNX Runtime's MatMul "
        "(int8: quantised as the export is), OpenVINO compiled with constant weights (int8: u8 x s8). A case's floor "
        "(`floor ms`) = the sum over the products of count x one call's median time, in its library and precision, timed "
        "in the same rounds as the case; `x floor` = p50 over it. On the CPU, % of peak is the encoder's FLOP rate over "
        "the products' rate in that floor.",
    ]
    machine = floor.get("machine_floors_ms") or {}
    for batch, floors in machine.items():
        best = [f"{p} {fmt(found[0] / int(batch))} ms ({LIBRARY_NAMES[found[1]]})" for p in ("fp32", "bf16", "int8")
                if (found := machine_floor(floors, p))]
        every = "; ".join(f"{name} {fmt(ms / int(batch))}" for name, ms in floors.items())
        lines.append(f"Machine floors at batch {batch}, per image (the fastest library of each precision; one set of rounds "
                     f"after the cases): {', '.join(best)}. Every library: {every} ms. `x bf16 floor` and `x int8 floor` "
                     "compare each case with these.")
    return lines


def report(result: dict[str, Any], rows: list[Row]) -> str:
    """The markdown report: the fused rows with their bare ratio, failures, skipped backends and targets."""
    bare = {r.case(): r for r in rows if r.model == "bare"}
    table = [
        [r.backend, r.precision, r.device, r.input, r.batch, r.p50_ms, r.p90_ms, r.p99_ms, r.images_per_s,
         r.device_p50_ms, r.device_images_per_s, f"{100 * r.peak_fraction:.1f}" if r.peak_fraction is not None else "n/a",
         bare[r.case()].best_p50 if r.case() in bare else None, r.fused_over_bare, r.floor_ms, r.over_floor,
         r.over_bf16_floor, r.over_int8_floor]
        for r in rows if r.model == "fused" and r.status == "ok"
    ]
    m = result["machine"]
    lines = [
        f"# Latency: {result['model']} (pretrained={result['pretrained']}), {result['classes']} classes",
        "",
        f"Command: `{result['command']}` ({result['date']}).",
        f"Machine: {m['gpu'] or 'no GPU'}; CPU {m['cpu']} x {m['cpu_count']} (torch {m['torch']}, onnxruntime {m['onnxruntime']}). "
        f"Encoder: {result['encoder_gflop_per_image']:.2f} GFLOP per image at {result['image_size']}"
        + (f"; GPU peak {fmt(result['peak_tflops'])} TFLOPS dense fp16." if result["peak_tflops"] else "."),
        *cpu_floor_lines(result),
        "Times: host uint8 images in (input = HEIGHTxWIDTH), host outputs back (preprocessing included)"
        + ("" if result["settings"].get("clock", "wall") == "wall" else ", as this process's CPU time (--clock cpu), not latency; the floors' products on one thread")
        + "; device = CUDA events on device-resident input. "
        "fused/bare = fused model over the bare encoder, same backend and run, calls interleaved (device time where measured).",
        "",
        markdown_table(TABLE_HEADERS, table),
    ]
    failed = [r for r in rows if r.status != "ok"]
    if failed:
        lines += ["", "## Failed cases", "", markdown_table(["backend", "precision", "device", "model", "input", "batch", "error"],
                                                            [[r.backend, r.precision, r.device, r.model, r.input, r.batch, r.status] for r in failed])]
    lines += ["", "## Skipped backends", "", markdown_table(["backend", "precision", "device", "reason"],
                                                             [[s["backend"], s["precision"], s["device"], s["reason"]] for s in result["skipped"]])]
    lines += ["", "## Targets", "", markdown_table(["target", "measured", "status"],
                                                   [[t["target"], t["measured"], status_text(t)] for t in result["targets"]])]
    return "\n".join(lines)


def plot(rows: list[Row], path: Path) -> Path:
    """p50 latency vs batch per backend (fused model), one panel per input size; dashed: device time."""
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = list(dict.fromkeys(r.input for r in rows))  # in the order measured
    fig, axes = plt.subplots(1, len(sizes), figsize=(6.5 * len(sizes), 4.5), squeeze=False)
    for ax, size in zip(axes[0], sizes):
        for key in sorted({(r.backend, r.precision, r.device) for r in rows}):
            case = sorted(find(rows, backend=key[0], precision=key[1], device=key[2], model="fused", input=size), key=lambda r: r.batch)
            if not case:
                continue
            line, = ax.plot([r.batch for r in case], [r.p50_ms for r in case], "o-", label="/".join(key))
            if case[0].device_p50_ms is not None:
                ax.plot([r.batch for r in case], [r.device_p50_ms for r in case], "--", color=line.get_color())
        ax.set(yscale="log", xlabel="batch", ylabel="p50 latency (ms)", title=f"fused model, {size} input")
        ax.set_xscale("log", base=2)
        batches = sorted({r.batch for r in rows})
        ax.set_xticks(batches, [str(b) for b in batches])
        ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    return save_figure(fig, axes[0], path, dpi=120)


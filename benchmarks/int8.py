"""Static int8 on the CPU (issue 21): post-training quantisation calibrated on the fit images, against the dynamic int8
artifact (`model_int8.onnx`, the CPU default), ONNX Runtime fp32 and OpenVINO bf16.

Every variant runs the same fused graph (uint8 pixels -> scores), timed call by call in the same interleaved rounds
(p50 per batch) beside the CPU floors of benchmarks.latency (floors.CpuFloors: the encoder's own matrix products at
the batch, weights constant, in each library and precision: the least time that precision allows). On the fit images, each variant's label agreement with fp32, its smallest embedding cosine, and how far the
pixels its encoder sees are from PIL's (open_clip's resize and crop; grey levels, <= 1 is the rule).

  onnxruntime fp32          model.onnx
  onnxruntime int8 dynamic  model_int8.onnx (semobridge-export --int8-cpu: int8 weights, activations quantised per call)
  onnxruntime int8 static   QDQ: the encoder's MatMul/Gemm/Conv with int8 per-channel weights and uint8 activations
                            calibrated (MinMax) on the fit images; preprocessing and head stay float (quantize_static)
   ... static fused         the same on the dynamic artifact's graph (its ONNX Runtime attention and GELU fusions):
                            only the quantisation differs from the dynamic artifact
  openvino bf16             the runtime's OpenVINO backend: preprocessing f32, the rest bf16 where the CPU computes it
  openvino int8 nncf        the product of semobridge-export --int8-cpu with nncf installed (export/openvino_int8.py):
                            the part past the f32 preprocessing as an int8 IR quantised by NNCF (ModelType.TRANSFORMER)
                            on the fit images as that preprocessing computes them, the head left out (ignored scope),
                            run by the runtime's OpenVINO backend (openvino_precision="int8")

The benchmark's model has no fit images (its head is fitted on random embeddings, benchmarks/common.benchmark_head):
the export's synthetic check images (smooth random scenes, sides 48-320 px) stand in for them. Random weights: the
agreement shows the quantisation's drift, not accuracy.

    python -m benchmarks.int8                                   # ViT-B-16, batch 1 and 8, 224x224
    python -m benchmarks.int8 --model semobridge-tiny --quick   # CI-sized
"""
from __future__ import annotations

import argparse
import importlib.util
import re
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

if __package__ in (None, ""):  # run as a file: python benchmarks/int8.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import onnx_ir as ir
from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static
from PIL import Image

from benchmarks.common import add_out_options, machine, markdown_table, parse_ints, results_folder, write_report
from benchmarks.jpeg import crop
from benchmarks.latency.floors import CpuFloors, encoder_products
from benchmarks.latency.measure import random_images
from benchmarks.latency.models import build_models
from benchmarks.latency.runners import OrtRunner
from benchmarks.latency.timing import CLOCKS, Timer, sample, use_clock, wall_clock
from semobridge.logs import quiet_root_logger
from semobridge_export import openvino_int8
from semobridge_export.onnx_graph import save_model
from semobridge_export.precision import encoder_nodes, fuse_for_onnxruntime
from semobridge_export.rewrites import sink_input_casts
from semobridge_export.reference import session, synthetic_images

QUANTIZED_OPS = ["MatMul", "Gemm", "Conv"]
FLAGS = re.compile(r"avx512[a-z_0-9]*|amx[a-z_0-9]*|avx_vnni")  # what decides int8/bf16 speed on x86


def cpu_flags() -> list[str]:
    """`grep -o 'avx512[a-z_0-9]*\\|amx[a-z_0-9]*\\|avx_vnni' /proc/cpuinfo | sort -u`."""
    try:
        return sorted(set(FLAGS.findall(Path("/proc/cpuinfo").read_text(encoding="ascii", errors="replace"))))
    except OSError:
        return []


class FitImages(CalibrationDataReader):
    """ONNX Runtime's CalibrationDataReader over the fit images: one uint8 [1, H, W, 3] image per call, as the graph
    takes it (its own preprocessing computes what the encoder sees)."""

    def __init__(self, input_name: str, images: list[np.ndarray]):
        self.input_name, self.left = input_name, iter(images)

    def get_next(self) -> dict[str, np.ndarray] | None:
        image = next(self.left, None)
        return None if image is None else {self.input_name: image[None]}


def quantize_static_qdq(src: Path, dst: Path, images: list[np.ndarray], fused: bool) -> Path:
    """ONNX Runtime static QDQ quantisation of the encoder's MatMul/Gemm/Conv with constant weights: int8 per-channel
    weights, uint8 activations with ranges calibrated (MinMax) on `images`; preprocessing and head stay float.
    `fused`: first the int8 artifact's ONNX Runtime fusions (attention, GELU) and afterwards its input-Cast sinking
    (precision.to_int8), so that only the quantisation differs from the dynamic artifact."""
    encoder = {n.name for n in encoder_nodes(ir.load(str(src)).graph)}
    model = ir.load(str(src))
    if fused:
        fuse_for_onnxruntime(model)
    prepared = save_model(model, dst.with_name(f"{dst.stem}_prepared.onnx"))
    with quiet_root_logger():
        quantize_static(str(prepared), str(dst), FitImages(model.graph.inputs[0].name, images), quant_format=QuantFormat.QDQ,
                        op_types_to_quantize=QUANTIZED_OPS, nodes_to_exclude=[n.name for n in model.graph if n.name not in encoder],
                        per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        calibrate_method=CalibrationMethod.MinMax, extra_options={"MatMulConstBOnly": True})
    if fused:
        model = ir.load(str(dst))
        sink_input_casts(model)
        save_model(model, dst)
    return dst


def with_pixels_output(src: Path, dst: Path) -> Path:
    """A copy of the graph that also outputs the float pixels its encoder sees: the first Conv's input (the ViT's
    patch embedding), read above its QuantizeLinear/DequantizeLinear pair where the graph is quantised."""
    model = ir.load(str(src))
    conv = next(n for n in model.graph if n.op_type == "Conv")
    value = conv.inputs[0]
    while value.producer() is not None and value.producer().op_type in ("DequantizeLinear", "QuantizeLinear"):
        value = value.producer().inputs[0]
    model.graph.outputs.append(value)
    return save_model(model, dst)


@dataclass
class Variant:
    """One way to run the model: its name, the floor that applies (CpuFloors library and precision), a timer factory,
    and a probe (images -> label, embedding, encoder pixels) for the quality columns."""

    name: str
    floor: tuple[str, str]
    timer: Callable[[np.ndarray], Timer]
    probe: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray, np.ndarray]]
    build_s: float = 0.0


def ort_variant(name: str, path: Path, floor: tuple[str, str], stage: Path, build_s: float = 0.0) -> Variant:
    runner = OrtRunner(path, ["CPUExecutionProvider"], cuda=False)
    probe = session(with_pixels_output(path, stage / f"{path.stem}_probe.onnx"))
    names = [o.name for o in probe.get_outputs()]

    def run(images: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        out = dict(zip(names, probe.run(None, {probe.get_inputs()[0].name: images})))
        return out["label"], out["embedding"], out[names[-1]]

    return Variant(name, floor, runner.host, run, build_s)


def openvino_variant(name: str, backend: Any, floor: tuple[str, str], build_s: float = 0.0) -> Variant:
    def run(images: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        label, embedding = backend.run(images, ("label", "embedding"))
        return label, embedding, backend.preprocess(images)

    return Variant(name, floor, lambda images: wall_clock(lambda: backend.run(images, backend.outputs)), run, build_s)


def grey_levels(pixels: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """Normalised encoder input [3, S, S] -> grey levels [S, S, 3]."""
    return (pixels.transpose(1, 2, 0) * std + mean) * 255.0


def quality(variant: Variant, reference: Variant, images: list[np.ndarray], mean, std, size: int) -> dict[str, Any]:
    """Label agreement and smallest embedding cosine with fp32, one image per run; largest distance of the encoder's
    pixels from PIL's (grey levels) and from the fp32 graph's."""
    same, cosines, pil, graph = [], [], 0.0, 0.0
    for image in images:
        label, embedding, pixels = variant.probe(image[None])
        want_label, want, want_pixels = reference.probe(image[None])
        same.append(int(label[0] == want_label[0]))
        a, b = embedding[0], want[0]
        cosines.append(float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b))))
        pil = max(pil, float(np.abs(grey_levels(pixels[0], mean, std) - crop(Image.fromarray(image), size)).max()))
        graph = max(graph, float(np.abs(grey_levels(pixels[0], mean, std) - grey_levels(want_pixels[0], mean, std)).max()))
    return {"label_agreement": float(np.mean(same)), "min_cosine": min(cosines), "max_grey_from_pil": pil,
            "max_grey_from_fp32_graph": graph}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(prog="python -m benchmarks.int8", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help="open_clip model (default ViT-B-16; --quick: semobridge-tiny), random weights")
    p.add_argument("--classes", type=int, default=100, help="classes of the benchmark head (default 100)")
    p.add_argument("--batches", type=parse_ints, default=(1, 8), help="batch sizes (default 1,8)")
    p.add_argument("--size", type=int, default=224, help="input side of the timed images (default 224: SxS)")
    p.add_argument("--fit-images", type=int, default=32, help="calibration and agreement images (default 32)")
    p.add_argument("--warmup", type=int, default=None, help="warm-up rounds (default 5; --quick 1)")
    p.add_argument("--iters", type=int, default=None, help="timed rounds at most (default 60; --quick 3)")
    p.add_argument("--budget", type=float, default=None, help="seconds per batch after 3 rounds (default 120; --quick 5)")
    p.add_argument("--clock", choices=sorted(CLOCKS), default="wall",
                   help="host times by the wall clock (default) or by this process's CPU time (ratios on a shared machine)")
    add_out_options(p, "-int8", quick=True)
    p.add_argument("--quick", action="store_true", help="CI-sized: semobridge-tiny, 8 fit images, few rounds")
    args = p.parse_args(argv)
    model = args.model or ("semobridge-tiny" if args.quick else "ViT-B-16")
    warmup = args.warmup if args.warmup is not None else (1 if args.quick else 5)
    iters = args.iters or (3 if args.quick else 60)
    budget = args.budget if args.budget is not None else (5.0 if args.quick else 120.0)
    out = results_folder(args.out, "-int8", quick=args.quick, force=args.force)  # refused before any work
    use_clock(args.clock)
    fit = synthetic_images(8 if args.quick else args.fit_images, seed=0)
    with tempfile.TemporaryDirectory(prefix="semobridge-int8-") as tmp:
        stage = Path(tmp)
        models = build_models(model, "none", args.classes, 0, stage, [(args.size, args.size)], tuple(args.batches))
        meta = models.jobs["fused"].meta
        mean, std = np.asarray(meta.mean, np.float32), np.asarray(meta.std, np.float32)
        fp32 = models.artifact("fused", "onnx")
        variants = [ort_variant("onnxruntime fp32", fp32, ("onnxruntime", "fp32"), stage),
                    ort_variant("onnxruntime int8 dynamic", models.artifact("fused", "onnx-int8"), ("onnxruntime", "int8"), stage)]
        for name, fused in (("onnxruntime int8 static", False), ("onnxruntime int8 static fused", True)):
            start = time.perf_counter()
            static = quantize_static_qdq(fp32, stage / f"fused_int8_static{'_fused' * fused}.onnx", fit, fused)
            variants.append(ort_variant(name, static, ("onnxruntime", "int8"), stage, time.perf_counter() - start))
        skipped = {}
        if importlib.util.find_spec("openvino") is None:
            skipped["openvino"] = "openvino not installed (pip install 'semobridge-runtime[openvino]')"
        else:
            from semobridge_runtime.backends.openvino import OpenVINOBackend

            variants.append(openvino_variant("openvino bf16", OpenVINOBackend(fp32, "auto", contract=False), ("openvino", "bf16")))
            absent = openvino_int8.missing()
            if absent is not None:
                skipped["openvino int8 nncf"] = absent
            else:
                start = time.perf_counter()
                models.jobs["fused"].fit_images = fit  # the export's writer calibrates and measures on them
                models.artifact("fused", "openvino-int8")
                backend = OpenVINOBackend(fp32, "int8", contract=False)  # paired by the metadata the writer recorded
                variants.append(openvino_variant("openvino int8 nncf", backend, ("openvino", "int8"), time.perf_counter() - start))
        checks = {v.name: quality(v, variants[0], fit, mean, std, meta.image_size) for v in variants}
        fused_model = models.modules["fused"]
        products = CpuFloors(encoder_products(fused_model.encoder, fused_model.image_size), stage)
        floor_names = sorted({v.floor for v in variants})
        rows = []
        for batch in args.batches:
            images = random_images(batch, (args.size, args.size))
            cases = [products.case(*f, batch) for f in floor_names]
            sampled = sample([v.timer(images) for v in variants] + [t for c in cases for t in c.timers], warmup, iters, budget)
            times = [statistics.median(t) for t in sampled[:len(variants)]]
            floors, left = {}, sampled[len(variants):]
            for f, case in zip(floor_names, cases):
                floors[f], left = case.ms(left[:len(case.timers)]), left[len(case.timers):]
            dynamic = times[1]
            for v, t in zip(variants, times):
                rows.append({"variant": v.name, "batch": batch, "p50_ms": t, "x_dynamic_int8": t / dynamic,
                             "floor": " ".join(v.floor), "floor_ms": floors[v.floor], "x_floor": t / floors[v.floor],
                             "rounds": len(sampled[0])})
            rows += [{"variant": f"floor {' '.join(f)}", "batch": batch, "floor_ms": ms} for f, ms in floors.items()]
    result = {
        "benchmark": "int8", "command": " ".join(["python -m benchmarks.int8", *(argv if argv is not None else sys.argv[1:])]),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"), "model": model, "pretrained": "none", "classes": args.classes,
        "input": f"{args.size}x{args.size}", "fit_images": len(fit), "machine": machine(), "cpu_flags": cpu_flags(),
        "clock": args.clock, "settings": {"warmup": warmup, "iters": iters, "budget_s": budget},
        "cpu_floor": products.summary(),
        "build_s": {v.name: v.build_s for v in variants if v.build_s}, "quality": checks, "skipped": skipped, "rows": rows,
    }
    text = report(result)
    out.mkdir(parents=True, exist_ok=True)
    write_report(out, "int8", result, text)
    print(text)
    return result


def report(result: dict[str, Any]) -> str:
    """The markdown report: times with their ratios, then the quality checks."""
    m, q = result["machine"], result["quality"]
    times = [[r["variant"], r["batch"], r.get("p50_ms"), r.get("x_dynamic_int8"), r["floor_ms"], r.get("x_floor")]
             for r in result["rows"]]
    checks = [[name, c["label_agreement"], f"{c['min_cosine']:.5f}", c["max_grey_from_pil"], c["max_grey_from_fp32_graph"],
               result["build_s"].get(name)] for name, c in q.items()]
    clock = "wall clock" if result["clock"] == "wall" else "this process's CPU time (--clock cpu: work, not latency)"
    return "\n".join([
        f"# Static int8 against dynamic int8 and bf16: {result['model']} (random weights), {result['input']}", "",
        f"Command: `{result['command']}`", "",
        f"Machine: CPU {m['cpu']} x {m['cpu_count']}; flags {' '.join(result['cpu_flags']) or 'none found'} "
        f"(onnxruntime {m['onnxruntime']}, openvino {m['openvino']}). Times: p50 of {clock}, every variant and floor timed "
        f"call by call in the same rounds; floor = the encoder's own matrix products ({result['cpu_floor']['gflop_per_image']:.2f} "
        "GFLOP per image, attention core left out) at the batch in that library and precision, weights constant "
        "(benchmarks/latency/floors.py). Provisional on a shared machine: compare ratios within this run only.", "",
        markdown_table(["variant", "batch", "p50 ms", "x dynamic int8", "floor ms", "x floor"], times), "",
        f"On {result['fit_images']} fit images (one per run): label agreement and smallest embedding cosine with ONNX Runtime "
        "fp32; the largest distance of the pixels the encoder sees from PIL's resize and crop, and from the fp32 graph's "
        "(grey levels); build = quantisation with calibration (s).", "",
        markdown_table(["variant", "label agreement", "min cosine", "max grey from PIL", "max grey from fp32 graph", "build s"], checks),
        *([""] + [f"Skipped: {k}: {v}" for k, v in result["skipped"].items()] if result["skipped"] else []),
    ])


if __name__ == "__main__":
    main()

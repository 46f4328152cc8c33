"""Changing the classes of an exported model: what taking the class set as data costs at prediction,
what enrolling one class takes on the device, and the re-fit + re-export it replaces.

1. Head as data: the fused ONNX graph with the class set as inputs (defaults: the fitted classes),
   fed nothing or fed the class set as the runtime does after an edit, against the same model
   with the classes baked in as constants. ONNX Runtime CPU, timed call by call in turns in one
   run; the ratio of medians is the overhead (target < 3 %). Beside it the head alone (image
   embeddings in), baked and as data: the difference of those two, over the whole baked graph's
   time, is the overhead without the encoder's run-to-run noise.
2. Enrolment at C classes (default 1,000): adding one class with semobridge_runtime, split into
   its parts: the shots' image embeddings and bridged features (the model's own graph), the prompts'
   text embeddings (tokenizer + text tower), and the head maths in numpy (T, P, I as normalised
   means, and every class's KL over the new set; target <= 20 ms), as the first edit after loading
   and as a later one; removing a class and writing the class file beside.
3. Re-fit + re-export: what the same change costs without enrolment, from cached embeddings (no
   encoding, no blend search: a lower bound): semobridge's training-free fit of C + 1 classes and
   the export of the fused ONNX graph (a TensorRT engine rebuild on the target comes on top).
4. The C library (runtime/c, built with make): sb_set_classes of the class file of part 2 (C
   classes), and sb_classify at batch 1 fed that class set against fed nothing (the graph's
   defaults, the same C fitted classes), in turns (runtime/c/tools/time_classes.c).

    python -m benchmarks.classes                 # ViT-B-16 (random weights), 1,000 classes
    python -m benchmarks.classes --quick         # CI-sized: semobridge-tiny, 50 classes
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Sequence

if __package__ in (None, ""):  # run as a file: python benchmarks/classes.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from benchmarks.common import (
    add_out_options, benchmark_head, info_for, machine, markdown_table, parse_ints, results_folder, synthetic_features, write_report,
)
from benchmarks.latency.measure import random_images
from benchmarks.latency.timing import sample, wall_clock
from semobridge.backbones import load_backbone
from semobridge.blend import BlendParams
from semobridge.fit import fit_features
from semobridge.prompts import ENSEMBLE_TEMPLATES
from semobridge_export import export
from semobridge_export.fused import FusedClassifier
from semobridge_export.onnx_graph import save_model, to_onnx, trace
from semobridge_runtime import Classifier, head
from semobridge_runtime.backends.session import CPU, SessionSettings, open_session
from semobridge_runtime.contract import LABEL, SCORES
from semobridge_runtime.enrol import SHOT_OUTPUTS, class_tensors

OVERHEAD_TARGET = 0.03
ENROL_TARGET_MS = 20.0
C_DIR = Path(__file__).resolve().parents[1] / "runtime" / "c"


def ort_session(path: Path):
    """A CPU session as the latency benchmark makes them (sessions interleave: intra-op spinning off)."""
    return open_session(path, SessionSettings(CPU, allow_spinning=False))


class HeadOnly(FusedClassifier):
    """The fused classifier's head alone: image embeddings q [N, d] (and the class set) -> scores, label.
    Its graphs, baked and as data, time what the class set as data adds without the encoder's noise."""

    output_names = (SCORES, LABEL)

    def __init__(self, fused: FusedClassifier):
        nn.Module.__init__(self)
        self.input_kind, self.image_size, self.preprocess, self.encoder, self.head = "float", 0, None, None, fused.head

    def forward(self, image: torch.Tensor, text_classifier: torch.Tensor | None = None,  # type: ignore[override]
                bridged_prototypes: torch.Tensor | None = None, image_prototypes: torch.Tensor | None = None,
                class_kl: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        scores = self.classify(image, text_classifier, bridged_prototypes, image_prototypes, class_kl)
        return scores, scores.argmax(dim=-1)

    def example_input(self, batch: int = 2, size: tuple[int, int] | None = None) -> torch.Tensor:
        return torch.randn(batch, self.embedding_dim, generator=torch.Generator().manual_seed(0))


def graphs(module: FusedClassifier, stage: Path, stem: str) -> tuple[Any, Any]:
    """CPU sessions of `module` exported with the classes baked in and with the class set as data."""
    baked = save_model(to_onnx(trace(module, head_as_data=False), module.output_names), stage / f"{stem}_baked.onnx")
    data = save_model(to_onnx(trace(module), module.output_names, defaults=module.graph_defaults()), stage / f"{stem}_data.onnx")
    return ort_session(baked), ort_session(data)


def head_as_data(fused: FusedClassifier, stage: Path, batches: tuple[int, ...], args: argparse.Namespace, bar) -> list[dict[str, Any]]:
    """Per batch, timed in turns: p50 of the whole graph baked and as data (fed nothing, fed the class set),
    and of the head alone, baked and as data (fed)."""
    baked, data = graphs(fused, stage, "model")
    head_baked, head_data = graphs(HeadOnly(fused), stage, "head")
    classes = {name: t.numpy() for name, t in fused.fitted_classes().items()}
    rows = []
    for batch in batches:
        images = random_images(batch, (224, 224))
        q = np.random.default_rng(batch).standard_normal((batch, fused.embedding_dim)).astype(np.float32)
        timers = [wall_clock(lambda: baked.run(None, {"image": images})),
                  wall_clock(lambda: data.run(None, {"image": images})),
                  wall_clock(lambda: data.run(None, {"image": images, **classes}))]
        baked_ms, default_ms, fed_ms = (statistics.median(t) for t in sample(timers, args.warmup, args.iters, args.budget))
        head_timers = [wall_clock(lambda: head_baked.run(None, {"image": q})),
                       wall_clock(lambda: head_data.run(None, {"image": q, **classes}))]
        head_baked_ms, head_data_ms = (statistics.median(t) for t in sample(head_timers, 20, 2000, args.budget / 4))
        rows.append({"batch": batch, "classes": fused.num_classes, "baked_p50_ms": baked_ms, "data_p50_ms": default_ms,
                     "fed_p50_ms": fed_ms, "data_over_baked": default_ms / baked_ms, "fed_over_baked": fed_ms / baked_ms,
                     "head_baked_p50_ms": head_baked_ms, "head_data_p50_ms": head_data_ms,
                     "head_extra_over_baked": (head_data_ms - head_baked_ms) / baked_ms})
        bar.update()
    return rows


def median_ms(fn: Callable[[], Any], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def enrolment(model: Path, shots: int, repeats: int, stage: Path, bar) -> dict[str, Any]:
    """Times of adding one class to the model's C fitted classes, by part (medians over `repeats`)."""
    clf = Classifier.load(model, providers=["CPUExecutionProvider"])
    images = list(random_images(shots, (224, 224), seed=1))
    fitted = clf._enrolment.fitted()
    text = clf._enrolment.text()  # the classifier's own text tower session
    prompts = [t.format("blue mug") for t in ENSEMBLE_TEMPLATES]  # the benchmark head records no templates
    tokens = text._tokenizer(prompts)
    shots = clf._run(images, SHOT_OUTPUTS, None)
    embeddings = text.embeddings(prompts)
    base = fitted.fitted  # as loaded: no running softmax denominators yet
    warm = base.added("warm-up", *class_maths(embeddings, shots, base))  # one edit made them

    def maths_and_add(classes) -> Callable[[], Any]:
        return lambda: classes.added("blue mug", *class_maths(embeddings, shots, classes))

    parts = {
        "image embeddings of the shots (model graph)": median_ms(lambda: clf._run(images, SHOT_OUTPUTS, None), repeats),
        "tokenize the prompts": median_ms(lambda: text._tokenizer(prompts), repeats),
        "text tower on the prompts": median_ms(lambda: text._session.run(None, {text._input: tokens}), repeats),
        "head maths, first edit after loading": median_ms(maths_and_add(base), repeats),
        "head maths, later edits": median_ms(maths_and_add(warm), repeats),
        "remove_class": median_ms(lambda: warm.removed("warm-up"), repeats),
        "save_classes (class file)": median_ms(lambda: clf.save_classes(stage / "shop.classes"), repeats),
    }
    bar.update()
    add = median_ms(lambda: clf.add_class(f"mug {time.perf_counter_ns()}", images, prompts=prompts), max(3, repeats // 10))
    bar.update()
    return {"classes": len(base), "shots": shots, "prompts": len(prompts), "parts_ms": parts, "add_class_ms": add,
            "class_file_bytes": (stage / "shop.classes").stat().st_size}


def class_maths(embeddings: np.ndarray, shots: Sequence[np.ndarray],
                classes) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(T, P, I) of one class from its prompts' text embeddings and its shots' features and bridged features."""
    return class_tensors(head.prototype(embeddings), shots, classes)


def refit_export(backbone, classes: int, shots: int, stage: Path, bar) -> dict[str, Any]:
    """Training-free fit of `classes` classes from cached (synthetic) embeddings, fixed blend parameters,
    and the export of the fused ONNX graph."""
    features = synthetic_features(classes, shots, 0, *backbone.text_projection.shape, text_projection=backbone.text_projection.cpu())
    info = info_for(features, backbone.identity(), backbone.image_size, backbone.mean, backbone.std)
    start = time.perf_counter()
    fitted = fit_features(features, info, params=BlendParams())
    fit_s = time.perf_counter() - start
    start = time.perf_counter()
    export(fitted, backbone, stage / "refit", formats=("onnx",), log=lambda _: None)
    export_s = time.perf_counter() - start
    bar.update()
    return {"classes": classes, "fit_s": fit_s, "export_s": export_s, "total_s": fit_s + export_s}


def c_library(model: Path, class_file: Path, args: argparse.Namespace, bar) -> dict[str, Any]:
    """runtime/c/tools/time_classes on the export and the class file: sb_set_classes, and classify fed the set or not."""
    made = subprocess.run(["make", "-C", str(C_DIR), f"PYTHON={sys.executable}"], capture_output=True, text=True)
    if made.returncode != 0:
        return {"skipped": f"make -C runtime/c failed: {(made.stderr or made.stdout).strip().splitlines()[-1:]}"}
    done = subprocess.run([str(C_DIR / "build" / "tools" / "time_classes"), "--iters", str(args.iters), "--loads",
                           str(args.repeats), str(model), str(class_file)], capture_output=True, text=True, check=True)
    bar.update()
    return json.loads(done.stdout)


def fmt_load(load: Sequence[float]) -> str:
    return "/".join(f"{v:.1f}" for v in load)


def report(result: dict[str, Any]) -> str:
    m, enrol, refit, c = result["machine"], result["enrolment"], result["refit_export"], result["c_library"]
    overhead = markdown_table(
        ["classes", "batch", "baked p50 ms", "as data p50 ms", "fed p50 ms", "as data / baked", "fed / baked"],
        [[r["classes"], r["batch"], r["baked_p50_ms"], r["data_p50_ms"], r["fed_p50_ms"], r["data_over_baked"],
          r["fed_over_baked"]] for r in result["head_as_data"]],
    )
    head_only = markdown_table(
        ["classes", "batch", "head baked p50 ms", "head as data (fed) p50 ms", "difference / whole baked graph"],
        [[r["classes"], r["batch"], r["head_baked_p50_ms"], r["head_data_p50_ms"], f"{r['head_extra_over_baked']:+.3%}"]
         for r in result["head_as_data"]],
    )
    parts = markdown_table(["part of adding one class", "median ms"], [*enrol["parts_ms"].items(), ["whole add_class", enrol["add_class_ms"]]])
    worst = max(max(r["data_over_baked"], r["fed_over_baked"]) for r in result["head_as_data"]) - 1
    maths = max(enrol["parts_ms"]["head maths, first edit after loading"], enrol["parts_ms"]["head maths, later edits"])
    return "\n".join([
        f"# Changing classes: {result['model']}, {enrol['classes']} classes",
        "",
        f"CPU {m['cpu']} x {m['cpu_count']}, onnxruntime {m['onnxruntime']}, torch {m['torch']}, numpy {np.__version__}. "
        f"Load average (1, 5, 15 min) at start {fmt_load(result['load_average'][0])}, at the end {fmt_load(result['load_average'][1])}. "
        "Random weights (speed only).",
        "",
        "## Head as data (ONNX Runtime CPU, 224x224, calls in turns)",
        "",
        overhead,
        "",
        f"Largest overhead of the whole graph: {worst:+.1%} (target < {OVERHEAD_TARGET:.0%}; on a busy machine this "
        "ratio carries the encoder's noise). The head alone, baked and as data, timed the same way (embeddings in):",
        "",
        head_only,
        "",
        f"## Enrolment: one class ({enrol['shots']} shots, {enrol['prompts']} prompts) added to {enrol['classes']}",
        "",
        parts,
        "",
        f"Head maths (everything but the encoders): {maths:.2f} ms at most (target <= {ENROL_TARGET_MS:.0f} ms). "
        f"Class file: {enrol['class_file_bytes']:,} bytes.",
        "",
        "## The same change by re-fit + re-export (from cached embeddings, no search)",
        "",
        markdown_table(["classes", "fit s", "export s", "total s"], [[refit["classes"], refit["fit_s"], refit["export_s"], refit["total_s"]]]),
        "",
        "## C library (runtime/c; batch 1, 224x224, calls in turns, ONNX Runtime threads not spinning)",
        "",
        c["skipped"] if "skipped" in c else markdown_table(
            ["classes", "sb_set_classes ms", "classify, fitted (fed nothing) p50 ms", "classify, fed the class set p50 ms",
             "fed / fitted"],
            [[c["classes"], c["set_classes_ms"], c["classify_fitted_ms"], c["classify_set_ms"], c["set_over_fitted"]]]),
    ])


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="ViT-B-16")
    p.add_argument("--classes", type=int, default=1000, help="fitted classes (default 1000)")
    p.add_argument("--shots", type=int, default=4, help="images of the enrolled class (default 4)")
    p.add_argument("--batches", type=parse_ints, default=(1, 8))
    p.add_argument("--iters", type=int, default=60, help="timed calls per graph and batch, at most (default 60)")
    p.add_argument("--budget", type=float, default=60.0, help="seconds per batch size, at most (default 60)")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--repeats", type=int, default=50, help="repeats of each enrolment part (default 50)")
    p.add_argument("--quick", action="store_true", help="CI-sized: semobridge-tiny, 50 classes, few calls")
    add_out_options(p, "-classes", quick=True)
    args = p.parse_args(argv)
    if args.quick:
        args.model, args.classes, args.iters, args.budget, args.warmup, args.repeats = "semobridge-tiny", 50, 3, 1.0, 1, 3
    out = results_folder(args.out, "-classes", quick=args.quick, force=args.force)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the random-weights warning: speed does not depend on weights
        backbone = load_backbone(args.model, "none", device="cpu")
    fitted = benchmark_head(backbone, args.classes)
    load = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="semobridge-classes-") as tmp, \
            tqdm(total=len(args.batches) + 4, desc="classes", file=sys.stderr) as bar:
        stage = Path(tmp)
        rows = head_as_data(FusedClassifier(fitted, backbone), stage, args.batches, args, bar)
        written = export(fitted, backbone, stage / "export", formats=("onnx", "text"), log=lambda _: None)
        enrol = enrolment(written["onnx"], args.shots, args.repeats, stage, bar)
        refit = refit_export(backbone, args.classes + 1, args.shots, stage, bar)
        clib = c_library(written["onnx"], stage / "shop.classes", args, bar)
    result = {"benchmark": "classes", "date": time.strftime("%Y-%m-%d %H:%M:%S"), "model": args.model,
              "machine": machine(), "load_average": [load, os.getloadavg()], "head_as_data": rows, "enrolment": enrol,
              "refit_export": refit, "c_library": clib}
    text = report(result)
    print(text)
    write_report(out, "classes", result, text)
    return result


if __name__ == "__main__":
    main()

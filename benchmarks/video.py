"""Video (issue 22, section 3): decode + classify frames/s (Classifier.stream) against classify alone and decode alone.

    python -m benchmarks.video                   # ViT-B-16 (random weights), a 480x640 H.264 clip, 60 frames
    python -m benchmarks.video --quick           # CI-sized: semobridge-tiny, 120x160, 12 frames
    python -m benchmarks.video --onnx model.onnx # your exported model instead of one exported here

A clip of moving gradients with noise (as a camera gives) is encoded here with PyAV (H.264 where the PyAV build
has libx264, else MPEG-4 part 2), then timed in interleaved rounds, each frame one call (batch 1, as a live
stream goes): "decode" (PyAV to RGB arrays), "classify" (Classifier.predict on frames decoded beforehand),
"decode + classify" (Classifier.stream, every frame) and, for the decoder's share when frames are skipped,
"stream --every 5" (frames/s counts decoded frames there). Needs the runtime's video extra (PyAV).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, Callable

if __package__ in (None, ""):  # run as a file: python benchmarks/video.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
from tqdm.auto import tqdm

from benchmarks.common import add_out_options, machine, markdown_table, results_folder, write_report
from benchmarks.latency.measure import parse_sizes

RATE = 30  # frames a second of the clip
EVERY = 5  # the skipping case


def make_clip(path: Path, frames: int, hw: tuple[int, int], seed: int = 0) -> str:
    """Encode a clip of moving gradients plus noise; returns the codec used."""
    import av

    codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
    height, width = hw
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=RATE)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for i in range(frames):
            base = np.stack([(x + 4 * i) % 256, (y + 2 * i) % 256, (x + y + 3 * i) % 256], axis=-1)
            pixels = np.clip(base + rng.normal(0, 8, base.shape), 0, 255).astype(np.uint8)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")))
        container.mux(stream.encode())
    return codec


def decode_all(path: Path) -> list[np.ndarray]:
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"  # as Classifier.stream decodes files
        return [frame.to_ndarray(format="rgb24") for frame in container.decode(stream)]


def export_model(name: str, classes: int, stage: Path) -> Path:
    """A head fitted on random embeddings of `name`'s widths, exported as one fused fp32 ONNX graph."""
    from benchmarks.common import benchmark_head
    from semobridge.backbones import load_backbone
    from semobridge_export import export

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        backbone = load_backbone(name, "none", device="cpu", seed=0)
        return export(benchmark_head(backbone, classes), backbone, stage / "model", formats=("onnx",), log=lambda _: None)["onnx"]


def rates(cases: dict[str, Callable[[], int]], rounds: int) -> dict[str, list[float]]:
    """Frames/s of each case in each round, the cases interleaved within a round (a shared machine's drift hits all)."""
    seen: dict[str, list[float]] = {name: [] for name in cases}
    for _ in tqdm(range(rounds), desc="video", file=sys.stderr):
        for name, run in cases.items():
            start = time.perf_counter()
            frames = run()
            seen[name].append(frames / (time.perf_counter() - start))
    return seen


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(prog="python -m benchmarks.video", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help="open_clip model to export (default ViT-B-16; --quick: semobridge-tiny)")
    p.add_argument("--onnx", type=Path, default=None, help="an exported model.onnx to time instead of exporting --model")
    p.add_argument("--classes", type=int, default=100)
    p.add_argument("--size", default=None, help="frame size HEIGHTxWIDTH (default 480x640; --quick: 120x160)")
    p.add_argument("--frames", type=int, default=None, help="frames in the clip (default 60; --quick: 12)")
    p.add_argument("--rounds", type=int, default=None, help="timed rounds (default 3; --quick: 1)")
    p.add_argument("--threads", type=int, default=0, help="ONNX Runtime intra-op threads (default 0: one per core)")
    add_out_options(p, "-video", quick=True)
    p.add_argument("--quick", action="store_true", help="CI-sized run")
    args = p.parse_args(argv)
    args.model = args.model or ("semobridge-tiny" if args.quick else "ViT-B-16")
    hw = parse_sizes(args.size or ("120x160" if args.quick else "480x640"))[0][1]
    args.frames = args.frames or (12 if args.quick else 60)
    args.rounds = args.rounds or (1 if args.quick else 3)
    out = results_folder(args.out, "-video", quick=args.quick, force=args.force)
    try:
        import av
    except ImportError:
        raise SystemExit("benchmarks.video needs PyAV: pip install -e './runtime[video]'") from None
    from semobridge_runtime import Classifier

    load = os.getloadavg()  # a shared machine: how busy it was, with the figures
    with tempfile.TemporaryDirectory(prefix="semobridge-video-") as tmp:
        stage = Path(tmp)
        clip = stage / "clip.mp4"
        codec = make_clip(clip, args.frames, hw)
        model = args.onnx or export_model(args.model, args.classes, stage)
        clf = Classifier.load(model, providers=["CPUExecutionProvider"], intra_op_num_threads=args.threads,
                              prefer_int8=False)
        frames = decode_all(clip)
        clf.predict(frames[0])  # warm-up: the session's first run allocates

        def classify() -> int:
            for frame in frames:
                clf.predict(frame, top_k=1)
            return len(frames)

        def stream(every: int) -> Callable[[], int]:
            def run() -> int:
                s = clf.stream(clip, every=every)
                for _ in s:
                    pass
                return s.decoded
            return run

        cases = {"decode": lambda: len(decode_all(clip)), "classify": classify,
                 "decode + classify": stream(1), f"stream --every {EVERY}": stream(EVERY)}
        seen = rates(cases, args.rounds)
    median = {name: statistics.median(values) for name, values in seen.items()}
    rows = [{"case": name, "frames_per_s": median[name], "over_classify": median[name] / median["classify"],
             "rounds": seen[name]} for name in cases]
    m = machine()
    label = args.onnx.name if args.onnx else f"{args.model} (random weights, {args.classes} classes)"
    text = "\n".join([
        f"# Video: decode + classify against classify alone ({label}, {hw[0]}x{hw[1]}, {codec}, ONNX Runtime CPU, fp32)",
        "",
        f"CPU {m['cpu']} x {m['cpu_count']}, onnxruntime {m['onnxruntime']}, PyAV {av.__version__}. {args.frames} frames at "
        f"{RATE} frames/s, batch 1; the median of {args.rounds} interleaved rounds. \"stream --every {EVERY}\" counts decoded "
        f"frames (one in five classified). Load average {load[0]:.1f} before, {os.getloadavg()[0]:.1f} after.",
        "",
        markdown_table(["case", "frames/s", "/ classify"], [[r["case"], r["frames_per_s"], r["over_classify"]] for r in rows]),
    ])
    print(text)
    result = {"benchmark": "video", "date": time.strftime("%Y-%m-%d %H:%M:%S"), "model": label, "machine": m,
              "load_average": [load, os.getloadavg()],
              "settings": {"size": f"{hw[0]}x{hw[1]}", "frames": args.frames, "rate": RATE, "codec": codec,
                           "rounds": args.rounds, "threads": args.threads, "pyav": av.__version__},
              "rows": rows}
    write_report(out, "video", result, text)
    return result


if __name__ == "__main__":
    main()

"""The opt-in fast JPEG path (issue 21, section 2): `Classifier.load(..., fast_jpeg=True)` decodes a JPEG DCT-scaled
(PIL `draft`: 1/2, 1/4 or 1/8, the shorter side kept >= twice the model's input side) before the exact resize.
Against a full decode: the time of decode + open_clip's resize, the difference in what the model sees (the
S x S crop in grey levels) and, with --model, the labels, embeddings and `predict` time of the whole classifier (the
path as users run it: file -> label, the exact resize inside the graph). In the same rounds, the entropy-decoding floor:
a decode at 1/8 (libjpeg still decodes every coefficient), the least any DCT-scaled decode costs, so full / floor
bounds the speedup a drafted decode can reach.

    python -m benchmarks.jpeg                          # 12 MP photos (3024x4032), S = 224
    python -m benchmarks.jpeg --model model.onnx       # also labels and embeddings through Classifier.predict
    python -m benchmarks.jpeg --quick                  # CI-sized: 3 smaller photos
"""
from __future__ import annotations

import argparse
import io
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file: python benchmarks/jpeg.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
from PIL import Image

from benchmarks.common import add_out_options, machine, markdown_table, results_folder, write_report
from benchmarks.latency.timing import sample, wall_clock
from semobridge_runtime.images import draft_jpeg


def photos(n: int, hw: tuple[int, int], seed: int = 0) -> list[bytes]:
    """`n` JPEG files (quality 90) of smooth random scenes with fine texture, as a camera writes them."""
    rng = np.random.default_rng(seed)
    files = []
    for _ in range(n):
        low = Image.fromarray(rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)).resize(hw[::-1], Image.BICUBIC)
        texture = rng.normal(0, 6, (*hw, 3))
        pixels = np.clip(np.asarray(low, np.float32) + texture, 0, 255).astype(np.uint8)
        out = io.BytesIO()
        Image.fromarray(pixels).save(out, "JPEG", quality=90)
        files.append(out.getvalue())
    return files


def crop(img: Image.Image, size: int) -> np.ndarray:
    """open_clip's eval resize (shorter side to `size`, PIL bicubic) and centre crop, as float grey levels."""
    w, h = img.size
    new_w, new_h = size * w // min(w, h), size * h // min(w, h)
    top, left = int(round((new_h - size) / 2.0)), int(round((new_w - size) / 2.0))
    return np.asarray(img.convert("RGB").resize((new_w, new_h), Image.BICUBIC), np.float32)[top:top + size, left:left + size]


def decode(data: bytes, draft_side: int | None) -> Image.Image:
    img = Image.open(io.BytesIO(data))
    if draft_side:
        draft_jpeg(img, draft_side)
    img.load()
    return img


def entropy_floor(data: bytes) -> Image.Image:
    """The JPEG decoded at 1/8 of its size (its DC coefficients only, but every coefficient entropy-decoded)."""
    img = Image.open(io.BytesIO(data))
    img.draft(None, (1, 1))
    img.load()
    return img


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(prog="python -m benchmarks.jpeg", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", default=None, help="photo HEIGHTxWIDTH (default 3024x4032; --quick 960x1280)")
    p.add_argument("--photos", type=int, default=None, help="photos (default 12; --quick 3)")
    p.add_argument("--image-size", type=int, default=224, help="the model's input side S (default 224; --model: the model's)")
    p.add_argument("--model", default=None, help="an exported model.onnx: compare labels and embeddings through Classifier.predict")
    p.add_argument("--iters", type=int, default=None, help="timed rounds (default 20; --quick 2)")
    add_out_options(p, "-jpeg", quick=True)
    p.add_argument("--quick", action="store_true")
    args = p.parse_args(argv)
    hw = tuple(int(v) for v in (args.size or ("960x1280" if args.quick else "3024x4032")).split("x"))
    out = results_folder(args.out, "-jpeg", quick=args.quick, force=args.force)  # refused before any work
    files = photos(args.photos or (3 if args.quick else 12), hw)
    clf = fast = None
    if args.model:
        from semobridge_runtime import Classifier

        clf = Classifier.load(args.model, prefer_int8=False, backend="onnxruntime")
        fast = Classifier.load(args.model, prefer_int8=False, backend="onnxruntime", fast_jpeg=True)
        args.image_size = clf.info.image_size
    S = args.image_size
    full = [crop(decode(f, None), S) for f in files]
    drafted_imgs = [decode(f, 2 * S) for f in files]
    drafted = [crop(im, S) for im in drafted_imgs]
    diff = np.abs(np.stack(full) - np.stack(drafted))
    with tempfile.TemporaryDirectory(prefix="semobridge-jpeg-") as tmp:
        paths = [str(Path(tmp) / f"photo{i}.jpg") for i in range(len(files))]
        for path, data in zip(paths, files):
            Path(path).write_bytes(data)
        timers = [wall_clock(lambda: [crop(decode(f, None), S) for f in files]),
                  wall_clock(lambda: [crop(decode(f, 2 * S), S) for f in files]),
                  wall_clock(lambda: [entropy_floor(f) for f in files])]
        if clf is not None:  # one photo per call, as a user classifies a photo
            timers += [wall_clock(lambda: [clf.predict([q]) for q in paths]), wall_clock(lambda: [fast.predict([q]) for q in paths])]
            a, b = clf.predict(paths), fast.predict(paths)
        times = sample(timers, 1, args.iters or (2 if args.quick else 20), 60.0)
    full_ms, draft_ms, floor_ms, *predict_ms = (statistics.median(t) / len(files) for t in times)
    result: dict[str, Any] = {
        "benchmark": "jpeg", "command": " ".join(["python -m benchmarks.jpeg", *(argv if argv is not None else sys.argv[1:])]),
        "machine": machine(), "photo": f"{hw[0]}x{hw[1]}", "photos": len(files), "image_size": S,
        "decoded_as": f"{drafted_imgs[0].height}x{drafted_imgs[0].width}",
        "full_decode_resize_ms": full_ms, "draft_decode_resize_ms": draft_ms, "speedup": full_ms / draft_ms,
        "entropy_floor_ms": floor_ms, "speedup_bound": full_ms / floor_ms,
        "max_grey_difference": float(diff.max()), "mean_grey_difference": float(diff.mean()),
        "pixels_over_3_levels": float((diff > 3).mean()),
    }
    if clf is not None:
        result |= {"model": Path(args.model).name, "label_agreement": float((a.labels == b.labels).mean()),
                   "min_embedding_cosine": float((a.embeddings * b.embeddings).sum(1).min()),
                   "predict_ms": predict_ms[0], "fast_predict_ms": predict_ms[1], "predict_speedup": predict_ms[0] / predict_ms[1]}
    rows = [[k, v] for k, v in result.items() if k not in ("benchmark", "machine", "command")]
    text = "\n".join([f"# Fast JPEG path (DCT-scaled decode) against a full decode, S = {S}", "", f"Command: `{result['command']}`", "",
                      f"Machine: CPU {result['machine']['cpu']} x {result['machine']['cpu_count']}. Per photo, decode + "
                      "open_clip's resize and crop (PIL), median over interleaved rounds; entropy floor = a 1/8-scale decode; "
                      "predict = Classifier.predict on the file, one photo per call (the graph's own resize).", "", markdown_table(["measure", "value"], rows)])
    out.mkdir(parents=True, exist_ok=True)
    write_report(out, "jpeg", result, text)
    print(text)
    return result


if __name__ == "__main__":
    main()

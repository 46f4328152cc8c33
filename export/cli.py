"""`semobridge-export` (fit and export in one go) and `semobridge-build-engine` (on the target GPU)."""
from __future__ import annotations

from pathlib import Path

import click
import numpy as np

from .formats import FORMATS, format_table
from .tensorrt import DEFAULT_CACHE, Profile, TensorRTError, build_engine

CHECK_IMAGES = 32
FIT_IMAGES = 256  # at most this many of the few-shot images measure the int8 label agreement
TINY_HINT = (
    "Offline? Pass --pretrained PATH to a local open_clip checkpoint, or make a smoke run with the "
    "random-weight test model: --model semobridge-tiny --pretrained none."
)
HOW_TO_RUN = {
    "onnx": "semobridge-run {path} photo.jpg   (or onnxruntime: session.run(None, {{'image': uint8 NxHxWx3}}))",
    "onnx-fp16": "semobridge-run {path} photo.jpg   (meant for GPUs: CUDA/TensorRT execution providers)",
    "onnx-int8": "semobridge-run {path} photo.jpg   (CPU/ARM)",
    "pt2": "torch.export.load('{path}').module()(torch.from_numpy(uint8 NxHxWx3))",
    "engine": "semobridge-run {path} photo.jpg --backend tensorrt   (this GPU and TensorRT version only)",
}


def parse_size(text: str) -> tuple[int, int]:
    """"480x640" -> (480, 640) as (H, W)."""
    try:
        h, w = (int(p) for p in text.lower().split("x"))
    except ValueError:
        h = w = 0
    if h < 1 or w < 1:
        raise click.BadParameter(f"{text!r} is not HxW with positive integers, e.g. 480x640")
    return h, w


def parse_profile(batch: str, sizes: str) -> Profile:
    """--batch MIN,OPT,MAX and --sizes HxW,HxW,HxW -> Profile."""
    try:
        b = tuple(int(v) for v in batch.split(","))
    except ValueError:
        b = ()
    if len(b) != 3:
        raise click.BadParameter(f"{batch!r} is not MIN,OPT,MAX, e.g. 1,8,32", param_hint="--batch")
    s = tuple(parse_size(p) for p in sizes.split(","))
    if len(s) != 3:
        raise click.BadParameter(f"{sizes!r} is not MIN,OPT,MAX sizes, e.g. 64x64,480x640,1080x1920", param_hint="--sizes")
    return Profile(b, s)  # type: ignore[arg-type]


def profile_options(f):
    f = click.option("--sizes", default="32x32,480x640,1080x1920", show_default=True,
                     help="TensorRT profile image sizes MIN,OPT,MAX as HxW (dynamic uint8 input).")(f)
    return click.option("--batch", default="1,1,16", show_default=True, help="TensorRT profile batch MIN,OPT,MAX.")(f)


def _check_images(data: str | None) -> list[np.ndarray] | None:
    """Up to CHECK_IMAGES test (else validation) images of the dataset, for the fp16/int8 checks."""
    if data is None:
        return None
    from semobridge.data import load_dataset, load_rgb

    dataset = load_dataset(data)
    items = next((dataset.splits[s] for s in ("test", "val", "train") if dataset.splits.get(s)), [])
    return [np.asarray(load_rgb(path)) for path, _ in items[:CHECK_IMAGES]]


def _fit_images(data: str, shots: int, seed: int) -> list[np.ndarray]:
    """The few-shot images the head is fitted on (the same split as fitting), at most FIT_IMAGES spread over it,
    for the int8 label agreement."""
    from semobridge.data import few_shot_split, load_dataset, load_rgb

    items = few_shot_split(load_dataset(data), shots, seed).shots
    return [np.asarray(load_rgb(path)) for path, _ in items[::-(-len(items) // FIT_IMAGES)]]


def _fitted(data, shots, model, pretrained, from_model, seed, train):
    """(head, backbone): loaded from --from-model, else fitted on --data."""
    from semobridge.backbones import BackboneError, load_backbone
    from semobridge.model import ModelFileError, SeMoBridge

    try:
        if from_model:
            head = SeMoBridge.load(from_model)
            recorded = head.info.backbone
            backbone = load_backbone(recorded["name"], pretrained or recorded["pretrained"], device="cpu")
            head.check_backbone(backbone)
            return head, backbone
        from semobridge.pipeline import fit_dataset

        return fit_dataset(data, shots, model=model, pretrained=pretrained or "openai", seed=seed, train=train)
    except BackboneError as exc:
        message = str(exc)
        raise click.ClickException(message if "--pretrained" in message else f"{message}\n{TINY_HINT}") from None
    except (ModelFileError, ValueError, FileNotFoundError) as exc:
        raise click.ClickException(str(exc)) from None


def _size(path: Path) -> str:
    n = float(path.stat().st_size)
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return ""


def _summary(head, backbone, written: dict[str, Path]) -> str:
    from semobridge.backbones import RANDOM_WARNING

    info = head.info
    names = ", ".join(info.class_names[:6]) + (", ..." if len(info.class_names) > 6 else "")
    acc = "n/a" if info.val_accuracy is None else f"{info.val_accuracy:.1%} ({info.val_source})"
    rows = [
        ("classes", f"{len(info.class_names)}: {names}"),
        ("shots", str(info.shots)),
        ("variant", info.variant),
        ("backbone", f"{info.backbone['name']} ({info.backbone['pretrained']})"),
        ("val accuracy", acc),
    ]
    lines = [f"{k:<13} {v}" for k, v in rows] + ["", "artifacts:"]
    lines += [f"  {path.name:<24} {_size(path):>9}" for path in sorted(set(written.values()))]
    lines += ["", "run:"] + [f"  {HOW_TO_RUN[f].format(path=written[f])}" for f in FORMATS if f in written]
    if backbone.is_random:
        lines += ["", RANDOM_WARNING]
    return "\n".join(lines)


@click.command(epilog="\b\nFormats:\n" + format_table() + "\n\nThe TensorRT path was written from TensorRT 10's documentation and has not been run.")
@click.option("--data", type=click.Path(exists=True), help="Labelled images (class folders, train/val/test) [default: the bundled demo dataset].")
@click.option("--shots", default=8, show_default=True, help="Images per class to fit on (K).")
@click.option("--model", default="ViT-B-16", show_default=True, help="open_clip model name.")
@click.option("--pretrained", help="open_clip tag, local checkpoint file, or 'none' (random weights, smoke tests) [default: openai, or as recorded in --from-model].")
@click.option("--from-model", type=click.Path(exists=True, dir_okay=False), help="Export this fitted model (.safetensors) instead of fitting.")
@click.option("--train", is_flag=True, help="Fit SeMoBridge-T (trained) instead of training-free SeMoBridge.")
@click.option("--seed", default=1, show_default=True, help="Few-shot split and training seed.")
@click.option("--out", default="export", show_default=True, type=click.Path(file_okay=False), help="Output folder.")
@click.option("--formats", default="onnx", show_default=True, help=f"Comma-separated formats: {', '.join(FORMATS)}.")
@click.option("--input", "input_kind", default="uint8", show_default=True, type=click.Choice(["uint8", "float"]),
              help="uint8: raw RGB NHWC pixels, preprocessing in the graph; float: normalised NCHW [N,3,S,S].")
@click.option("--fixed-size", help="Static input height and width HxW (uint8 input; friendlier to TensorRT).")
@click.option("--half", is_flag=True, help="Also write an fp16 ONNX graph (LayerNorm, softmax and blend in fp32).")
@click.option("--int8-cpu", is_flag=True, help="Also write a dynamic-int8 ONNX graph for CPU/ARM.")
@click.option("--engine", is_flag=True, help="Also build a TensorRT fp16 engine on this machine (TensorRT 10; unverified, see below).")
@profile_options
def main(data, shots, model, pretrained, from_model, train, seed, out, formats, input_kind, fixed_size, half, int8_cpu, engine, batch, sizes):
    """Fit SeMoBridge on a few shots per class and export one fused graph: uint8 pixels -> class scores."""
    from .exporter import export

    size = parse_size(fixed_size) if fixed_size else None
    profile = parse_profile(batch, sizes)
    if not from_model and data is None:
        from semobridge.demo import demo_dataset

        data = str(demo_dataset())
    head, backbone = _fitted(data, shots, model, pretrained, from_model, seed, train)
    try:
        written = export(
            head, backbone, out, formats, half=half, int8_cpu=int8_cpu, engine=engine, fixed_size=size,
            input_kind=input_kind, profile=profile, check_images=_check_images(data),
            fit_images=_fit_images(data, shots, seed) if int8_cpu and not from_model else None, log=click.echo,
        )
    except (ValueError, TensorRTError) as exc:
        raise click.ClickException(f"{exc}\nNothing was written to {out}.") from None
    click.echo("\n" + _summary(head, backbone, written))


@click.command()
@click.argument("model", type=click.Path(exists=True, dir_okay=False))
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Engine file [default: MODEL_trt.engine].")
@click.option("--fp16/--fp32", default=True, show_default=True, help="fp16 with LayerNorm, softmax, preprocessing and blend pinned to fp32.")
@click.option("--cache-dir", default=str(DEFAULT_CACHE), show_default=True, type=click.Path(file_okay=False),
              help="Engine and timing cache (keyed by GPU, TensorRT version and ONNX hash).")
@profile_options
def build_engine_main(model, output, fp16, cache_dir, batch, sizes):
    """Build a TensorRT engine from an exported MODEL.onnx on the GPU that will run it (e.g. a Jetson).

    UNVERIFIED: written from TensorRT 10's Python API documentation; it has not been run.
    The equivalent trtexec command is printed first.
    """
    try:
        path = build_engine(model, output, parse_profile(batch, sizes), fp16=fp16, cache_dir=cache_dir, log=click.echo)
    except (ValueError, TensorRTError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"wrote {path} and {path.with_suffix('.json').name}")

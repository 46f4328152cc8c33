"""`semobridge-export` (fit and export in one go) and `semobridge-build-engine` (on the target GPU).

Every option is checked before the (slow) fit: formats, TensorRT's presence, sizes, the output
folder, and options that contradict each other.
"""
from __future__ import annotations

from pathlib import Path

import click
import numpy as np

from semobridge import __version__
from semobridge.cli import fit_options, fit_with_options, json_log, parse_params, source_options, with_options
from semobridge.errors import InputError, ModelError
from semobridge.validate import image_size, output_file, parse_hw
from semobridge_runtime.commandline import ModelFile, command, model_argument, out_option, version_option

from .formats import DEFAULT_FORMATS, FORMATS, format_table, resolve_formats, unused_options
from .tensorrt import Profile

FROM_MODEL_OPTIONS = ("data", "pretrained")  # the fit options that still apply to --from-model (--data: the check images)
FORMAT_OPTIONS = {"input_kind": "--input", "fixed_size": "--fixed-size", "batch": "--batch", "sizes": "--sizes",
                  "class_counts": "--class-counts"}
FIT_IMAGES = 256  # at most this many of the few-shot images measure the int8 label agreement


def _min_opt_max(text: str, option: str, example: str) -> tuple[int, int, int]:
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 3:
        raise InputError(f"{option} {text!r} is not MIN,OPT,MAX", hint=f"e.g. {option} {example}")
    return values  # type: ignore[return-value]


def parse_profile(batch: str, sizes: str, class_counts: str) -> Profile:
    """--batch MIN,OPT,MAX, --sizes HxW,HxW,HxW (inside the graph's limits) and --class-counts MIN,OPT,MAX -> Profile."""
    s = tuple(image_size(*parse_hw(p, "--sizes entry"), "--sizes entry") for p in sizes.split(","))
    if len(s) != 3:
        raise InputError(f"--sizes {sizes!r} is not MIN,OPT,MAX sizes", hint="e.g. --sizes 64x64,480x640,1080x1920 (HxW)")
    return Profile(_min_opt_max(batch, "--batch", "1,8,32"), s, _min_opt_max(class_counts, "--class-counts", "1,100,4096"))  # type: ignore[arg-type]


def profile_options(f):
    default = Profile()
    f = click.option("--class-counts", default=",".join(map(str, default.classes)), show_default=True,
                     help="TensorRT profile class count MIN,OPT,MAX (the class sets the engine takes).")(f)
    f = click.option("--sizes", default=",".join(f"{h}x{w}" for h, w in default.sizes), show_default=True,
                     help="TensorRT profile image sizes MIN,OPT,MAX as HxW (dynamic uint8 input).")(f)
    return click.option("--batch", default=",".join(map(str, default.batch)), show_default=True,
                        help="TensorRT profile batch MIN,OPT,MAX.")(f)


def _check_images(data: str | None) -> list[np.ndarray] | None:
    """Up to CHECK_IMAGES test (else validation) images of the dataset, for the fp16/int8 checks."""
    if data is None:
        return None
    from semobridge.data import load_dataset, load_rgb

    from .exporter import CHECK_IMAGES

    dataset = load_dataset(data)
    items = next((dataset.splits[s] for s in ("test", "val", "train") if dataset.splits.get(s)), [])
    return [np.asarray(load_rgb(path)) for path, _ in items[:CHECK_IMAGES]]


def _fit_images(items: list) -> list[np.ndarray]:
    """The few-shot images the head was fitted on (the fit's own split), at most FIT_IMAGES spread over them,
    for the int8 label agreement."""
    from semobridge.data import load_rgb

    return [np.asarray(load_rgb(path)) for path, _ in items[::-(-len(items) // FIT_IMAGES)]]


def _from_model(from_model: str, pretrained: str | None):
    """(head, backbone) of a fitted model file."""
    from semobridge.backbones import load_backbone
    from semobridge.fit import UNKNOWN_BACKBONE
    from semobridge.model import SeMoBridge

    head = SeMoBridge.load(from_model)
    recorded = head.info.backbone
    if recorded == UNKNOWN_BACKBONE:
        raise ModelError(f"{from_model} was fitted from embeddings without naming their backbone, so it cannot be exported",
                         hint="fit it again with `semobridge fit-features FEATURES.npz --model NAME --pretrained WEIGHTS`")
    backbone = load_backbone(recorded["name"], pretrained or recorded["pretrained"], device="cpu")
    head.check_backbone(backbone)
    return head, backbone


def _size(path: Path) -> str:
    n = float(sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.is_dir() else path.stat().st_size)
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return ""


def _open_set(values: dict | None) -> str:
    """The calibration in one line: the threshold, and the probabilities' ECE before and after temperature scaling."""
    if not values:
        return "off (nothing held out to calibrate on: one shot per class and no validation split)"
    score = "top probability" if values.get("score", "max_probability") == "max_probability" else "MCM"
    return (f"{score} < {values['threshold']:.4f} ({100 * values['accept']:.0f} % of held-out known images "
            f"accepted); temperature {values['temperature']:.4g}, ECE {100 * values['ece_before']:.2f} % -> "
            f"{100 * values['ece_after']:.2f} %")


def _summary(head, backbone, written: dict[str, Path]) -> str:
    from semobridge.backbones import RANDOM_WARNING
    from semobridge.modelfile import percent

    info = head.info
    names = ", ".join(info.class_names[:6]) + (", ..." if len(info.class_names) > 6 else "")
    rows = [
        ("classes", f"{len(info.class_names)}: {names}"),
        ("shots", str(info.shots)),
        ("variant", info.variant),
        ("backbone", f"{info.backbone['name']} ({info.backbone['pretrained']})"),
        ("val accuracy", f"{percent(info.val_accuracy)} ({info.val_source})"),
        ("unknown", _open_set(info.open_set)),
    ]
    lines = [f"{k:<13} {v}" for k, v in rows] + ["", "artifacts:"]
    lines += [f"  {path.name:<24} {_size(path):>9}" for path in sorted(set(written.values()))]
    onnx = written.get("onnx", "model.onnx")
    lines += ["", "run:"] + [f"  {FORMATS[f].run.format(path=written[f], onnx=onnx)}" for f in FORMATS if f in written]
    if backbone.is_random:
        lines += ["", RANDOM_WARNING]
    return "\n".join(lines)


def _given(ctx: click.Context, names: tuple[str, ...]) -> list[str]:
    """The options among `names` that the user set on the command line."""
    return [n for n in names if ctx.get_parameter_source(n) == click.core.ParameterSource.COMMANDLINE]


@command("semobridge-export",
         epilog="\b\nFormats:\n" + format_table() + "\n\nThe TensorRT path was written from TensorRT 10's documentation and has not been run.")
@with_options(source_options(export=True))
@with_options(fit_options)
@click.option("--from-model", type=ModelFile(), help="Export this fitted model (.safetensors) instead of fitting.")
@out_option("Output folder: new, empty, or holding an earlier export (replaced as a whole).", default="artifacts",
            show_default=True, dir_okay=True, file_okay=False)
@click.option("--formats", default=",".join(DEFAULT_FORMATS), show_default=True, help=f"Comma-separated formats: {', '.join(FORMATS)}.")
@click.option("--input", "input_kind", default="uint8", show_default=True, type=click.Choice(["uint8", "float"]),
              help="uint8: raw RGB NHWC pixels, preprocessing in the graph; float: normalised NCHW [N,3,S,S].")
@click.option("--fixed-size", help="Static input height and width HxW (uint8 input; friendlier to TensorRT).")
@click.option("--half", is_flag=True, help="Also write an fp16 ONNX graph (LayerNorm, softmax and blend in fp32).")
@click.option("--int8-cpu", is_flag=True, help="Also write a dynamic-int8 ONNX graph for CPU/ARM (and, with nncf "
                                               "installed, OpenVINO's static int8 IR: opt-in at load).")
@click.option("--engine", is_flag=True, help="Also build a TensorRT fp16 engine on this machine (TensorRT 10; unverified, see below).")
@profile_options
@version_option(__version__)
@click.pass_context
def main(ctx, from_model, out, formats, input_kind, fixed_size, half, int8_cpu, engine, batch, sizes, class_counts, log_json, **fit):
    """Fit SeMoBridge on a few shots per class and export one fused graph: uint8 pixels -> class scores.

    Every option of `semobridge fit` applies (the same definitions); -o/--out names the folder the artifacts go to."""
    from .exporter import check_out_dir, export, without_absent_openvino_int8
    from .tensorrt import _import_tensorrt

    names = resolve_formats(formats, half=half, int8_cpu=int8_cpu, engine=engine)
    names = without_absent_openvino_int8(names, formats, lambda _: None)  # asked for by name: refused before the fit
    unused = unused_options(names, [FORMAT_OPTIONS[n] for n in _given(ctx, tuple(FORMAT_OPTIONS))])
    if unused:
        raise InputError(f"{', '.join(unused)} applies to none of the formats requested ({', '.join(names)})",
                         hint="drop it, or request the format it is for (see --help)")
    if from_model:
        flags = {p.name: max(p.opts, key=len) for p in ctx.command.params}
        conflicting = [flags[n] for n in _given(ctx, (*fit, "log_json")) if n not in FROM_MODEL_OPTIONS]
        if conflicting:
            raise InputError(f"--from-model exports a fitted model; {', '.join(conflicting)} only apply to fitting",
                             hint="drop them, or fit with --data instead of --from-model")
    size = image_size(*parse_hw(fixed_size, "--fixed-size"), "--fixed-size") if fixed_size else None
    profile = parse_profile(batch, sizes, class_counts)
    fit["params"] = parse_params(fit["params"])
    if log_json is not None:
        output_file(log_json, "--log-json file")
    check_out_dir(out)
    if "engine" in names:
        _import_tensorrt()  # before minutes of fitting
    if not from_model and fit["data"] is None:
        from semobridge.demo import demo_dataset

        fit["data"] = str(demo_dataset())
    fit_images = None
    if from_model:
        head, backbone = _from_model(from_model, fit["pretrained"])
    else:
        with json_log(log_json) as log:
            head, backbone, split = fit_with_options(**fit, log=log)
        fit_images = _fit_images(split.shots) if {"onnx-int8", "openvino-int8"} & set(names) else None
    written = export(head, backbone, out, formats, half=half, int8_cpu=int8_cpu, engine=engine, fixed_size=size, input_kind=input_kind, profile=profile,
                     check_images=_check_images(fit["data"]), fit_images=fit_images, log=click.echo)
    click.echo("\n" + _summary(head, backbone, written))


@command("semobridge-build-engine")
@model_argument(metavar="MODEL")
@out_option("Engine file [default: MODEL_trt.engine].")
@click.option("--fp16/--fp32", default=True, show_default=True, help="fp16 with LayerNorm, softmax, preprocessing and blend pinned to fp32.")
@click.option("--cache-dir", type=click.Path(file_okay=False),
              help="Keep built engines and TensorRT's timing cache here (keyed by GPU, TensorRT version and ONNX hash) [default: none].")
@click.option("--dla-core", type=int, default=None,
              help="Run on this DLA core (Jetson AGX Orin: 0 or 1; Orin NX: 0, or 0 or 1), the layers DLA lacks on the GPU; "
                   "fp16 only; UNVERIFIED [default: GPU only].")
@click.option("--onnx-only", is_flag=True,
              help="Only write MODEL_tensorrt.onnx beside MODEL, the graph TensorRT builds from (the image's Cast first, "
                   "the class set as inputs), for the printed trtexec command; needs no TensorRT.")
@profile_options
@version_option(__version__)
def build_engine_main(model, out, fp16, cache_dir, dla_core, onnx_only, batch, sizes, class_counts):
    """Build a TensorRT engine from an exported MODEL.onnx on the GPU that will run it (e.g. a Jetson).

    UNVERIFIED: written from TensorRT 10's Python API documentation; it has not been run.
    The equivalent trtexec command is printed first; trtexec builds from MODEL_tensorrt.onnx (--onnx-only), not MODEL.
    """
    from .tensorrt import build_engine

    path = build_engine(model, out, parse_profile(batch, sizes, class_counts), fp16=fp16, cache_dir=cache_dir,
                        dla_core=dla_core, log=click.echo, onnx_only=onnx_only)
    click.echo(f"wrote {path}" if onnx_only else f"wrote {path} and {path.with_suffix('.json').name}")


if __name__ == "__main__":
    main()

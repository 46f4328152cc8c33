"""The table of export formats and one function per format (Ultralytics exporter style)."""
from __future__ import annotations

import dataclasses
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np
from semobridge_runtime.contract import (ENROLMENT_FILES, INT8_SUFFIX, OPENVINO_INT8_SUFFIX, TEXT_METADATA_KEY, ir_weights_path,
                                         sidecar_path)
from semobridge_runtime.metadata import Int8Check, ModelInfo, OpenVinoCheck, TextInfo

from semobridge.errors import InputError
from semobridge.files import atomic_output

from .tensorrt import Profile, engine_path_for

if TYPE_CHECKING:  # the writers import torch and the exporter's modules when they run, so --help does not
    from torch.export import ExportedProgram

    from semobridge.backbones import Backbone

    from .fused import FusedClassifier


@dataclass
class Job:
    """One export: the module, its metadata, where artifacts are staged, and what was written."""

    fused: FusedClassifier
    meta: ModelInfo
    stage: Path
    stem: str = "model"
    fixed_size: tuple[int, int] | None = None
    profile: Profile = field(default_factory=Profile)
    check_images: list[np.ndarray] = field(default_factory=list)
    fit_images: list[np.ndarray] = field(default_factory=list)  # the few-shot images the head was fitted on, if known
    log: Callable[[str], None] = print
    backbone: Backbone | None = None  # for the text tower
    written: dict[str, Path] = field(default_factory=dict)
    _program: ExportedProgram | None = None

    @property
    def program(self) -> ExportedProgram:
        """The torch.export trace with the class set as inputs, made once for the ONNX graph."""
        if self._program is None:
            from .onnx_graph import trace

            self._program = trace(self.fused, self.fixed_size)
        return self._program

    def path(self, name: str) -> Path:
        return self.stage / FORMATS[name].filename.format(stem=self.stem)

    def write_sidecar(self, artifact: Path, meta: ModelInfo) -> Path:
        path = sidecar_path(artifact)
        with atomic_output(path) as tmp:
            tmp.write_text(meta.to_json(indent=2), encoding="utf-8")
        self.written[f"{artifact.name} metadata"] = path
        return path


def export_onnx(job: Job) -> Path:
    """fp32 ONNX graph: uint8 pixels (or normalised floats) and optionally a class set, a temperature, a
    threshold and an MCM weight -> scores, label, embedding, features, bridged_features, probabilities, known,
    open_set_score; the class-set inputs default to the fitted classes, the decision's scalars to the fit's
    calibration."""
    from .metadata import metadata_props
    from .onnx_graph import save_model, to_onnx

    model = to_onnx(job.program, job.fused.output_names, defaults=job.fused.graph_defaults())
    path = save_model(model, job.path("onnx"), metadata_props(job.meta))
    job.write_sidecar(path, job.meta)
    return path


def export_onnx_fp16(job: Job) -> Path:
    """fp16 encoder; LayerNorm, softmax, reductions, preprocessing and the blend stay fp32."""
    from .metadata import with_precision
    from .precision import to_fp16
    from .reference import reference_scores, session

    path = to_fp16(job.written["onnx"], job.path("onnx-fp16"))
    job.write_sidecar(path, with_precision(job.meta, "fp16"))
    if job.check_images:
        ref, half = session(job.written["onnx"]), session(path)
        diff = max(
            float(np.abs(reference_scores(half, im[None])["scores"] - reference_scores(ref, im[None])["scores"]).max())
            for im in job.check_images
        )
        job.log(f"fp16: max |score difference| against fp32 = {diff:.2e} on {len(job.check_images)} images (ONNX Runtime CPU)")
    return path


def export_onnx_int8(job: Job) -> Path:
    """The CPU int8 artifact (see precision.to_int8), with its label agreement with the fp32 graph measured on the
    fit images (else the check images) and recorded in its metadata as "int8"."""
    from .metadata import with_precision
    from .precision import label_agreement, set_metadata, to_int8

    meta = with_precision(job.meta, "int8")
    path = to_int8(job.written["onnx"], job.path("onnx-int8"), meta)
    images, source = (job.fit_images, "few-shot images") if job.fit_images else (job.check_images, "check images")
    if images:
        agree = label_agreement(job.written["onnx"], path, images)
        meta = dataclasses.replace(meta, int8=Int8Check(round(agree, 4), len(images), source))
        set_metadata(path, meta)
        job.log(f"int8: label agreement with fp32 = {agree:.1%} on {len(images)} {source}")
        record_openvino(job, images, source)
    job.write_sidecar(path, meta)
    return path


def record_openvino(job: Job, images: list[np.ndarray], source: str) -> None:
    """With openvino installed: OpenVINO's labels and embeddings against the fp32 graph's on `images`, recorded in
    the fp32 model's metadata as "openvino" (Classifier.load's auto choice reads it; runtime backends/choice.py)."""
    from .precision import openvino_agreement, set_metadata

    measured = openvino_agreement(job.written["onnx"], images)
    if measured is None:
        return
    del measured["float_precision"]  # the same as its precision
    job.meta = dataclasses.replace(job.meta, openvino=OpenVinoCheck(**measured, images=len(images), measured_on=source))
    set_metadata(job.written["onnx"], job.meta)
    job.write_sidecar(job.written["onnx"], job.meta)
    job.log(f"openvino {measured['precision']}: label agreement with fp32 = {measured['label_agreement']:.1%}, "
            f"min embedding cosine {measured['min_cosine']:.5f} on {len(images)} {source}")


def export_openvino_int8(job: Job) -> Path:
    """OpenVINO static int8 IR of the graph past the preprocessing (export/openvino_int8.py), calibrated on the fit
    images (else the check images); the fp32 model's metadata records its files' SHA-256 (the runtime pairs the two
    by them) and its labels and embeddings against the fp32 graph's on the same images ("openvino_int8")."""
    from .openvino_int8 import write_int8_ir
    from .precision import openvino_agreement, set_metadata

    images, source = (job.fit_images, "few-shot images") if job.fit_images else (job.check_images, "check images")
    path = job.path("openvino-int8")
    pairing = write_int8_ir(job.written["onnx"], path, images)
    job.written["openvino-int8 weights"] = ir_weights_path(path)
    measured = openvino_agreement(job.written["onnx"], images, "int8", pairing)
    assert measured is not None  # write_int8_ir imported openvino
    record = dataclasses.replace(pairing, label_agreement=measured["label_agreement"], min_cosine=measured["min_cosine"],
                                 images=len(images), measured_on=source, float_precision=measured["float_precision"])
    job.meta = dataclasses.replace(job.meta, openvino_int8=record)
    set_metadata(job.written["onnx"], job.meta)
    job.write_sidecar(job.written["onnx"], job.meta)
    job.log(f"openvino int8 (NNCF, float operations {record.float_precision}): label agreement with fp32 = "
            f"{record.label_agreement:.1%}, min embedding cosine {record.min_cosine:.5f} on {len(images)} {source}")
    return path


def export_pt2(job: Job) -> Path:
    """torch.export program of the same fused module with the fitted classes as constants
    (torch.export.load(...).module()(image))."""
    from .onnx_graph import trace
    from .program import save_program

    path = save_program(trace(job.fused, job.fixed_size, head_as_data=False), job.path("pt2"), job.meta)
    job.write_sidecar(path, job.meta)
    return path


def export_text(job: Job) -> Path:
    """What class enrolment needs beside the graph: the text tower (token ids -> text embeddings n(e W)),
    the tokenizer's vocabulary (with its licence) and the fitted head (semobridge's model file: enrolment reads its
    fitted classes)."""
    from .metadata import text_metadata
    from .onnx_graph import save_model, to_onnx
    from .text import TEXT_OUTPUTS, VOCABULARY_LICENSE, TextTower, tokenizer_spec, vocabulary_file

    if job.backbone is None:
        raise ValueError("the text format needs the backbone (export(head, backbone, ...))")
    tower = TextTower(job.backbone)
    meta = text_metadata(job.backbone, tokenizer_spec(job.backbone), job.fused.embedding_dim)
    path = save_model(to_onnx(tower.trace(), TEXT_OUTPUTS), job.path("text"), {TEXT_METADATA_KEY: meta.to_json()})
    vocabulary = job.stage / meta.tokenizer.vocabulary
    shutil.copyfile(vocabulary_file(), vocabulary)
    licence = shutil.copyfile(VOCABULARY_LICENSE, vocabulary.with_name(f"{vocabulary.name}.LICENSE.txt"))
    job.written |= {"text vocabulary": vocabulary, "text vocabulary licence": Path(licence)}
    job.written["head"] = job.fused.head.save(job.stage / ENROLMENT_FILES["head"])
    return path


def export_text_int8(job: Job) -> Path:
    """Dynamic int8 quantisation of the text transformer's matrix products (CPU/ARM enrolment); the projection
    W stays fp32."""
    import onnx_ir

    from .onnx_graph import module_scope, save_model
    from .precision import quantize_matmuls
    from .reference import text_drift
    from .text import TOWER_SCOPE

    path = job.path("text-int8")
    graph = onnx_ir.load(str(job.written["text"])).graph
    projection = [n.name for n in graph if module_scope(n.metadata_props).split(".")[0] != TOWER_SCOPE]
    with atomic_output(path) as tmp:
        quantize_matmuls(job.written["text"], tmp, exclude=projection)
        model = onnx_ir.load(str(tmp))
        meta = TextInfo.from_json(model.metadata_props.get(TEXT_METADATA_KEY), str(job.written["text"]))
        save_model(model, tmp, {TEXT_METADATA_KEY: dataclasses.replace(meta, precision="int8").to_json()})
    job.log(f"int8 text tower: min cosine similarity to fp32 = {text_drift(job.written['text'], path):.5f} on the example prompts")
    return path


def export_engine(job: Job) -> Path:
    """TensorRT fp16 engine built here from the fp32 ONNX graph (only valid on this GPU and TensorRT)."""
    from .tensorrt import build_engine

    path = build_engine(job.written["onnx"], job.path("engine"), job.profile, fp16=True, log=job.log)
    job.written[f"{path.name} metadata"] = sidecar_path(path)
    return path


def export_triton(job: Job) -> Path:
    """Triton model repository for the official container: the ONNX Runtime model and, with --engine, a TensorRT
    plan with the fitted classes built in (Triton batches every input, and the class set is not per image)."""
    from .tensorrt import build_engine
    from .triton import write_repository

    plan = None
    if "engine" in job.written:
        plan = build_engine(job.written["onnx"], job.stage / ".triton-plan" / "model.plan", job.profile, fp16=True,
                            log=job.log, class_inputs=False)
    try:
        return write_repository(job.path("triton"), job.written["onnx"], job.meta, job.profile, plan)
    finally:
        if plan is not None:
            shutil.rmtree(plan.parent, ignore_errors=True)


@dataclass(frozen=True)
class Format:
    """One row of the format table."""

    name: str
    filename: str  # with {stem}
    runs_on: str
    options: tuple[str, ...]  # command-line options that only this format (and its kin) uses
    run: str  # how to run the artifact, with {path}
    write: Callable[[Job], Path]
    needs: str | None = None  # the format this one is derived from


FORMATS: dict[str, Format] = {
    f.name: f
    for f in (
        Format("onnx", "{stem}.onnx", "CPU, GPU (ONNX Runtime, any ONNX runtime)", ("--input", "--fixed-size"),
               "semobridge-run {path} photo.jpg   (or onnxruntime: session.run(None, {{'image': uint8 NxHxWx3}}))", export_onnx),
        Format("text", ENROLMENT_FILES["text_model"], "class enrolment (add_class): + vocabulary, head.safetensors", (),
               "semobridge-classes add {onnx} shop.classes NAME IMAGE...   "
               "(enrol a class; then semobridge-run {onnx} --classes shop.classes IMAGE)", export_text),
        Format("onnx-fp16", "{stem}_fp16.onnx", "GPU (CUDA/TensorRT EPs, DirectML)", ("--half",),
               "semobridge-run {path} photo.jpg   (meant for GPUs: CUDA/TensorRT execution providers)", export_onnx_fp16, "onnx"),
        Format("onnx-int8", f"{{stem}}{INT8_SUFFIX}.onnx", "CPU, ARM (ONNX Runtime)", ("--int8-cpu",),
               "semobridge-run {path} photo.jpg   (CPU/ARM)", export_onnx_int8, "onnx"),
        Format("openvino-int8", f"{{stem}}{OPENVINO_INT8_SUFFIX}.xml", "CPU (OpenVINO, opt-in; needs nncf to export)",
               ("--int8-cpu",), "semobridge-run {onnx} photo.jpg --openvino-precision int8   "
               "(+ .bin; Classifier.load('{onnx}', backend='openvino', openvino_precision='int8'))",
               export_openvino_int8, "onnx"),
        Format("text-int8", f"text{INT8_SUFFIX}.onnx", "class enrolment on CPU, ARM", ("--int8-cpu",),
               "Classifier.load('{onnx}', text_model='{path}')   (enrol with the int8 text tower)", export_text_int8, "text"),
        Format("pt2", "{stem}.pt2", "PyTorch (torch.export), on the device it was exported on", ("--input", "--fixed-size"),
               "torch.export.load('{path}').module()(torch.from_numpy(uint8 NxHxWx3))", export_pt2),
        Format("engine", engine_path_for(Path("{stem}.onnx")).name, "NVIDIA GPU (TensorRT 10, this GPU only)",
               ("--engine", "--batch", "--sizes", "--class-counts"),
               "semobridge-run {path} photo.jpg --backend tensorrt   (this GPU and TensorRT version only)", export_engine, "onnx"),
        Format("triton", "triton", "Triton Inference Server container (ONNX Runtime backend; TensorRT plan with --engine)",
               ("--batch", "--sizes"),
               "docker run -p 8000-8002:8000-8002 -v {path}:/models nvcr.io/nvidia/tritonserver:<yy.mm>-py3 "
               "tritonserver --model-repository=/models   (unverified; or semobridge-serve model.onnx)", export_triton, "onnx"),
    )
}
DEFAULT_FORMATS = ("onnx", "text")
FLAG_FORMATS = {"half": ("onnx-fp16",), "int8_cpu": ("onnx-int8", "openvino-int8", "text-int8"), "engine": ("engine",)}


def format_table() -> str:
    """The formats as a plain-text table (shown in --help)."""
    rows = [("format", "file", "runs on", "options")] + [
        (f.name, f.filename.format(stem="model"), f.runs_on,
         ", ".join(f.options) + (" (default)" if f.name in DEFAULT_FORMATS else "")) for f in FORMATS.values()
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


def format_names(formats: str | list[str] | tuple[str, ...]) -> list[str]:
    """The format names given ("onnx,pt2" or a list), as given (unchecked)."""
    return [f.strip() for f in (formats.split(",") if isinstance(formats, str) else formats) if f.strip()]


def resolve_formats(formats: str | list[str] | tuple[str, ...], **flags: bool) -> list[str]:
    """Requested formats plus those the flags ask for, in table order; the format a derived one
    needs (the fp32 ONNX graph, the text tower) is added. Unknown names are refused."""
    names = format_names(formats)
    unknown = [n for n in names if n not in FORMATS]
    if unknown:
        raise InputError(f"unknown format(s) {', '.join(unknown)}", hint=f"choose from {', '.join(FORMATS)}")
    names += [name for flag, on in flags.items() if on for name in FLAG_FORMATS[flag]]
    names += [FORMATS[n].needs for n in names if FORMATS[n].needs]
    if not names:
        raise InputError("no format requested", hint=f"choose from {', '.join(FORMATS)}")
    return [n for n in FORMATS if n in names]


def unused_options(names: list[str], given: list[str]) -> list[str]:
    """Options in `given` that none of the formats `names` uses (they would be silently ignored)."""
    used = {option for n in names for option in FORMATS[n].options}
    known = {option for f in FORMATS.values() for option in f.options}
    return [option for option in given if option in known and option not in used]

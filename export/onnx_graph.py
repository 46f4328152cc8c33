"""The fused module traced once with torch.export, written as one ONNX graph with its metadata."""
from __future__ import annotations

import json
import os
import re
import warnings
from pathlib import Path
from typing import Mapping

import onnx
import onnx_ir
import torch
from semobridge_runtime.contract import IMAGE_INPUT, TEXT_TOKENS
from torch.export import Dim, ExportedProgram

from semobridge.files import atomic_output

from .fused import HEAD_INPUTS, OUTPUT_NAMES, FusedClassifier
from .rewrites import fuse_slices, sink_input_casts

OPSET = 18  # LayerNormalization as one op
PROTOBUF_LIMIT = 2**31 - 2**26  # beyond this (2 GB less a margin) the weights go to external data
BATCH_MAX = 4096
SIDE_MAX = 16384
CLASS_MAX = 1 << 20  # the class-count range of the head inputs
ENCODER_SCOPE = "encoder"  # the FusedClassifier attribute holding the image encoder
SCOPES_KEY = "pkg.torch.onnx.name_scopes"  # per-node metadata written by the dynamo exporter
#: names of the dynamic dims per graph input: uint8 image [N, H, W, 3] (float input has only N),
#: head inputs [C, ...], the text tower's token ids [M, context]
INPUT_DIM_NAMES = {IMAGE_INPUT: {0: "N", 1: "H", 2: "W"}, **{name: {0: "C"} for name in HEAD_INPUTS}, TEXT_TOKENS: {0: "M"}}


def dynamic_shapes(fused: FusedClassifier, fixed_size: tuple[int, int] | None, head_as_data: bool = True) -> dict[str, dict[int, Dim]]:
    """Dynamic batch always; dynamic height and width for uint8 input unless `fixed_size`;
    a dynamic class count C for the head inputs; the decision's scalars static."""
    dims = {0: Dim("N", min=1, max=BATCH_MAX)}
    if fused.input_kind == "uint8" and fixed_size is None:
        dims |= {1: Dim("H", min=1, max=SIDE_MAX), 2: Dim("W", min=1, max=SIDE_MAX)}
    classes = Dim("C", min=1, max=CLASS_MAX)
    return {"image": dims} | ({name: {0: classes} for name in fused.fitted_classes()}
                              | {name: None for name in fused.decision_defaults()} if head_as_data else {})


def trace(fused: FusedClassifier, fixed_size: tuple[int, int] | None = None, head_as_data: bool = True) -> ExportedProgram:
    """torch.export program of the fused classifier: image (and, with `head_as_data`, the
    class set and the decision's temperature and threshold as inputs) -> outputs; without `head_as_data`
    the fitted classes and the calibration are constants."""
    example = fused.example_input(batch=2, size=fixed_size)
    classes = fused.graph_defaults() if head_as_data else {}
    with torch.no_grad():
        return torch.export.export(
            fused, (example,), kwargs=classes, dynamic_shapes=dynamic_shapes(fused, fixed_size, head_as_data), strict=False
        )


def module_scope(props: Mapping[str, str]) -> str:
    """Top-level FusedClassifier attribute a node came from ("preprocess", "encoder", "head"; "" if unknown)."""
    scopes = props.get(SCOPES_KEY)
    if not scopes:
        return ""
    names = json.loads(scopes.replace("'", '"'))
    return names[1] if len(names) > 1 else ""


def to_onnx(
    program: ExportedProgram, output_names: tuple[str, ...] = OUTPUT_NAMES, defaults: Mapping[str, torch.Tensor] | None = None
) -> onnx_ir.Model:
    """The traced program as an ONNX model (dynamo exporter, OPSET), outputs `output_names`.

    Inputs: `image`, then the head inputs if the program takes them; `defaults` (name -> tensor)
    become initializers of those inputs, so a caller who feeds only `image` gets these values.
    The image's Cast to float comes after the resize's window cuts (rewrites.sink_input_casts; TensorRT builds
    from the same graph with the Cast first: tensorrt.tensorrt_graph).
    """
    input_names = [spec.arg.name for spec in program.graph_signature.input_specs if spec.kind.name == "USER_INPUT"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's own chatter, not about this model
        onnx_program = torch.onnx.export(
            program, (), None, dynamo=True, opset_version=OPSET, input_names=input_names,
            output_names=list(output_names), verbose=False, optimize=True,
        )
    model = onnx_program.model
    fuse_slices(model)  # the resize's window cuts: one copy each instead of two
    sink_input_casts(model)  # the cuts move uint8 pixels; only the windows are converted
    _name_input_dims(model, INPUT_DIM_NAMES)
    for value in model.graph.inputs:
        if defaults and value.name in defaults:
            value.const_value = onnx_ir.tensor(defaults[value.name].detach().float().cpu().contiguous().numpy(), name=value.name)
            model.graph.register_initializer(value)
    for node in model.graph:  # keep the module scopes (used by precision.py); drop stack traces and FX dumps
        for key in [k for k in node.metadata_props if k != SCOPES_KEY]:
            del node.metadata_props[key]
    return model


def _name_input_dims(model: onnx_ir.Model, names: Mapping[str, Mapping[int, str]]) -> None:
    """Rename torch.export's symbols (s40, ...) after the input dims they stand for (N, H, W, C), graph-wide."""
    symbols = {
        d.value: names[value.name][i]
        for value in model.graph.inputs
        for i, d in enumerate(value.shape)
        if isinstance(d, onnx_ir.SymbolicDim) and i in names.get(value.name, {})
    }
    if not symbols:
        return
    pattern = re.compile(r"\b(" + "|".join(map(re.escape, symbols)) + r")\b")
    values = [*model.graph.inputs, *model.graph.outputs, *(v for node in model.graph for v in node.outputs)]
    for value in values:
        if value.shape is not None and any(isinstance(d, onnx_ir.SymbolicDim) for d in value.shape):
            value.shape = onnx_ir.Shape([
                onnx_ir.SymbolicDim(pattern.sub(lambda m: symbols[m.group(1)], d.value))
                if isinstance(d, onnx_ir.SymbolicDim) and d.value else d
                for d in value.shape
            ])


def save_model(model: onnx_ir.Model, path: str | os.PathLike, props: Mapping[str, str] | None = None) -> Path:
    """Write atomically (weights as `<name>.data` beside it past 2 GB) and run the full checker."""
    model.metadata_props.update(props or {})
    weight_bytes = sum(v.const_value.nbytes for v in model.graph.initializers.values() if v.const_value is not None)
    path = Path(path)
    external = f"{path.name}.data" if weight_bytes > PROTOBUF_LIMIT else None
    with atomic_output(path) as tmp:
        onnx_ir.save(model, tmp, external_data=external)
        onnx.checker.check_model(str(tmp), full_check=True)
    return path


def load_model(path: str | os.PathLike) -> onnx_ir.Model:
    return onnx_ir.load(str(path))

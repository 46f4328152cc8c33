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
from torch.export import Dim, ExportedProgram

from semobridge.files import atomic_output

from .fused import OUTPUT_NAMES, FusedClassifier
from .rewrites import fuse_slices

OPSET = 18  # LayerNormalization as one op
PROTOBUF_LIMIT = 2**31 - 2**26  # beyond this (2 GB less a margin) the weights go to external data
BATCH_MAX = 4096
SIDE_MAX = 16384
ENCODER_SCOPE = "encoder"  # the FusedClassifier attribute holding the image encoder
SCOPES_KEY = "pkg.torch.onnx.name_scopes"  # per-node metadata written by the dynamo exporter
INPUT_DIM_NAMES = {0: "N", 1: "H", 2: "W"}  # for the uint8 [N, H, W, 3] input; float input has only N


def dynamic_shapes(fused: FusedClassifier, fixed_size: tuple[int, int] | None) -> dict[str, dict[int, Dim]]:
    """Dynamic batch always; dynamic height and width for uint8 input unless `fixed_size`."""
    dims = {0: Dim("N", min=1, max=BATCH_MAX)}
    if fused.input_kind == "uint8" and fixed_size is None:
        dims |= {1: Dim("H", min=1, max=SIDE_MAX), 2: Dim("W", min=1, max=SIDE_MAX)}
    return {"image": dims}


def trace(fused: FusedClassifier, fixed_size: tuple[int, int] | None = None) -> ExportedProgram:
    """torch.export program of the fused classifier (shared by the ONNX and .pt2 formats)."""
    example = fused.example_input(batch=2, size=fixed_size)
    with torch.no_grad():
        return torch.export.export(fused, (example,), dynamic_shapes=dynamic_shapes(fused, fixed_size), strict=False)


def module_scope(props: Mapping[str, str]) -> str:
    """Top-level FusedClassifier attribute a node came from ("preprocess", "encoder", "head"; "" if unknown)."""
    scopes = props.get(SCOPES_KEY)
    if not scopes:
        return ""
    names = json.loads(scopes.replace("'", '"'))
    return names[1] if len(names) > 1 else ""


def to_onnx(program: ExportedProgram, output_names: tuple[str, ...] = OUTPUT_NAMES) -> onnx_ir.Model:
    """The traced program as an ONNX model (dynamo exporter, OPSET), input `image`, outputs `output_names`."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's own chatter, not about this model
        onnx_program = torch.onnx.export(
            program, (), None, dynamo=True, opset_version=OPSET, input_names=["image"],
            output_names=list(output_names), verbose=False, optimize=True,
        )
    model = onnx_program.model
    fuse_slices(model)  # the resize's window cuts: one copy each instead of two
    _name_input_dims(model, INPUT_DIM_NAMES)
    for node in model.graph:  # keep the module scopes (used by precision.py); drop stack traces and FX dumps
        for key in [k for k in node.metadata_props if k != SCOPES_KEY]:
            del node.metadata_props[key]
    return model


def _name_input_dims(model: onnx_ir.Model, names: Mapping[int, str]) -> None:
    """Rename torch.export's symbols (s40, ...) after the input dims they stand for (N, H, W), graph-wide."""
    image = model.graph.inputs[0]
    symbols = {d.value: names[i] for i, d in enumerate(image.shape) if isinstance(d, onnx_ir.SymbolicDim) and i in names}
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

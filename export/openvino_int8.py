"""OpenVINO static int8: NNCF's post-training quantisation of the fused graph past the preprocessing cut, saved as an
OpenVINO IR beside model.onnx (the runtime's OpenVINO backend, precision "int8", runs it without NNCF).

The graph is cut as the runtime's backend cuts it (semobridge_runtime/backends/openvino.py: the preprocessing stays f32
and apart; the class-set and decision inputs stay inputs). NNCF calibrates the activations' ranges on the fit images
(else the check images) as that f32 preprocessing computes them, with the fitted class set fed; the image encoder is
quantised (ModelType.TRANSFORMER), the head and the decision are left in float (ignored scope).
"""
from __future__ import annotations

import importlib.util
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import onnx_ir as ir
from semobridge_runtime.contract import ir_weights_path
from semobridge_runtime.metadata import OpenVinoInt8

from semobridge.files import file_sha256
from semobridge.logs import quiet_logger

from .precision import encoder_nodes

INSTALL = "pip install 'semobridge[nncf]'"
TELEMETRY = "openvino_telemetry"  # NNCF sends usage events through it when it can import it (nncf/telemetry/wrapper.py)


def missing() -> str | None:
    """Why the static int8 IR cannot be written here (openvino or nncf absent), or None."""
    absent = [name for name in ("openvino", "nncf") if importlib.util.find_spec(name) is None]
    return f"{' and '.join(absent)} {'is' if len(absent) == 1 else 'are'} not installed ({INSTALL})" if absent else None


def import_nncf() -> Any:
    """nncf without its telemetry: with openvino_telemetry unimportable while nncf initialises, NNCF uses its stub
    (it would otherwise write ~/intel/openvino_ga_cid and send events). OpenVINO is imported first by the runtime's
    import_openvino (no converter, no telemetry)."""
    from semobridge_runtime.backends.openvino import import_openvino

    import_openvino()
    blocked = TELEMETRY not in sys.modules
    if blocked:
        sys.modules[TELEMETRY] = None  # type: ignore[assignment]  # None makes its import raise ImportError
    try:
        import nncf

        return nncf
    finally:
        if blocked and sys.modules.get(TELEMETRY, False) is None:
            del sys.modules[TELEMETRY]


def outside_encoder(path: Path) -> list[str]:
    """Names of the graph's nodes that are not the image encoder's (preprocessing, head), and of their outputs (OpenVINO
    names a node whose output is a graph output after that output)."""
    graph = ir.load(str(path)).graph
    encoder = {n.name for n in encoder_nodes(graph)}
    outside = [n for n in graph if n.name not in encoder]
    return sorted({n.name for n in outside} | {o.name for n in outside for o in n.outputs})


def write_int8_ir(src: Path, dst: Path, images: Sequence[np.ndarray]) -> OpenVinoInt8:
    """Quantise the fp32 graph `src` past its preprocessing with NNCF, calibrated on `images` (uint8 HxWx3, or float
    [3, S, S] for a float-input graph), and save it as the IR `dst` (.xml, its weights beside as .bin); return the
    pairing the model's metadata records (the files' SHA-256)."""
    from semobridge_runtime.backends.openvino import PIXELS, OpenVINOBackend, import_openvino, read_parts

    if not images:
        raise ValueError("no images to calibrate the int8 IR on")
    nncf, ov = import_nncf(), import_openvino()
    f32 = OpenVINOBackend(src, "f32", contract=False)  # the runtime checks the contract when it loads the model
    first = PIXELS if f32.info.input_kind == "uint8" else f32.info.input_name
    pixels = [f32.preprocess(image[None]) if first == PIXELS else image[None] for image in images]
    items = [{first: p, **f32.fitted_inputs} for p in pixels]
    rest = read_parts(ov, ov.Core(), src).rest.clone()  # a clone: the cut shares nodes with the preprocessing
    ignored = nncf.IgnoredScope(names=outside_encoder(src), validate=False)
    # NNCF's INFO lines name every operation it leaves in float; torch's cpp_extension, which it imports while it
    # quantises, warns that this machine has no CUDA
    with quiet_logger("nncf"), quiet_logger("torch.utils.cpp_extension"):
        quantized = nncf.quantize(rest, nncf.Dataset(items), model_type=nncf.ModelType.TRANSFORMER,
                                  subset_size=len(items), ignored_scope=ignored)
    weights = ir_weights_path(dst)
    with tempfile.TemporaryDirectory(prefix=f".{dst.stem}.", dir=dst.parent) as tmp:  # nothing half-written is left
        ov.save_model(quantized, str(Path(tmp) / dst.name), compress_to_fp16=False)
        for path in (weights, dst):  # the weights first: an IR is never beside weights of another
            os.replace(Path(tmp) / path.name, path)
    return OpenVinoInt8(xml_sha256=file_sha256(dst), bin_sha256=file_sha256(weights))

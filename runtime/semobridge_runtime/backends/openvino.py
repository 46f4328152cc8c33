"""OpenVINO backend for `.onnx` models (CPU): the encoder at OpenVINO's precision (bf16 where the CPU computes
bf16, its matrix engines included), the preprocessing always in f32, the class set as real inputs.

Taken as it is, the fused graph goes wrong three ways in OpenVINO (2026.4), each measured: its bf16 runs the
in-graph resize too (up to 12 grey levels from PIL), it folds the class-set inputs into constants (enrolled
classes would be ignored), and it computes the resize's integer indices in 32 bits (a 16x16384 image is wrong on
99 % of its pixels). So the graph is split at the encoder's input into two compiled models, the preprocessing
compiled in f32; the class-set constants become inputs again (their values stay the defaults); and images whose
resize indices would pass 2**31 are refused before they run.

Static int8 (precision "int8", opt-in): the part past the cut is the IR that semobridge-export --int8-cpu wrote beside
the model (`model_openvino_int8.xml` + `.bin`: NNCF's post-training quantisation, calibrated on the fit images run
through this f32 preprocessing). It is read with OpenVINO alone (no NNCF), and only when its two files have the
SHA-256 that the model's metadata records ("openvino_int8"): an IR of another export, or a truncated one, is refused.
`auto` (backends/choice.py) never picks it: it stays opt-in until measured on a CPU with AMX int8.
"""

from __future__ import annotations

import hashlib
import queue
import sys
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np

from .. import files
from ..contract import DECISION_INPUTS, METADATA_KEY, Tensor, check_graph, ir_weights_path, openvino_int8_path
from ..errors import BackendError, InputError, ModelError
from ..limits import check_threads
from ..metadata import ModelInfo, OpenVinoInt8, parse_metadata
from ..precision import INT8_MIN_AGREEMENT

#: "auto": OpenVINO's own choice for this CPU (bf16 where it computes bf16); "int8": the export's static int8 IR
PRECISIONS = ("auto", "f32", "bf16", "f16", "int8")
INDEX_LIMIT = 2**31  # OpenVINO's CPU plugin computes int64 graph arithmetic in int32
PIXELS = "pixels"  # the encoder's input between the two compiled models
CONVERTER = "openvino.tools.ovc"  # imported by `import openvino`; sends telemetry (import_openvino)


def import_openvino() -> Any:
    """The openvino module without its model converter, or a BackendError that says how to install it.

    `import openvino` also imports its converter, openvino.tools.ovc, which (through the openvino-telemetry package
    that openvino installs) writes ~/intel/openvino_ga_cid and sends a Google Analytics event at import unless a
    consent file or CI says no (measured with openvino 2026.4.1). The runtime needs only the Core, so the converter's
    import is refused while openvino initialises; an app that imported openvino before us has already sent it."""
    blocked = CONVERTER not in sys.modules
    if blocked:
        sys.modules[CONVERTER] = None  # type: ignore[assignment]  # None makes its import raise ImportError
    try:
        import openvino

        return openvino
    except ImportError as exc:
        raise BackendError(f"the OpenVINO backend needs openvino ({exc})",
                           hint="pip install 'semobridge-runtime[openvino]', or use backend='onnxruntime'") from None
    finally:
        if blocked and sys.modules.get(CONVERTER, False) is None:
            del sys.modules[CONVERTER]  # the app may still import the converter itself


def resize_index_bound(height: int, width: int, size: int) -> int:
    """The largest integer the in-graph resize computes for an image (export/preprocess.py: output centre
    (2j + 1) * in_length plus the filter's reach, along the longer side resized to size * long // short)."""
    long, short = max(height, width), min(height, width)
    out = size * long // max(short, 1)
    return (2 * out + 1) * long + out + 4 * max(long, out)


def _tensor(port: Any, name: str) -> Tensor:
    shape = tuple(d.get_length() if d.is_static else None for d in port.get_partial_shape())
    return Tensor(name, port.get_element_type().to_dtype().name, shape)


def _metadata(model: Any, source: str) -> ModelInfo:
    try:
        text = model.get_rt_info(["framework", METADATA_KEY]).astype(str)
    except (RuntimeError, KeyError, IndexError):
        text = None
    return parse_metadata(text, source)


def _class_inputs(ov: Any, model: Any, names: Sequence[str]) -> dict[str, np.ndarray]:
    """Replace the constants OpenVINO folded the class-set inputs into by parameters of the same names (the class
    count dynamic), and those of the open-set decision's scalars where the graph has them (contract.DECISION_INPUTS);
    return their values, the fitted classes and calibration (in place)."""
    defaults, params = {}, []
    for op in model.get_ordered_ops():
        name = op.get_friendly_name()
        if op.get_type_name() == "Constant" and name in (*names, *DECISION_INPUTS) and name not in defaults:
            defaults[name] = np.asarray(op.get_data(), np.float32, order="C")
            dims = op.get_output_shape(0)
            shape = ov.PartialShape([-1, *dims[1:]] if name in names else list(dims))
            param = ov.opset13.parameter(shape, op.get_output_element_type(0), name=name)
            param.output(0).set_names({name})
            op.output(0).replace(param.output(0))
            params.append(param)
    if sorted(set(defaults) - set(DECISION_INPUTS)) != sorted(names):
        raise ModelError(f"OpenVINO read the class-set inputs {sorted(defaults)}, the metadata names {sorted(names)}",
                         hint="re-export the model with semobridge-export, or use backend='onnxruntime'")
    model.add_parameters(params)
    return defaults


def _upstream(port: Any) -> set[str]:
    """Names of the nodes `port` is computed from (its own node included)."""
    seen: set[str] = set()
    stack = [port.get_node()]
    while stack:
        node = stack.pop()
        if node.get_friendly_name() not in seen:
            seen.add(node.get_friendly_name())
            stack += [i.get_source_output().get_node() for i in node.inputs()]
    return seen


def _batch_from(ov: Any, image: Any, pixels: Any, preprocessing: set[str]) -> None:
    """Past the cut, the graph reads the image's shape for its batch size only (a Slice [0:1] of it): read it from
    `pixels` instead, so that the rest no longer depends on the image (in place)."""
    shape = None
    for use in image.output(0).get_target_inputs():
        if use.get_node().get_type_name() != "ShapeOf":
            continue
        for target in list(use.get_node().output(0).get_target_inputs()):
            node = target.get_node()
            if node.get_friendly_name() in preprocessing:
                continue
            bounds = [node.input_value(i).get_node() for i in (1, 2)] if node.get_type_name() == "Slice" else []
            if [b.get_type_name() for b in bounds] != ["Constant"] * 2 or [int(b.get_data()[0]) for b in bounds] != [0, 1]:
                raise ModelError("OpenVINO: the graph past the encoder's input reads the image's shape for more than "
                                 "its batch size", hint="use backend='onnxruntime'")
            shape = shape or ov.opset13.shape_of(pixels, "i64")
            target.replace_source_output(shape.output(0))


def _split(ov: Any, model: Any, info: ModelInfo) -> tuple[Any, Any]:
    """(preprocessing, rest): the graph cut at the encoder's input, the first convolution's (ViT patch embedding,
    ResNet stem), whose input must be [N, 3, S, S] float."""
    conv = next((op for op in model.get_ordered_ops() if op.get_type_name() == "Convolution"), None)
    cut = conv.input_value(0) if conv is not None else None
    S = info.image_size
    if cut is None or [d.get_length() if d.is_static else None for d in cut.get_partial_shape()] != [None, 3, S, S]:
        raise ModelError("OpenVINO: cannot find the encoder's input in this graph (no first convolution on "
                         f"[N, 3, {S}, {S}] float)", hint="use backend='onnxruntime'")
    image = model.input(info.input_name).get_node()
    result = ov.opset13.result(cut)
    pre = ov.Model([result], [image], "semobridge_preprocess")
    pixels = ov.opset13.parameter(ov.PartialShape([-1, 3, S, S]), ov.Type.f32, name=PIXELS)
    pixels.output(0).set_names({PIXELS})
    for target in list(cut.get_target_inputs()):
        if target.get_node().get_friendly_name() != result.get_friendly_name():
            target.replace_source_output(pixels.output(0))
    _batch_from(ov, image, pixels, _upstream(cut))
    rest = ov.Model(model.get_results(), [pixels, *(p for p in model.get_parameters() if p.get_friendly_name() != image.get_friendly_name())], "semobridge")
    return pre, rest


@dataclass
class Parts:
    """A fused graph as the backend runs it: its metadata, the class-set and decision inputs with their fitted values,
    the preprocessing (uint8 images -> PIXELS; None for a float-input model), and the rest (PIXELS or the float input,
    the class-set and decision inputs -> the graph's outputs)."""

    info: ModelInfo
    defaults: dict[str, np.ndarray]
    pre: Any | None
    rest: Any


def read_parts(ov: Any, core: Any, path: Path) -> Parts:
    """`path` (an fp32 fused .onnx) read and cut for the backend (the module's docstring)."""
    try:
        model = core.read_model(str(path))
    except Exception as exc:  # OpenVINO raises RuntimeError and its own types for unreadable files
        raise ModelError(f"OpenVINO cannot read {path} ({str(exc).splitlines()[0]}); the file is truncated, "
                         "corrupt or not ONNX: re-export or re-download it") from exc
    info = _metadata(model, str(path))
    if info.precision != "fp32":
        raise ModelError(f"{path} is the {info.precision} artifact; OpenVINO takes the fp32 model.onnx "
                         "and runs it at its own precision", hint="load model.onnx with backend='openvino'")
    defaults = _class_inputs(ov, model, info.head_input_names)
    pre, rest = _split(ov, model, info) if info.input_kind == "uint8" else (None, model)
    return Parts(info, defaults, pre, rest)


def input_names(model: Any) -> set[str]:
    """The names of an OpenVINO model's parameters."""
    return {p.get_friendly_name() for p in model.get_parameters()}


def read_int8(ov: Any, core: Any, path: Path, parts: Parts, pairing: OpenVinoInt8 | None = None) -> Any:
    """The static int8 IR beside `path` in place of `parts.rest`, if its files have the SHA-256 that `pairing` records
    (default: the model's metadata, "openvino_int8"); read from the bytes that were checked."""
    pairing = pairing or parts.info.openvino_int8
    xml_path = openvino_int8_path(path)
    bin_path = ir_weights_path(xml_path)
    again = ("re-export the model with semobridge-export --int8-cpu, openvino and nncf installed (pip install "
             "'semobridge[nncf]'), or load it with openvino_precision='auto'")
    if pairing is None:
        raise ModelError(f"{path} has no OpenVINO int8 IR: its metadata records none ('openvino_int8'; exported "
                         "without nncf, or before static int8 existed)", hint=again)
    try:  # bounded, regular files only (files.py)
        xml = files.read_bytes(xml_path, "OpenVINO int8 IR", files.GRAPH_BYTES, ModelError)
        weights = files.read_bytes(bin_path, "OpenVINO int8 IR's weights", files.GRAPH_BYTES, ModelError)
    except ModelError as exc:
        raise ModelError(str(exc), hint=again) from None
    if (hashlib.sha256(xml).hexdigest(), hashlib.sha256(weights).hexdigest()) != (pairing.xml_sha256, pairing.bin_sha256):
        raise ModelError(f"{xml_path.name} and {bin_path.name} are not the int8 IR exported with {path}: their SHA-256 "
                         "differs from the one the model's metadata records (the IR of another export, or truncated "
                         "or changed files)", hint=again)
    try:
        model = core.read_model(xml, ov.Tensor(np.frombuffer(weights, np.uint8)))
    except Exception as exc:
        raise ModelError(f"OpenVINO cannot read {xml_path} ({str(exc).splitlines()[0]})", hint=again) from exc
    if input_names(model) != input_names(parts.rest):
        raise ModelError(f"{xml_path.name} takes the inputs {sorted(input_names(model))}, the model's graph past its "
                         f"preprocessing {sorted(input_names(parts.rest))}", hint=again)
    agreement = pairing.label_agreement
    if agreement is not None and agreement < INT8_MIN_AGREEMENT:  # asked for: run it, but say what the export measured
        warnings.warn(f"{xml_path.name} kept the fp32 graph's label on only {agreement:.1%} of the {pairing.images} "
                      f"{pairing.measured_on} at export (ONNX Runtime's int8 artifact is used only from "
                      f"{INT8_MIN_AGREEMENT:.0%}); check it on your images, or load with openvino_precision='auto'",
                      stacklevel=4)
    return model


class OpenVINOBackend:
    """Runs a fused semobridge ONNX graph with OpenVINO on the CPU: two compiled models (preprocessing in f32, the
    rest at `precision`), a pool of infer requests so that several threads may run at once.

    precision: "auto" (OpenVINO's choice: bf16 on CPUs that compute bf16), "f32", "bf16", "f16", or "int8": the
        export's static int8 IR for the rest (its float operations at OpenVINO's choice; the module's docstring).
    cache_dir: OpenVINO's model cache (compiled blobs, later loads start faster); None writes nothing.
    contract: refuse a graph whose outputs are not the fused classifier's (False: e.g. the benchmarks' bare encoder).
    int8_pairing: with "int8", the IR's SHA-256 to check instead of the metadata's (the exporter measures the IR
        before the model's metadata records it).
    """

    name = "openvino"
    providers = ("OpenVINO CPU",)
    needs_classes = False  # the fitted classes are fed when no class set is given
    max_batch = None
    fixed_hw = None

    def __init__(self, path: Path, precision: str = "auto", threads: int | None = None,
                 cache_dir: str | Path | None = None, contract: bool = True,
                 int8_pairing: OpenVinoInt8 | None = None) -> None:
        if precision not in PRECISIONS:
            raise InputError(f"unknown OpenVINO precision {precision!r}", hint=f"use one of {', '.join(PRECISIONS)}")
        ov = import_openvino()
        core = ov.Core()
        parts = read_parts(ov, core, path)
        self._path = path
        self.info = info = parts.info
        self.head_inputs = info.head_input_names
        self._defaults = parts.defaults
        self._image_input = parts.pre is not None
        pre, rest = parts.pre, read_int8(ov, core, path, parts, int8_pairing) if precision == "int8" else parts.rest
        config: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY"}
        if threads:
            config["INFERENCE_NUM_THREADS"] = check_threads(threads, "threads")
        if cache_dir is not None:
            config["CACHE_DIR"] = str(cache_dir)
        try:
            self._pre = core.compile_model(pre, "CPU", {**config, "INFERENCE_PRECISION_HINT": "f32"}) if pre else None
            main = {**config, **({} if precision in ("auto", "int8") else {"INFERENCE_PRECISION_HINT": precision})}
            self._main = core.compile_model(rest, "CPU", main)
        except Exception as exc:
            raise BackendError(f"OpenVINO failed compiling {path}: {str(exc).splitlines()[0]}",
                               hint="use backend='onnxruntime'") from exc
        #: what the float operations past the preprocessing run at ("bf16", "f32"); `precision`: what runs ("int8")
        self.float_precision = self._main.get_property("INFERENCE_PRECISION_HINT").to_string()
        self.precision = "int8" if precision == "int8" else self.float_precision
        first = (self._pre or self._main).input(0)
        self.outputs = tuple(o.get_any_name() for o in self._main.outputs)
        if contract:
            check_graph(info, [_tensor(first, info.input_name)], [_tensor(o, o.get_any_name()) for o in self._main.outputs],
                        str(path))
        self._requests: queue.SimpleQueue = queue.SimpleQueue()

    @property
    def fitted_inputs(self) -> dict[str, np.ndarray]:
        """The class-set and decision inputs past the preprocessing with their fitted values (what `run` feeds when
        no class set is given)."""
        return {name: value.copy() for name, value in self._defaults.items()}

    @contextmanager
    def _request(self) -> Iterator[tuple[Any, Any]]:
        """A (preprocessing, rest) pair of infer requests no other thread uses meanwhile."""
        try:
            pair = self._requests.get_nowait()
        except queue.Empty:
            pair = (self._pre.create_infer_request() if self._pre else None, self._main.create_infer_request())
        try:
            yield pair
        finally:
            self._requests.put(pair)

    def check_size(self, height: int, width: int) -> None:
        """Refuse an image whose in-graph resize indices OpenVINO's 32-bit arithmetic cannot hold."""
        if self._image_input and resize_index_bound(height, width, self.info.image_size) >= INDEX_LIMIT:
            raise InputError(f"a {height}x{width} image is too elongated for the OpenVINO backend: its resize "
                             "indices pass 2**31, which OpenVINO computes in 32 bits",
                             hint="crop it nearer to square, or load the model with backend='onnxruntime'")

    def preprocess(self, batch: np.ndarray) -> np.ndarray:
        """uint8 images [N, H, W, 3] -> the encoder's normalised input [N, 3, S, S], as the graph computes it here."""
        if not self._image_input:
            raise ModelError("this model takes preprocessed float input", hint="use the uint8 export")
        self.check_size(batch.shape[1], batch.shape[2])
        with self._request() as (pre, _):
            return np.array(self._call(pre, {0: np.ascontiguousarray(batch)}, batch.shape)[0])

    def run(self, batch: np.ndarray, outputs: Sequence[str], classes: Mapping[str, np.ndarray] | None = None) -> list[np.ndarray]:
        if self._image_input:
            self.check_size(batch.shape[1], batch.shape[2])
        given = {**self._defaults, **(classes or {})}  # what is not given: the graph's defaults
        feeds = {name: np.asarray(value, np.float32, order="C") for name, value in given.items()}
        with self._request() as (pre, main):
            pixels = self._call(pre, {0: np.ascontiguousarray(batch)}, batch.shape)[0] if pre is not None else batch
            values = self._call(main, {PIXELS if pre is not None else 0: pixels, **feeds}, batch.shape)
            return [np.array(values[name]) for name in outputs]

    def _call(self, request: Any, feeds: dict, shape: tuple[int, ...]) -> Any:
        try:
            return request.infer(feeds)
        except Exception as exc:  # OpenVINO raises RuntimeError and its own types
            raise BackendError(f"OpenVINO failed running {self._path} on a batch of shape {shape}: "
                               f"{str(exc).splitlines()[0]}") from exc

"""Reduced-precision copies of an exported fp32 graph: fp16 (GPU) and dynamic int8 (CPU/ARM, ONNX Runtime only)."""
from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import onnx_ir as ir
from semobridge_runtime.metadata import OpenVinoInt8

from semobridge.files import atomic_output
from semobridge.logs import quiet_logger, quiet_root_logger

from .metadata import METADATA_KEY, ModelInfo, metadata_props, with_precision
from .onnx_graph import ENCODER_SCOPE, module_scope, save_model
#: Encoder ops that run in fp16. Everything else stays fp32: LayerNorm (the known source of CLIP's
#: fp16 drift), softmax, reductions, and all of preprocessing, the head and the outputs.
FP16_OPS = frozenset({
    "MatMul", "Gemm", "Conv", "Add", "Sub", "Mul", "Div", "Erf", "Gelu", "Sigmoid", "Tanh", "Relu",
    "Transpose", "Reshape", "Concat", "Slice", "Gather", "Expand", "Squeeze", "Unsqueeze", "Split", "Flatten",
})


def encoder_nodes(graph: ir.Graph) -> list[ir.Node]:
    """The nodes of the image encoder (everything else: preprocessing, head, outputs)."""
    nodes = [n for n in graph if module_scope(n.metadata_props) == ENCODER_SCOPE]
    if not nodes:
        raise ValueError("no image-encoder nodes found (the graph lacks the exporter's name scopes); "
                         "convert a graph written by semobridge-export")
    return nodes


def _converted(value: ir.Value, dtype: ir.DataType, graph: ir.Graph, before: ir.Node, cache: dict) -> ir.Value:
    """`value` as `dtype`: a converted initializer, or one shared Cast inserted before its first user."""
    key = (value.name, dtype)
    if key not in cache:
        if value.is_initializer() and value.const_value is not None:
            array = value.const_value.numpy().astype(dtype.numpy())
            converted = ir.Value(name=f"{value.name}_{dtype.name.lower()}", const_value=ir.tensor(array))
            converted.type, converted.shape = ir.TensorType(dtype), value.shape
            graph.register_initializer(converted)
        else:
            cast = ir.node("Cast", [value], attributes={"to": dtype}, name=f"{value.name}_to_{dtype.name.lower()}")
            converted = cast.outputs[0]
            converted.name, converted.type, converted.shape = cast.name, ir.TensorType(dtype), value.shape
            graph.insert_before(before, cast)
        cache[key] = converted
    return cache[key]


def half_encoder(model: ir.Model) -> ir.Model:
    """Run the encoder's FP16_OPS in fp16 (in place); casts at the borders, fp32 everywhere else."""
    graph, cache = model.graph, {}
    graph.sort()
    half = {id(n) for n in encoder_nodes(graph) if n.op_type in FP16_OPS}
    for node in list(graph):
        want, have = (ir.DataType.FLOAT16, ir.DataType.FLOAT) if id(node) in half else (ir.DataType.FLOAT, ir.DataType.FLOAT16)
        for i, value in enumerate(node.inputs):
            if value is not None and value.dtype == have:
                node.replace_input_with(i, _converted(value, want, graph, node, cache))
        if id(node) in half:
            for out in node.outputs:
                if out.dtype == ir.DataType.FLOAT:
                    out.type = ir.TensorType(ir.DataType.FLOAT16)
    for i, out in enumerate(graph.outputs):  # an encoder node's output that is also a graph output stays fp32 there
        if out.dtype == ir.DataType.FLOAT16:
            name, out.name = out.name, f"{out.name}_fp16"
            cast = ir.node("Cast", [out], attributes={"to": ir.DataType.FLOAT}, name=f"{name}_output_fp32")
            cast.outputs[0].name, cast.outputs[0].type, cast.outputs[0].shape = name, ir.TensorType(ir.DataType.FLOAT), out.shape
            graph.append(cast)
            graph.outputs[i] = cast.outputs[0]
    return model


def _props(model: ir.Model, precision: str) -> dict[str, str]:
    """The model's metadata entries with `precision` set."""
    return metadata_props(with_precision(ModelInfo.from_json(model.metadata_props.get(METADATA_KEY), "the graph"), precision))


def to_fp16(src: Path, dst: Path) -> Path:
    """fp16 copy of the image encoder; preprocessing, LayerNorm, softmax, reductions and the head stay fp32."""
    model = half_encoder(ir.load(str(src)))
    for name, value in list(model.graph.initializers.items()):
        if not value.uses():  # fp32 originals replaced by fp16 copies
            del model.graph.initializers[name]
    return save_model(model, dst, _props(model, "fp16"))


def quantize_matmuls(src: Path, dst: Path, exclude: Iterable[str] = ()) -> None:
    """ONNX Runtime dynamic int8 quantisation of the MatMul/Gemm nodes with constant weights, except `exclude`:
    int8 weights per tensor, uint8 activations quantised at run time."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with quiet_root_logger():
        quantize_dynamic(
            str(src), str(dst), op_types_to_quantize=["MatMul", "Gemm"], nodes_to_exclude=list(exclude),
            weight_type=QuantType.QInt8, per_channel=False, extra_options={"MatMulConstBOnly": True},
        )


def fuse_for_onnxruntime(model: ir.Model) -> None:
    """ONNX Runtime's CPU operators for the encoder's standard patterns (in place; com.microsoft operators, so
    for the int8 artifact only): attention -> MultiHeadAttention, erf GELU with its bias -> BiasGelu. Left
    as they are: SkipLayerNormalization and the packed Attention, slower on ONNX Runtime's CPU than the ops
    they replace (measured on ViT-B/16, AVX-512 VNNI). Encoders without these patterns are left as they are."""
    from onnx_ir.passes.common import ShapeInferencePass
    from onnxscript.optimizer import optimize
    from onnxscript.rewriter.ort_fusions.bias_gelu import fuse_bias_gelu
    from onnxscript.rewriter.ort_fusions.erfgelu import fuse_erfgelu
    from onnxscript.rewriter.ort_fusions.mha import fuse_mha2
    from onnxscript.rewriter.ort_fusions.sdpa import fuse_sdpa

    # the optimizer warns that it leaves the class-set inputs (initializers that are graph inputs by design) alone
    with quiet_logger("onnx_ir.passes.common.initializer_deduplication"), inputs_unfolded(model):
        ShapeInferencePass()(model)
        optimize(model)
        fuse_sdpa(model, apply_shape_inference=True)  # the standard pattern -> one attention function
        fuse_mha2(model)  # -> MultiHeadAttention on the projections' outputs (they stay int8 MatMuls)
        fuse_erfgelu(model)
        fuse_bias_gelu(model)
        optimize(model)


@contextmanager
def inputs_unfolded(model: ir.Model) -> Iterator[None]:
    """Graph inputs whose defaults are initializers (the class set, the decision's scalars) stay inputs to the
    optimizer: their defaults are withheld meanwhile, or it folds them as constants (it turned (1 - mcm_weight) into 1,
    so the graph ignored a fed mcm_weight of 1 there)."""
    held = [value for value in model.graph.inputs if value.name in model.graph.initializers]
    defaults = [value.const_value for value in held]
    for value in held:
        del model.graph.initializers[value.name]
        value.const_value = None
    try:
        yield
    finally:
        for value, default in zip(held, defaults):
            value.const_value = default
            model.graph.register_initializer(value)


def to_int8(src: Path, dst: Path, meta: ModelInfo | None = None) -> Path:
    """The CPU int8 artifact: the encoder's attention and GELU as ONNX Runtime operators, its matrix products
    quantised dynamically (int8 weights, uint8 activations per call); the preprocessing as in the source (its
    input Cast below the resize's window cuts, onnx_graph.to_onnx). `meta`: its metadata (default: the source's, precision int8)."""
    graph = ir.load(str(src)).graph
    encoder = {n.name for n in encoder_nodes(graph)}
    exclude = [n.name for n in graph if n.name not in encoder]
    model = ir.load(str(src))
    fuse_for_onnxruntime(model)
    with atomic_output(dst) as tmp:
        fused = save_model(model, tmp.with_name(f"{tmp.stem}_fused.onnx"))
        try:
            quantize_matmuls(fused, tmp, exclude=exclude)
        finally:
            for path in (fused, fused.with_name(f"{fused.name}.data")):
                path.unlink(missing_ok=True)
        model = ir.load(str(tmp))
        save_model(model, tmp, metadata_props(meta) if meta else _props(model, "int8"))
    return Path(dst)


def set_metadata(path: Path, meta: ModelInfo) -> Path:
    """Rewrite an exported graph's `semobridge` metadata."""
    model = ir.load(str(path))
    return save_model(model, path, metadata_props(meta))


def label_agreement(reference: Path, candidate: Path, images: Iterable[np.ndarray]) -> float:
    """Share of images on which two exported graphs give the same label (one image per run)."""
    from .reference import reference_scores, session

    ref, cand = session(reference), session(candidate)
    same = [
        int(reference_scores(ref, image[None])["label"][0] == reference_scores(cand, image[None])["label"][0])
        for image in images
    ]
    if not same:
        raise ValueError("no images to compare labels on")
    return float(np.mean(same))


def openvino_agreement(reference: Path, images: Iterable[np.ndarray], precision: str = "auto",
                       int8_pairing: OpenVinoInt8 | None = None) -> dict | None:
    """The runtime's OpenVINO backend at `precision` ("auto": OpenVINO's for this CPU; "int8": the static int8 IR
    beside `reference`, paired by `int8_pairing`) against the fp32 graph in ONNX Runtime: {"precision",
    "float_precision", "label_agreement", "min_cosine"} of the labels and embeddings, one image per run; None without
    openvino."""
    import importlib.util

    if importlib.util.find_spec("openvino") is None:
        return None
    from semobridge_runtime.backends.openvino import OpenVINOBackend

    from .reference import reference_scores, session

    ref, backend = session(reference), OpenVINOBackend(Path(reference), precision, int8_pairing=int8_pairing)
    same, cosines = [], []
    for image in images:
        want = reference_scores(ref, image[None])
        label, embedding = backend.run(image[None], ("label", "embedding"))
        same.append(int(label[0] == want["label"][0]))
        a, b = embedding[0], want["embedding"][0]
        cosines.append(float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b))))
    if not same:
        raise ValueError("no images to compare labels on")
    return {"precision": backend.precision, "float_precision": backend.float_precision,
            "label_agreement": round(float(np.mean(same)), 4), "min_cosine": round(min(cosines), 6)}

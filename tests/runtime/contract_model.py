"""Build small ONNX models that follow the fused-graph contract, for runtime tests.

The graph is a toy classifier (resize to 32x32 -> linear embedding -> L2 norm ->
cosine against class prototypes -> softmax -> argmax) with the same inputs,
outputs and metadata as the real exporter's output. With `head_as_data` its head takes
the class set as inputs, as the exporter's graphs do (docs/classes.md): the four tensors
are initializers that are also graph inputs, and every one of them changes the scores.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from semobridge_runtime.classes import Identity

MEAN = [0.48145466, 0.4578275, 0.40821073]
STD = [0.26862954, 0.26130258, 0.27577711]
SIZE = 32
BRIDGE_HASH = "b" * 16  # the toy's bridge hash (its metadata's `bridge_hash`)
HEAD_INPUTS = ("text_classifier", "bridged_prototypes", "image_prototypes", "class_kl")
TOY_IDENTITY = Identity("toy", "0" * 16, BRIDGE_HASH, 8)  # what class files for a head_as_data toy model must match

#: Models whose graph does not match their metadata, for the load-time checks of both runtimes:
#: case -> build_contract_model options.
MISMATCHED = {
    "embedding width": {"meta_changes": {"embedding_dim": 9}},
    "class count": {"meta_changes": {"class_names": ["a", "b", "c", "d"]}},
    "label renamed": {"rename_outputs": {"label": "argmax"}},
    "label is float": {"cast_outputs": {"label": TensorProto.FLOAT}},
    "scores are double": {"cast_outputs": {"scores": TensorProto.DOUBLE}},
    "float input of another size": {"kind": "float", "meta_changes": {"image_size": 64}},
}


def contract_metadata(class_names: list[str], kind: str, shape: list, embedding_dim: int) -> dict:
    """The `semobridge` metadata dict the exporter writes."""
    return {
        "format_version": 1,
        "class_names": class_names,
        "input": {"name": "image", "kind": kind, "shape": shape,
                  "layout": "NHWC" if kind == "uint8" else "NCHW"},
        "image_size": SIZE,
        "mean": MEAN,
        "std": STD,
        "num_classes": len(class_names),
        "embedding_dim": embedding_dim,
        "backbone": {"name": "toy", "pretrained": "none", "weights_hash": "0" * 16},
        "variant": "toy",
        "shots": 1,
        "params": {},
        "val_accuracy": None,
        "library_version": "0.0.0",
    }


def build_contract_model(
    path: Path,
    *,
    num_classes: int = 5,
    embedding_dim: int = 8,
    kind: str = "uint8",
    batch: int | None = None,
    fixed_size: tuple[int, int] | None = None,
    metadata: bool = True,
    seed: int = 0,
    meta_changes: dict | None = None,
    rename_outputs: dict[str, str] | None = None,
    cast_outputs: dict[str, int] | None = None,
    head_as_data: bool = False,
) -> Path:
    """Write a contract-conforming model to `path` (and `model.json`-style sidecar) and return it.

    meta_changes (metadata keys replaced), rename_outputs (output names replaced) and cast_outputs
    (output name -> TensorProto type) make models whose metadata does not describe their graph.
    head_as_data: the class set as inputs with defaults (toy_class_set(num_classes, embedding_dim, seed)):
    scores = softmax(20 exp(D / 10) (q·T + q·P / 2 + q·I / 4)).
    """
    rng = np.random.default_rng(seed)
    class_names = [f"class {i}" for i in range(num_classes)]
    n_dim = batch if batch is not None else "N"
    nodes, inits = [], []

    def const(name: str, value: np.ndarray) -> str:
        inits.append(numpy_helper.from_array(value, name))
        return name

    if kind == "uint8":
        h, w = fixed_size if fixed_size else ("H", "W")
        shape = [n_dim, h, w, 3]
        inp = helper.make_tensor_value_info("image", TensorProto.UINT8, shape)
        nodes += [
            helper.make_node("Cast", ["image"], ["f"], to=TensorProto.FLOAT),
            helper.make_node("Resize", ["f", "", "", const("sizes", np.array([SIZE, SIZE], np.int64))],
                             ["r"], mode="linear", axes=[1, 2]),
            helper.make_node("Div", ["r", const("c255", np.array(255.0, np.float32))], ["u"]),
            helper.make_node("Sub", ["u", const("mean", np.array(MEAN, np.float32))], ["c"]),
            helper.make_node("Div", ["c", const("std", np.array(STD, np.float32))], ["x"]),
        ]
    elif kind == "float":
        shape = [n_dim, 3, SIZE, SIZE]
        inp = helper.make_tensor_value_info("image", TensorProto.FLOAT, shape)
        nodes.append(helper.make_node("Identity", ["image"], ["x"]))
    else:
        raise ValueError(f"unknown kind {kind!r}")

    proj = rng.standard_normal((3 * SIZE * SIZE, embedding_dim)).astype(np.float32) / 40
    protos = rng.standard_normal((embedding_dim, num_classes)).astype(np.float32)
    protos /= np.linalg.norm(protos, axis=0, keepdims=True)
    nodes += [
        helper.make_node("Reshape", ["x", const("flat", np.array([0, -1], np.int64))], ["v"]),
        helper.make_node("MatMul", ["v", const("proj", proj)], ["e"]),
        helper.make_node("LpNormalization", ["e"], ["embedding"], axis=1, p=2),
    ]
    head_inputs = []
    if head_as_data:
        for name, value in zip(HEAD_INPUTS, toy_class_set(num_classes, embedding_dim, seed)):
            const(name, value)
            head_inputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, ["C", embedding_dim][:value.ndim]))
        nodes += [
            helper.make_node("Gemm", ["embedding", "text_classifier"], ["qt"], transB=1),
            helper.make_node("Gemm", ["embedding", "bridged_prototypes"], ["qp"], transB=1, alpha=0.5),
            helper.make_node("Gemm", ["embedding", "image_prototypes"], ["qi"], transB=1, alpha=0.25),
            helper.make_node("Sum", ["qt", "qp", "qi"], ["cos"]),
            helper.make_node("Div", ["class_kl", const("ten", np.array(10.0, np.float32))], ["kl10"]),
            helper.make_node("Exp", ["kl10"], ["weight"]),
            helper.make_node("Mul", ["cos", "weight"], ["weighted"]),
            helper.make_node("Mul", ["weighted", const("scale", np.array(20.0, np.float32))], ["logits"]),
        ]
    else:
        nodes += [
            helper.make_node("MatMul", ["embedding", const("protos", protos)], ["cos"]),
            helper.make_node("Mul", ["cos", const("scale", np.array(20.0, np.float32))], ["logits"]),
        ]
    nodes += [
        helper.make_node("Softmax", ["logits"], ["scores"], axis=1),
        helper.make_node("ArgMax", ["scores"], ["label"], axis=1, keepdims=0),
    ]
    outputs = [
        helper.make_tensor_value_info("scores", TensorProto.FLOAT, [n_dim, "C" if head_as_data else num_classes]),
        helper.make_tensor_value_info("label", TensorProto.INT64, [n_dim]),
        helper.make_tensor_value_info("embedding", TensorProto.FLOAT, [n_dim, embedding_dim]),
    ]
    for name, elem_type in (cast_outputs or {}).items():
        for node in nodes:
            node.input[:] = [f"{name}_raw" if i == name else i for i in node.input]
            node.output[:] = [f"{name}_raw" if o == name else o for o in node.output]
        nodes.append(helper.make_node("Cast", [f"{name}_raw"], [name], to=elem_type))
        outputs = [_retyped(o, o.name, elem_type) if o.name == name else o for o in outputs]
    for old, new in (rename_outputs or {}).items():
        nodes.append(helper.make_node("Identity", [old], [new]))
        outputs = [_retyped(o, new, o.type.tensor_type.elem_type) if o.name == old else o for o in outputs]
    graph = helper.make_graph(nodes, "semobridge_contract", [inp, *head_inputs], outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])
    model.ir_version = 9
    meta = contract_metadata(class_names, kind, shape, embedding_dim)
    if head_as_data:
        meta |= {"bridge_hash": BRIDGE_HASH, "class_file_format": "semobridge-classes/1",
                 "head_inputs": [{"name": t.name, "dtype": "float32"} for t in head_inputs]}
    meta |= meta_changes or {}
    if metadata:
        helper.set_model_props(model, {"semobridge": json.dumps(meta),
                                       "semobridge.class_names": "\n".join(meta["class_names"])})
    onnx.checker.check_model(model, full_check=True)
    path = Path(path)
    onnx.save(model, path)
    if metadata:
        path.with_name("model.json").write_text(json.dumps(meta, indent=2))
    return path


def toy_class_set(num_classes: int, embedding_dim: int, seed: int) -> tuple[np.ndarray, ...]:
    """Random T, P, I (unit rows, [C, d]) and D ([C]) for the toy head."""
    rng = np.random.default_rng(1000 + seed)
    rows = [rng.standard_normal((num_classes, embedding_dim)).astype(np.float32) for _ in range(3)]
    return (*(r / np.linalg.norm(r, axis=1, keepdims=True) for r in rows), rng.uniform(0, 3, num_classes).astype(np.float32))


def _retyped(value: onnx.ValueInfoProto, name: str, elem_type: int) -> onnx.ValueInfoProto:
    """A graph output like `value` (same shape) with another name and element type."""
    dims = [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]
    return helper.make_tensor_value_info(name, elem_type, dims)

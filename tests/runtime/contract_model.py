"""Build small ONNX models that follow the fused-graph contract, for runtime tests.

The graph is a toy classifier (resize to 32x32 -> linear embedding -> L2 norm ->
cosine against class prototypes -> softmax -> argmax) with the same inputs,
outputs and metadata as the real exporter's output: its names come from semobridge_runtime.contract and
its metadata is a semobridge_runtime.metadata.ModelInfo, written as the exporter writes it. With `head_as_data` its head takes
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
from semobridge_runtime.contract import (CLASS_FILE_FORMAT, CLASS_NAMES_KEY, EMBEDDING, HEAD_INPUTS, IMAGE_INPUT, LABEL,
                                         METADATA_KEY, SCORES)
from semobridge_runtime.metadata import Backbone, InputSpec, ModelInfo, TensorSpec

MEAN = [0.48145466, 0.4578275, 0.40821073]
STD = [0.26862954, 0.26130258, 0.27577711]
SIZE = 32
BRIDGE_HASH = "b" * 16  # the toy's bridge hash (its metadata's `bridge_hash`)
TOY_IDENTITY = Identity("toy", "0" * 16, BRIDGE_HASH, 8)  # what class files for a head_as_data toy model must match

#: Models whose graph does not match their metadata, for the load-time checks of both runtimes:
#: case -> build_contract_model options.
MISMATCHED = {
    "embedding width": {"meta_changes": {"embedding_dim": 9}},
    "class count": {"meta_changes": {"class_names": ["a", "b", "c", "d"]}},
    "label renamed": {"rename_outputs": {LABEL: "argmax"}},
    "label is float": {"cast_outputs": {LABEL: TensorProto.FLOAT}},
    "scores are double": {"cast_outputs": {SCORES: TensorProto.DOUBLE}},
    "float input of another size": {"kind": "float", "meta_changes": {"image_size": 64}},
}


def contract_info(class_names: list[str], kind: str, shape: list, embedding_dim: int, head_as_data: bool = False) -> ModelInfo:
    """The toy's metadata; with head_as_data, what class sets need (head inputs, bridge hash, class-file format)."""
    head = {"head_inputs": tuple(TensorSpec(name, "float32", ("C", embedding_dim)[:1 if name == "class_kl" else 2])
                                 for name in HEAD_INPUTS),
            "bridge_hash": BRIDGE_HASH, "class_file_format": CLASS_FILE_FORMAT} if head_as_data else {}
    return ModelInfo(
        class_names=tuple(class_names), embedding_dim=embedding_dim, image_size=SIZE,
        input=InputSpec(name=IMAGE_INPUT, kind=kind, dtype="uint8" if kind == "uint8" else "float32", shape=tuple(shape),
                        layout="NHWC" if kind == "uint8" else "NCHW"),
        outputs=(TensorSpec(SCORES, "float32", ("N", "C")), TensorSpec(LABEL, "int64", ("N",)),
                 TensorSpec(EMBEDDING, "float32", ("N", embedding_dim))),
        mean=tuple(MEAN), std=tuple(STD), backbone=Backbone("toy", "none", "0" * 16), variant="toy", shots=1,
        library_version="0.0.0", **head)


def contract_metadata(class_names: list[str], kind: str, shape: list, embedding_dim: int) -> dict:
    """The `semobridge` metadata dict the exporter writes (contract_info's JSON object)."""
    return contract_info(class_names, kind, shape, embedding_dim).to_dict()


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
        inp = helper.make_tensor_value_info(IMAGE_INPUT, TensorProto.UINT8, shape)
        nodes += [
            helper.make_node("Cast", [IMAGE_INPUT], ["f"], to=TensorProto.FLOAT),
            helper.make_node("Resize", ["f", "", "", const("sizes", np.array([SIZE, SIZE], np.int64))],
                             ["r"], mode="linear", axes=[1, 2]),
            helper.make_node("Div", ["r", const("c255", np.array(255.0, np.float32))], ["u"]),
            helper.make_node("Sub", ["u", const("mean", np.array(MEAN, np.float32))], ["c"]),
            helper.make_node("Div", ["c", const("std", np.array(STD, np.float32))], ["x"]),
        ]
    elif kind == "float":
        shape = [n_dim, 3, SIZE, SIZE]
        inp = helper.make_tensor_value_info(IMAGE_INPUT, TensorProto.FLOAT, shape)
        nodes.append(helper.make_node("Identity", [IMAGE_INPUT], ["x"]))
    else:
        raise ValueError(f"unknown kind {kind!r}")

    proj = rng.standard_normal((3 * SIZE * SIZE, embedding_dim)).astype(np.float32) / 40
    protos = rng.standard_normal((embedding_dim, num_classes)).astype(np.float32)
    protos /= np.linalg.norm(protos, axis=0, keepdims=True)
    nodes += [
        helper.make_node("Reshape", ["x", const("flat", np.array([0, -1], np.int64))], ["v"]),
        helper.make_node("MatMul", ["v", const("proj", proj)], ["e"]),
        helper.make_node("LpNormalization", ["e"], [EMBEDDING], axis=1, p=2),
    ]
    head_inputs = []
    if head_as_data:
        for name, value in zip(HEAD_INPUTS, toy_class_set(num_classes, embedding_dim, seed)):
            const(name, value)
            head_inputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, ["C", embedding_dim][:value.ndim]))
        nodes += [
            helper.make_node("Gemm", [EMBEDDING, HEAD_INPUTS[0]], ["qt"], transB=1),
            helper.make_node("Gemm", [EMBEDDING, HEAD_INPUTS[1]], ["qp"], transB=1, alpha=0.5),
            helper.make_node("Gemm", [EMBEDDING, HEAD_INPUTS[2]], ["qi"], transB=1, alpha=0.25),
            helper.make_node("Sum", ["qt", "qp", "qi"], ["cos"]),
            helper.make_node("Div", [HEAD_INPUTS[3], const("ten", np.array(10.0, np.float32))], ["kl10"]),
            helper.make_node("Exp", ["kl10"], ["weight"]),
            helper.make_node("Mul", ["cos", "weight"], ["weighted"]),
            helper.make_node("Mul", ["weighted", const("scale", np.array(20.0, np.float32))], ["logits"]),
        ]
    else:
        nodes += [
            helper.make_node("MatMul", [EMBEDDING, const("protos", protos)], ["cos"]),
            helper.make_node("Mul", ["cos", const("scale", np.array(20.0, np.float32))], ["logits"]),
        ]
    nodes += [
        helper.make_node("Softmax", ["logits"], [SCORES], axis=1),
        helper.make_node("ArgMax", [SCORES], [LABEL], axis=1, keepdims=0),
    ]
    outputs = [
        helper.make_tensor_value_info(SCORES, TensorProto.FLOAT, [n_dim, "C" if head_as_data else num_classes]),
        helper.make_tensor_value_info(LABEL, TensorProto.INT64, [n_dim]),
        helper.make_tensor_value_info(EMBEDDING, TensorProto.FLOAT, [n_dim, embedding_dim]),
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
    meta = contract_info(class_names, kind, shape, embedding_dim, head_as_data).to_dict() | (meta_changes or {})
    if metadata:
        helper.set_model_props(model, {METADATA_KEY: json.dumps(meta), CLASS_NAMES_KEY: "\n".join(meta["class_names"])})
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

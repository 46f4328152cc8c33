"""Graph rewrites compute the same outputs: fused slices, and the input Cast moved below data movement and back."""
from __future__ import annotations

import numpy as np
import onnx_ir as ir
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from semobridge_export.rewrites import fuse_slices, hoist_input_casts, sink_input_casts


def _model() -> ir.Model:
    """uint8 [2, 6, 7, 3] -> Cast -> Slice rows -> Slice columns -> Transpose -> MatMul, and Shape of the Cast."""
    c = lambda name, values: numpy_helper.from_array(np.array(values, dtype=np.int64), name)  # noqa: E731
    nodes = [
        helper.make_node("Cast", ["image"], ["x"], to=TensorProto.FLOAT),
        helper.make_node("Slice", ["x", "r0", "r1", "ax1"], ["rows"]),
        helper.make_node("Slice", ["rows", "c0", "c1", "ax2"], ["window"]),
        helper.make_node("Transpose", ["window"], ["nchw"], perm=[0, 3, 1, 2]),
        helper.make_node("MatMul", ["nchw", "weight"], ["out"]),
        helper.make_node("Shape", ["x"], ["shape"]),
    ]
    weight = numpy_helper.from_array(np.random.default_rng(0).standard_normal((4, 2)).astype(np.float32), "weight")
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("image", TensorProto.UINT8, [2, 6, 7, 3])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, None),
                               helper.make_tensor_value_info("shape", TensorProto.INT64, None)],
                              [c("r0", [1]), c("r1", [5]), c("ax1", [1]), c("c0", [2]), c("c1", [6]), c("ax2", [2]), weight])
    return ir.from_proto(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]))


def _run(model: ir.Model, image: np.ndarray) -> list[np.ndarray]:
    session = ort.InferenceSession(ir.to_proto(model).SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"image": image})


def test_rewrites_keep_the_outputs():
    image = np.random.default_rng(1).integers(0, 256, (2, 6, 7, 3), dtype=np.uint8)
    expected = _run(_model(), image)
    model = _model()
    assert fuse_slices(model) == 1
    assert [n.op_type for n in model.graph if n.op_type == "Slice"] == ["Slice"]
    assert sink_input_casts(model) == 2  # below the Slice, then below the Transpose
    assert [n.op_type for n in model.graph if n.op_type != "Concat"] == ["Slice", "Transpose", "Cast", "MatMul", "Shape"]
    for got, want in zip(_run(model, image), expected):
        np.testing.assert_array_equal(got, want)


def test_hoisting_undoes_the_sinking():
    """TensorRT's form: the uint8 input's only user is one Cast (its Shape reads the converted tensor), the data
    movement runs on floats, the same outputs; a graph already in that form is left as it is."""
    image = np.random.default_rng(2).integers(0, 256, (2, 6, 7, 3), dtype=np.uint8)
    expected = _run(_model(), image)
    model = _model()
    fuse_slices(model)
    sink_input_casts(model)
    assert hoist_input_casts(model) == 1
    source = model.graph.inputs[0]
    assert [use.node.op_type for use in source.uses()] == ["Cast"]
    cast = source.uses()[0].node
    assert sorted(use.node.op_type for use in cast.outputs[0].uses()) == ["Shape", "Slice"]
    assert [n.op_type for n in model.graph if n.op_type == "Cast"] == ["Cast"]
    for got, want in zip(_run(model, image), expected):
        np.testing.assert_array_equal(got, want)
    assert hoist_input_casts(model) == 0
    assert hoist_input_casts(_model()) == 0  # written in that form

"""fp16 and dynamic-int8 variants of the fused graph (ONNX Runtime CPU)."""
from __future__ import annotations

import json

import numpy as np
import onnx

from semobridge_export.onnx_graph import ENCODER_SCOPE, module_scope
from semobridge_export.precision import label_agreement
from semobridge_export.reference import reference_scores, synthetic_images
from semobridge_runtime.openset import SCORES, mcm_weight, open_set_score
from tests.helpers import random_photos


def _scope(node: onnx.NodeProto) -> str:
    return module_scope({p.key: p.value for p in node.metadata_props})


def test_fp16_keeps_layernorm_preprocessing_and_blend_in_fp32(exported_onnx):
    onnx.checker.check_model(str(exported_onnx / "model_fp16.onnx"), full_check=True)
    model = onnx.shape_inference.infer_shapes(onnx.load(str(exported_onnx / "model_fp16.onnx")))
    types = {v.name: v.type.tensor_type.elem_type for v in [*model.graph.value_info, *model.graph.input]}
    types |= {t.name: t.data_type for t in model.graph.initializer}
    half = [n for n in model.graph.node if n.op_type == "MatMul" and types.get(n.input[1]) == onnx.TensorProto.FLOAT16]
    assert half and all(_scope(n) == ENCODER_SCOPE for n in half)
    for node in model.graph.node:
        float_inputs = [types[i] for i in node.input if types.get(i) in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16)]
        if node.op_type in ("LayerNormalization", "Softmax") or _scope(node) in ("preprocess", "head"):
            assert onnx.TensorProto.FLOAT16 not in float_inputs, f"{node.op_type} {node.name} runs in fp16"


def test_fp16_scores_stay_close_to_fp32(exported_onnx):
    images = random_photos(6, seed=21, size=(200, 260))
    fp32 = reference_scores(exported_onnx / "model.onnx", images)
    fp16 = reference_scores(exported_onnx / "model_fp16.onnx", images)
    assert fp16["scores"].dtype == np.float32
    assert np.abs(fp16["scores"] - fp32["scores"]).max() < 5e-3
    assert np.array_equal(fp16["label"], fp32["label"])


def test_int8_quantises_only_the_encoder(exported_onnx):
    model = onnx.load(str(exported_onnx / "model_int8.onnx"))
    quantised = [n for n in model.graph.node if n.op_type in ("MatMulInteger", "DynamicQuantizeLinear")]
    assert quantised
    assert not [n for n in model.graph.node if n.op_type == "MatMulInteger" and _scope(n) in ("preprocess", "head")]
    assert sum(t.data_type == onnx.TensorProto.INT8 for t in model.graph.initializer) >= 4


def test_int8_label_agreement(exported_onnx):
    images = synthetic_images(16, seed=3)
    agreement = label_agreement(exported_onnx / "model.onnx", exported_onnx / "model_int8.onnx", images)
    assert 0.5 <= agreement <= 1.0  # random weights: the scores are close together, some labels flip


def test_export_reports_fp16_drift_and_records_int8_agreement(tiny_head, tiny_backbone, tmp_path, monkeypatch):
    from semobridge_export import export, formats
    from semobridge_export.metadata import read_metadata

    monkeypatch.setitem(formats.FLAG_FORMATS, "int8_cpu", ("onnx-int8",))  # OpenVINO's IR: tests/runtime/test_openvino_int8.py

    lines: list[str] = []
    images = synthetic_images(6, seed=1)
    out = tmp_path / "m"
    export(tiny_head, tiny_backbone, out, formats=(), half=True, int8_cpu=True, check_images=images[:4],
           fit_images=images[4:], log=lines.append)
    assert any(line.startswith("fp16: max |score difference| against fp32") for line in lines)
    reported = [line for line in lines if line.startswith("int8: label agreement with fp32")]
    assert len(reported) == 1 and reported[0].endswith("on 2 few-shot images")  # the fit images, not the check images
    recorded = read_metadata(out / "model_int8.onnx").to_dict()["int8"]
    agreement = label_agreement(out / "model.onnx", out / "model_int8.onnx", images[4:])
    assert recorded == {"label_agreement": round(agreement, 4), "images": 2, "measured_on": "few-shot images"}
    assert json.loads((out / "model_int8.json").read_text())["int8"] == recorded
    assert read_metadata(out / "model.onnx").int8 is None


def test_int8_artifact_runs_onnxruntime_operators_the_fp32_graph_stays_standard(exported_onnx):
    int8 = onnx.load(str(exported_onnx / "model_int8.onnx"))
    ops = {(n.domain or "ai.onnx", n.op_type) for n in int8.graph.node}
    assert {("com.microsoft", "MultiHeadAttention"), ("com.microsoft", "BiasGelu")} <= ops
    users = [n.op_type for n in int8.graph.node if "image" in n.input]
    assert "Cast" not in users and "Slice" in users  # the resize cuts its windows from the uint8 pixels
    fp32 = onnx.load(str(exported_onnx / "model.onnx"))
    assert {n.domain for n in fp32.graph.node} <= {"", "ai.onnx"}  # what TensorRT parses: standard operators only
    # (from tensorrt_graph: the image's Cast first, test_tensorrt)


def test_reduced_precision_graphs_keep_the_class_set_inputs_in_fp32(exported_onnx):
    """fp16 and int8 graphs take the same fp32 class-set inputs (defaults included), and `features` and
    `bridged_features` stay fp32."""
    from semobridge_export import session

    images = random_photos(3, seed=5, size=(120, 90))
    fp32 = session(exported_onnx / "model.onnx")
    inputs = [(i.name, i.type, i.shape) for i in fp32.get_overridable_initializers()]
    rng = np.random.default_rng(0)  # a random 7-class set
    classes = {name: rng.random((7, 64) if name != "class_kl" else (7,), dtype=np.float32) for name, *_ in inputs
               if name not in ("temperature", "threshold", "mcm_weight")}
    for variant in ("model_fp16.onnx", "model_int8.onnx"):
        sess = session(exported_onnx / variant)
        assert [(i.name, i.type, i.shape) for i in sess.get_overridable_initializers()] == inputs
        assert [(o.name, o.type) for o in sess.get_outputs()] == [
            ("scores", "tensor(float)"), ("label", "tensor(int64)"), ("embedding", "tensor(float)"),
            ("features", "tensor(float)"), ("bridged_features", "tensor(float)"), ("probabilities", "tensor(float)"),
            ("known", "tensor(bool)"), ("open_set_score", "tensor(float)")]
        fed = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, {"image": images, **classes})))
        assert fed["scores"].shape == (3, 7)
        reference = dict(zip([o.name for o in fp32.get_outputs()], fp32.run(None, {"image": images, **classes})))
        for name in ("features", "bridged_features"):
            assert np.abs(fed[name] - reference[name]).max() < 0.05 * np.abs(reference[name]).max(), name
        for score in SCORES:  # the same decision graph: the chosen score from the graph's own outputs (test_front_ends)
            weight = {"mcm_weight": np.array(mcm_weight(score), np.float32)}
            out = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, {"image": images, **classes, **weight})))
            cosines = out["embedding"].astype(np.float64) @ classes["text_classifier"].T
            want = open_set_score(out["probabilities"], cosines, score)
            np.testing.assert_allclose(out["open_set_score"], want, rtol=0, atol=1e-5, err_msg=f"{variant} {score}")

"""The fused ONNX graph: parity with the library, shapes, metadata, atomicity."""
from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import onnx
import onnx_ir
import pytest
import torch

import semobridge_export.onnx_graph as onnx_graph
from semobridge_export import FORMATS, FusedClassifier, export, library_scores, read_metadata, reference_scores, session
from semobridge.errors import InputError
from semobridge_export.exporter import write_manifest
from semobridge_export.metadata import CLASS_NAMES_KEY, METADATA_KEY
from tests.helpers import random_photos


def test_scores_match_the_library(exported_onnx, tiny_head, tiny_backbone, odd_photos):
    """ORT on the fused graph vs open_clip PIL preprocessing -> encode_image -> head."""
    sess = session(exported_onnx / "model.onnx")
    batches = [random_photos(4, seed=3, size=(180, 240)), random_photos(3, seed=4, size=(300, 200))]
    batches += [photo[None] for photo in odd_photos.values()]
    for images in batches:
        graph = reference_scores(sess, images)
        library = library_scores(tiny_head, tiny_backbone, images)
        assert np.abs(graph["scores"] - library["scores"]).max() <= 1e-4
        assert np.array_equal(graph["label"], library["label"])
        assert np.abs(graph["embedding"] - library["embedding"]).max() <= 1e-4


def test_graph_matches_the_fused_module_run_eagerly(exported_onnx, tiny_head, tiny_backbone):
    fused = FusedClassifier(tiny_head, tiny_backbone)
    images = random_photos(5, seed=7, size=(150, 333))
    with torch.no_grad():
        eager = [t.numpy() for t in fused(torch.from_numpy(images))]
    graph = reference_scores(exported_onnx / "model.onnx", images)
    assert list(graph) == list(fused.output_names)
    for name, value in zip(fused.output_names, eager):
        assert np.abs(graph[name].astype(np.float64) - value).max() <= 1e-4, name  # `known` is bool


def test_bridged_features_are_the_librarys_bridge_of_the_features(exported_onnx, tiny_head):
    """The `bridged_features` output is semobridge's Bridge (b = 0) of the `features` output, traced: what enrolment
    averages into a new class's bridged prototype, so the runtime holds no copy of the bridge. Its matrix
    products are not computed twice in the graph (the blend's bridged query reuses them)."""
    graph = reference_scores(exported_onnx / "model.onnx", random_photos(4, seed=8, size=(200, 160)))
    with torch.no_grad():
        expected = tiny_head.bridge(torch.from_numpy(graph["features"])).numpy()
    np.testing.assert_allclose(graph["bridged_features"], expected, rtol=0, atol=1e-5)
    model = onnx.load(str(exported_onnx / "model.onnx"))
    pinv = tiny_head.bridge.pinv.detach().numpy()
    constants = {i.name for i in model.graph.initializer if tuple(i.dims) == pinv.shape and np.allclose(
        onnx.numpy_helper.to_array(i), pinv)}
    assert len(constants) == 1
    assert sum(1 for n in model.graph.node if n.op_type == "MatMul" and constants & set(n.input)) == 1


def test_one_session_takes_batches_1_3_17_of_any_size(exported_onnx):
    sess = session(exported_onnx / "model.onnx")
    for n, (h, w) in [(1, (224, 224)), (3, (64, 300)), (17, (411, 97)), (3, (1024, 768)), (1, (9, 9))]:
        out = reference_scores(sess, random_photos(n, seed=n, size=(h, w)))
        assert out["scores"].shape == (n, 5) and out["scores"].dtype == np.float32
        assert out["label"].shape == (n,) and out["label"].dtype == np.int64
        assert out["embedding"].shape == (n, 64)
        assert np.allclose(np.linalg.norm(out["embedding"], axis=1), 1, atol=1e-5)
        assert np.array_equal(out["label"], out["scores"].argmax(1))


def test_graph_signature_and_checker(exported_onnx):
    path = exported_onnx / "model.onnx"
    onnx.checker.check_model(str(path), full_check=True)
    model = onnx.load(str(path))
    assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) >= 18
    assert "LayerNormalization" in {n.op_type for n in model.graph.node}
    inp, *head = model.graph.input
    assert inp.name == "image" and inp.type.tensor_type.elem_type == onnx.TensorProto.UINT8
    dims = [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim]
    assert dims == ["N", "H", "W", 3]
    assert [(i.name, [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim]) for i in head] == [
        ("text_classifier", ["C", 64]), ("bridged_prototypes", ["C", 64]), ("image_prototypes", ["C", 64]), ("class_kl", ["C"]),
        ("temperature", []), ("threshold", []), ("mcm_weight", []),  # the open-set decision's (tests/runtime/test_front_ends.py)
    ]
    assert {i.name for i in model.graph.initializer} >= {i.name for i in head}  # defaults: the fitted classes, calibration
    assert [o.name for o in model.graph.output] == ["scores", "label", "embedding", "features", "bridged_features",
                                                    "probabilities", "known", "open_set_score"]
    types = [o.type.tensor_type.elem_type for o in model.graph.output]
    assert types == [onnx.TensorProto.FLOAT, onnx.TensorProto.INT64] + [onnx.TensorProto.FLOAT] * 4 + [
        onnx.TensorProto.BOOL, onnx.TensorProto.FLOAT]


def test_metadata_in_the_graph_and_beside_it(exported_onnx, tiny_head, tiny_backbone):
    model = onnx.load(str(exported_onnx / "model.onnx"))
    props = {p.key: p.value for p in model.metadata_props}
    meta = json.loads(props[METADATA_KEY])
    assert props[CLASS_NAMES_KEY].split("\n") == tiny_head.info.class_names
    assert json.loads((exported_onnx / "model.json").read_text()) == meta == read_metadata(exported_onnx / "model.onnx").to_dict()
    assert meta["format_version"] == 1
    assert meta["class_names"] == tiny_head.info.class_names and meta["num_classes"] == 5
    assert meta["embedding_dim"] == 64 and meta["image_size"] == 224
    assert meta["input"] == {"name": "image", "kind": "uint8", "dtype": "uint8", "shape": ["N", "H", "W", 3], "layout": "NHWC"}
    assert [o["name"] for o in meta["outputs"]] == ["scores", "label", "embedding", "features", "bridged_features",
                                                    "probabilities", "known", "open_set_score"]
    assert meta["outputs"][0]["shape"] == ["N", "C"] and meta["outputs"][1]["dtype"] == "int64"
    assert [(h["name"], h["shape"]) for h in meta["head_inputs"]] == [
        ("text_classifier", ["C", 64]), ("bridged_prototypes", ["C", 64]), ("image_prototypes", ["C", 64]), ("class_kl", ["C"])
    ]
    assert meta["enrolment"] == {"head": "head.safetensors", "text_model": "text.onnx"}
    assert meta["class_file_format"] == "semobridge-classes/1" and len(meta["bridge_hash"]) == 16
    assert meta["mean"] == pytest.approx(list(tiny_backbone.mean)) and meta["std"] == pytest.approx(list(tiny_backbone.std))
    assert "bicubic" in meta["resize"] and "224" in meta["resize"]
    assert meta["backbone"] == tiny_backbone.identity()
    assert meta["params"] == tiny_head.info.params and meta["shots"] == 3
    assert meta["variant"] == "training-free" and meta["precision"] == "fp32"
    assert {"val_accuracy", "library_version"} <= set(meta)
    for name, precision in [("model_fp16", "fp16"), ("model_int8", "int8")]:
        written = read_metadata(exported_onnx / f"{name}.onnx").to_dict()
        fp32 = {k: v for k, v in meta.items() if k not in ("openvino", "openvino_int8")}  # of model.onnx only
        assert {k: v for k, v in written.items() if k != "int8"} == {**fp32, "precision": precision}
        assert ("int8" in written) == (precision == "int8")  # the int8 artifact's label agreement with fp32
        assert json.loads((exported_onnx / f"{name}.json").read_text())["precision"] == precision


def test_float_input_and_fixed_size_variants(tiny_head, tiny_backbone, tmp_path):
    """--input float takes normalised [N, 3, S, S]; --fixed-size gives static H, W."""
    fused = FusedClassifier(tiny_head, tiny_backbone)
    images = random_photos(3, seed=11, size=(120, 160))
    with torch.no_grad():
        pixels = fused.preprocess(torch.from_numpy(images)).numpy()
        expected = fused(torch.from_numpy(images))[0].numpy()

    out = export(tiny_head, tiny_backbone, tmp_path / "float", input_kind="float", log=lambda _: None)
    meta = read_metadata(out["onnx"])
    assert meta.input_kind == "float" and meta.input.shape == ("N", 3, 224, 224)
    assert np.abs(reference_scores(out["onnx"], pixels)["scores"] - expected).max() <= 1e-4

    out = export(tiny_head, tiny_backbone, tmp_path / "fixed", fixed_size=(120, 160), log=lambda _: None)
    dims = [d.dim_param or d.dim_value for d in onnx.load(str(out["onnx"])).graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["N", 120, 160, 3] and read_metadata(out["onnx"]).input.shape == ("N", 120, 160, 3)
    assert np.abs(reference_scores(out["onnx"], images)["scores"] - expected).max() <= 1e-4
    with pytest.raises(ValueError, match="fixed-size"):
        export(tiny_head, tiny_backbone, tmp_path / "bad", input_kind="float", fixed_size=(1, 1))


def test_failed_export_leaves_nothing(tiny_head, tiny_backbone, tmp_path, monkeypatch):
    def half_written(job):
        (job.stage / "model.onnx").write_bytes(b"partial")
        raise RuntimeError("disk full")

    monkeypatch.setitem(FORMATS, "onnx", replace(FORMATS["onnx"], write=half_written))
    with pytest.raises(RuntimeError, match="disk full"):
        export(tiny_head, tiny_backbone, tmp_path / "new", log=lambda _: None)
    assert list(tmp_path.iterdir()) == []

    existing = tmp_path / "existing"
    existing.mkdir()
    (existing / "model.onnx").write_bytes(b"old")
    write_manifest(existing)  # an earlier export's folder
    with pytest.raises(RuntimeError):
        export(tiny_head, tiny_backbone, existing, log=lambda _: None)
    assert [p.name for p in tmp_path.iterdir()] == ["existing"] and (existing / "model.onnx").read_bytes() == b"old"


def test_unknown_format_is_refused_before_any_work(tiny_head, tiny_backbone, tmp_path):
    with pytest.raises(InputError, match="unknown format") as caught:
        export(tiny_head, tiny_backbone, tmp_path / "x", formats="onnx,tflite")
    assert "choose from onnx" in caught.value.hint and list(tmp_path.iterdir()) == []


def test_large_models_use_external_data(exported_onnx, tmp_path, monkeypatch):
    monkeypatch.setattr(onnx_graph, "PROTOBUF_LIMIT", 0)  # as if the weights were over 2 GB
    path = onnx_graph.save_model(onnx_ir.load(str(exported_onnx / "model.onnx")), tmp_path / "big.onnx")
    assert (tmp_path / "big.onnx.data").stat().st_size > 1_000_000
    assert path.stat().st_size < (exported_onnx / "model.onnx").stat().st_size / 3
    images = random_photos(2, seed=5)
    expected = reference_scores(exported_onnx / "model.onnx", images)["scores"]
    assert np.abs(reference_scores(path, images)["scores"] - expected).max() == 0

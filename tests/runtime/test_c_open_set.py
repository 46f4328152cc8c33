"""The C library's open-set score (issue 20): the score the model's metadata names (or a class file's `score`) reaches the
graph as its mcm_weight input, sb_predict returns the graph's open_set_score, a model whose outputs do not have the
contract's shapes is refused before a value is read, and an uncalibrated model with a calibrated class file decides
as Python does. On toy graphs (tests/runtime/contract_model.py) extended with the decision: their open_set_score is
(1 - w)·max softmax(scores / T) + w·MCM_STAND_IN, so the weight fed shows in every value."""

from __future__ import annotations

import ctypes
import json
import subprocess
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from semobridge_runtime import ModelError, contract, openset
from semobridge_runtime.classes import ClassSet
from semobridge_runtime.openset import OpenSet

from .contract_model import TOY_IDENTITY, toy_class_set
from .test_c_classes import encoded
from .test_c_library import c_load, lib  # noqa: F401  (lib: fixture)
from .test_frames import CFrame

SB_EMODEL = -2
MCM_STAND_IN = 0.25  # what the toy graph's open_set_score is with mcm_weight 1
CLASSES = 5


class Result(ctypes.Structure):
    """struct sb_result, field for field."""

    _fields_ = [("scores", ctypes.c_void_p), ("labels", ctypes.c_void_p), ("probabilities", ctypes.c_void_p),
                ("embeddings", ctypes.c_void_p), ("open_set_score", ctypes.c_void_p)]


@pytest.fixture(scope="module")
def olib(lib: ctypes.CDLL) -> ctypes.CDLL:
    lib.sb_predict.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.POINTER(CFrame), ctypes.c_int, ctypes.POINTER(Result)]
    lib.sb_unknown_threshold.restype = ctypes.c_double
    lib.sb_unknown_threshold.argtypes = [ctypes.c_void_p]
    lib.sb_unknown_score.restype = ctypes.c_char_p
    lib.sb_unknown_score.argtypes = [ctypes.c_void_p]
    lib.sb_set_classes.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
    lib.sb_get_classes.restype = ctypes.c_void_p
    lib.sb_get_classes.argtypes = [ctypes.c_void_p]
    lib.sb_release_classes.argtypes = [ctypes.c_void_p]
    lib.sb_classes_score.restype = ctypes.c_char_p
    lib.sb_classes_score.argtypes = [ctypes.c_void_p]
    return lib


def with_decision(model: Path, *, score: str | None = "max_probability", threshold: float | None = 0.5,
                  temperature: float = 0.5, weight_input: bool = True, probabilities_dims: list | None = None,
                  narrow: bool = False, known_dims: list | None = None, score_dims: list | None = None,
                  score_output: bool = True) -> Path:
    """The contract model `model` (rewritten in place) with the decision the exporter's graphs compute: overridable
    float32 scalar inputs temperature, threshold (the metadata's) and, with `weight_input`, mcm_weight (default the
    metadata score's weight); outputs probabilities, known and open_set_score. The metadata's open_set names `score`
    (None: the key left out) unless `threshold` is None (no calibration). `narrow`: probabilities lose their last
    column; *_dims: the declared output shapes; without `score_output` (and `weight_input`): a graph exported before
    the score was a choice."""
    proto = onnx.load(str(model))
    g = proto.graph
    default_weight = openset.mcm_weight(score) if score in openset.SCORES else 0.0
    scalars = {contract.TEMPERATURE: temperature, contract.THRESHOLD: threshold if threshold is not None else 0.0}
    if weight_input:
        scalars[contract.MCM_WEIGHT] = default_weight
    for name, value in scalars.items():
        g.initializer.append(numpy_helper.from_array(np.array(value, np.float32), name))
        g.input.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, []))
    consts = {"one": np.array(1.0, np.float32), "stand_in": np.array(MCM_STAND_IN, np.float32),
              "axis1": np.array([1], np.int64), "zero1": np.array([0], np.int64), "narrow_end": np.array([-1], np.int64)}
    g.initializer.extend(numpy_helper.from_array(v, k) for k, v in consts.items())
    weight = contract.MCM_WEIGHT if weight_input else "zero_weight"
    if not weight_input:
        g.initializer.append(numpy_helper.from_array(np.array(0.0, np.float32), "zero_weight"))
    g.node.extend([
        helper.make_node("Div", [contract.SCORES, contract.TEMPERATURE], ["z_t"]),
        helper.make_node("Softmax", ["z_t"], ["p_all"], axis=1),
        helper.make_node("Slice", ["p_all", "zero1", "narrow_end", "axis1"], [contract.PROBABILITIES])
        if narrow else helper.make_node("Identity", ["p_all"], [contract.PROBABILITIES]),
        helper.make_node("ReduceMax", ["p_all", "axis1"], ["top"], keepdims=0),
        helper.make_node("Sub", ["one", weight], ["keep"]),
        helper.make_node("Mul", ["top", "keep"], ["part_p"]),
        helper.make_node("Mul", ["stand_in", weight], ["part_mcm"]),
        helper.make_node("Add", ["part_p", "part_mcm"], ["s_flat"]),
        helper.make_node("Unsqueeze", ["s_flat", "axis1"], [contract.OPEN_SET_SCORE])
        if score_dims and len(score_dims) == 2 else helper.make_node("Identity", ["s_flat"], [contract.OPEN_SET_SCORE]),
        helper.make_node("GreaterOrEqual", ["s_flat", contract.THRESHOLD], ["known_flat"]),
        helper.make_node("Unsqueeze", ["known_flat", "axis1"], [contract.KNOWN])
        if known_dims and len(known_dims) == 2 else helper.make_node("Identity", ["known_flat"], [contract.KNOWN]),
    ])
    n = g.output[0].type.tensor_type.shape.dim[0].dim_param or "N"
    g.output.extend([
        helper.make_tensor_value_info(contract.PROBABILITIES, TensorProto.FLOAT, probabilities_dims or [n, "C"]),
        helper.make_tensor_value_info(contract.KNOWN, TensorProto.BOOL, known_dims or [n]),
        helper.make_tensor_value_info(contract.OPEN_SET_SCORE, TensorProto.FLOAT, score_dims or [n]),
    ][:3 if score_output else 2])
    props = {p.key: p.value for p in proto.metadata_props}
    meta = json.loads(props[contract.METADATA_KEY])
    if threshold is not None:
        meta["open_set"] = {"temperature": temperature, "threshold": threshold, "accept": 0.95, "source": "toy",
                            **({"score": score} if score is not None else {})}
    props[contract.METADATA_KEY] = json.dumps(meta)
    del proto.metadata_props[:]
    helper.set_model_props(proto, props)
    onnx.checker.check_model(proto, full_check=True)
    onnx.save(proto, str(model))
    return model


def reference(scores: np.ndarray, temperature: float, threshold: float | None, weight: float) -> tuple[np.ndarray, ...]:
    """(labels, open_set_score) by openset.decide on the toy's definition of the score."""
    probs = openset.probabilities(scores, temperature)
    value = ((1 - weight) * probs.max(1) + weight * MCM_STAND_IN).astype(np.float32)
    labels, _, _ = openset.decide(scores, temperature, threshold, score=value)
    return labels, value


def predict(olib: ctypes.CDLL, handle, images: np.ndarray, embeddings: int = 0,
            **want: bool) -> tuple[int, dict[str, np.ndarray], str]:
    """sb_predict over packed RGB frames: (rc, the outputs asked for (want: name -> False leaves one out; embeddings:
    their width, 0 for none), sb_last_error)."""
    n, h, w, _ = images.shape
    images = np.ascontiguousarray(images)
    frames = (CFrame * n)()
    for i in range(n):
        frames[i].data[0] = images[i].ctypes.data
        frames[i].size[0] = h * w * 3
        frames[i].width, frames[i].height = w, h
    classes = olib.sb_num_classes(handle)
    out = {"scores": np.zeros((n, classes), np.float32), "labels": np.zeros(n, np.int64),
           "probabilities": np.zeros((n, classes), np.float32), "open_set_score": np.zeros(n, np.float32)}
    out = {k: v for k, v in out.items() if want.get(k, True)}
    if embeddings:
        out["embeddings"] = np.zeros((n, embeddings), np.float32)
    result = Result(**{k: v.ctypes.data for k, v in out.items()})
    rc = olib.sb_predict(handle, None, frames, n, ctypes.byref(result))
    return rc, out, olib.sb_last_error(handle).decode()


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return np.random.default_rng(11).integers(0, 256, (12, 24, 20, 3), np.uint8)


@pytest.fixture(scope="module")
def toy_model(make_model):
    """toy_model(**with_decision options) -> a head-as-data toy model with the decision."""
    return lambda **options: with_decision(make_model(head_as_data=True, seed=4), **options)


@pytest.mark.parametrize("score", openset.SCORES)
def test_c_feeds_the_metadata_score_and_returns_the_graph_open_set_score(olib, toy_model, images, score) -> None:
    """The score the metadata names decides "unknown", at the calibrated threshold, at one of one's own and off."""
    model = toy_model(score=score, weight_input=True)
    weight = openset.mcm_weight(score)
    for params, threshold in (({}, 0.5), ({"unknown": 2, "unknown_threshold": 0.3}, 0.3), ({"unknown": 1}, None)):
        rc, handle, err = c_load(olib, model, **params)
        assert rc == 0, err
        try:
            assert olib.sb_unknown_score(handle).decode() == score
            rc, out, err = predict(olib, handle, images)
            assert rc == 0, err
            labels, value = reference(out["scores"], 0.5, threshold, weight)
            np.testing.assert_allclose(out["open_set_score"], value, rtol=0, atol=1e-6)
            np.testing.assert_array_equal(out["labels"], labels)
        finally:
            olib.sb_close(handle)


def test_the_toy_splits_the_images(olib, toy_model, images) -> None:
    """The max_probability threshold 0.5 calls some images unknown and some known (else the test above proves little)."""
    rc, handle, err = c_load(olib, toy_model())
    assert rc == 0, err
    try:
        rc, out, err = predict(olib, handle, images)
        assert rc == 0 and 0 < (out["labels"] >= 0).sum() < len(images), (err, out["open_set_score"])
    finally:
        olib.sb_close(handle)


def test_an_mcm_model_whose_graph_cannot_compute_it_is_refused(olib, toy_model, images) -> None:
    rc, handle, err = c_load(olib, toy_model(score="mcm", weight_input=False))
    assert (rc, handle.value) == (SB_EMODEL, None) and "'mcm'" in err and "mcm_weight" in err and "re-export" in err, err
    for score in ("energy", None, ""):  # unknown, missing (calibrated models name theirs), empty: as Python
        rc, handle, err = c_load(olib, toy_model(score=score))
        assert (rc, handle.value) == (SB_EMODEL, None) and "no open-set score" in err and "update libsemobridge" in err, err
        with pytest.raises(ModelError, match="open_set"):
            OpenSet.from_dict({"temperature": 0.5, "threshold": 0.5, **({} if score is None else {"score": score})}, "m")
    rc, handle, err = c_load(olib, toy_model(score="max_probability", weight_input=False))  # an export from before
    assert rc == 0, err
    try:
        rc, out, err = predict(olib, handle, images)
        assert rc == 0, err
        np.testing.assert_allclose(out["open_set_score"], reference(out["scores"], 0.5, 0.5, 0.0)[1], rtol=0, atol=1e-6)
    finally:
        olib.sb_close(handle)


def class_file(path: Path, meta: dict | None, seed: int = 7) -> Path:
    """A class file of four classes for the toy model, its open-set metadata replaced by `meta` (None: none)."""
    ClassSet(("a", "b", "c", "d"), *toy_class_set(4, TOY_IDENTITY.embedding_dim, seed)).save(path, TOY_IDENTITY)
    if meta is not None:
        path.write_bytes(encoded(path, meta=meta))
    return path


@pytest.mark.parametrize("model_score", ["max_probability", "mcm"])
def test_a_class_file_brings_its_own_score(olib, toy_model, images, tmp_path, model_score) -> None:
    """A class file's temperature, threshold and score replace the model's (score absent: max_probability); one
    without them keeps the model's."""
    model = toy_model(score=model_score)
    files = {"mcm": ({"temperature": "2.0", "threshold": "0.2", "score": "mcm"}, 2.0, 0.2, "mcm"),
             "max": ({"temperature": "0.25", "threshold": "0.6", "score": "max_probability"}, 0.25, 0.6, "max_probability"),
             "unnamed": ({"temperature": "0.25", "threshold": "0.6"}, 0.25, 0.6, "max_probability"),
             "none": (None, 0.5, 0.5, model_score)}
    rc, handle, err = c_load(olib, model)
    assert rc == 0, err
    try:
        for name, (meta, temperature, threshold, score) in files.items():
            path = class_file(tmp_path / f"{name}.classes", meta)
            assert olib.sb_set_classes(handle, str(path).encode()) == 0, olib.sb_last_error(handle)
            classes = olib.sb_get_classes(handle)
            try:
                assert olib.sb_classes_score(classes) == (None if meta is None else score.encode()), name
            finally:
                olib.sb_release_classes(classes)
            assert olib.sb_unknown_score(handle).decode() == score, name
            assert olib.sb_unknown_threshold(handle) == threshold, name
            rc, out, err = predict(olib, handle, images)
            assert rc == 0, err
            labels, value = reference(out["scores"], temperature, threshold, openset.mcm_weight(score))
            np.testing.assert_allclose(out["open_set_score"], value, rtol=0, atol=1e-6, err_msg=name)
            np.testing.assert_array_equal(out["labels"], labels, err_msg=name)
    finally:
        olib.sb_close(handle)


def test_an_mcm_class_file_on_a_graph_without_mcm_weight_is_refused(olib, toy_model, tmp_path) -> None:
    rc, handle, err = c_load(olib, toy_model(score="max_probability", weight_input=False))
    assert rc == 0, err
    try:
        path = class_file(tmp_path / "mcm.classes", {"temperature": "1.0", "threshold": "0.5", "score": "mcm"})
        assert olib.sb_set_classes(handle, str(path).encode()) == SB_EMODEL
        message = olib.sb_last_error(handle).decode()
        assert "'mcm'" in message and "re-export" in message, message
        assert olib.sb_unknown_score(handle) == b"max_probability"  # the set stays
    finally:
        olib.sb_close(handle)


# ---------------------------------------------------------------- outputs of other shapes than the contract's

@pytest.mark.parametrize(("options", "message"), [
    ({"probabilities_dims": ["N", CLASSES - 1], "narrow": True}, "probabilities have 4 classes but its scores 5"),
    ({"known_dims": ["N", 1]}, "output 'known' has element type 9 and 2 dims, expected 9 and 1"),
    ({"score_dims": ["N", 1]}, "output 'open_set_score' has element type 1 and 2 dims, expected 1 and 1"),
])
def test_c_refuses_decision_outputs_of_other_declared_shapes(olib, make_model, options, message) -> None:
    rc, handle, err = c_load(olib, with_decision(make_model(seed=5), **options))
    assert (rc, handle.value) == (SB_EMODEL, None) and message in err and "re-export" in err, err


@pytest.mark.parametrize(("options", "output", "got"), [
    ({"narrow": True}, "probabilities", "[3, 4]"),  # declared [N, C]: a narrower one is found at run time
])
def test_c_refuses_decision_outputs_of_other_run_shapes(olib, make_model, images, options, output, got) -> None:
    """A graph that declares dynamic dims (its class count is data) and gives other shapes: SB_EMODEL naming the
    output, nothing read."""
    rc, handle, err = c_load(olib, with_decision(make_model(head_as_data=True, seed=5), **options))
    assert rc == 0, err
    try:
        rc, _, err = predict(olib, handle, images[:3])
        assert rc == SB_EMODEL and f"output '{output}' is {got}" in err and "re-export" in err, err
    finally:
        olib.sb_close(handle)


# ---------------------------------------------------------------- an uncalibrated model with a calibrated class file

def test_an_uncalibrated_model_applies_a_class_file_calibration_and_says_so(olib, c_build, toy_model, images,
                                                                            tmp_path) -> None:
    """SB_UNKNOWN_AUTO on a model fitted without calibration: every image known with its fitted classes, a class file's
    own threshold applied (as Python's Classifier does: test_uncalibrated_model_with_a_calibrated_class_file_as_python),
    and the load message says both."""
    model = toy_model(threshold=None)
    done = subprocess.run([c_build / "examples" / "classify", "--open-set-score", model, *write_images(images[:4], tmp_path)],
                          capture_output=True, text=True, check=True)
    assert done.stderr.count("carries no open-set calibration") == 1, done.stderr
    assert "every image gets a class" in done.stderr and "unless a class file brings its own" in done.stderr
    assert "label -1" not in done.stdout and done.stdout.count("  open_set_score ") == 4
    assert all(line.split()[2:] == ["max_probability", "-1"] for line in done.stdout.splitlines()
               if line.startswith("  open_set_score"))  # unknown off
    rc, handle, err = c_load(olib, model)
    assert rc == 0, err
    try:
        assert olib.sb_unknown_threshold(handle) == -1
        rc, out, err = predict(olib, handle, images)
        assert rc == 0 and (out["labels"] >= 0).all(), err
        probe = class_file(tmp_path / "probe.classes", {"temperature": "0.25", "threshold": "0"})
        assert olib.sb_set_classes(handle, str(probe).encode()) == 0, olib.sb_last_error(handle)
        values = np.sort(predict(olib, handle, images)[1]["open_set_score"])
        threshold = float((values[len(values) // 2 - 1] + values[len(values) // 2]) / 2)  # about half unknown
        path = class_file(tmp_path / "own.classes", {"temperature": "0.25", "threshold": repr(threshold)})
        assert olib.sb_set_classes(handle, str(path).encode()) == 0, olib.sb_last_error(handle)
        assert olib.sb_unknown_threshold(handle) == threshold
        rc, out, err = predict(olib, handle, images)
        assert rc == 0, err
        labels, _ = reference(out["scores"], 0.25, threshold, 0.0)
        np.testing.assert_array_equal(out["labels"], labels)
        assert 0 < (labels < 0).sum() < len(labels)
    finally:
        olib.sb_close(handle)


def write_images(images: np.ndarray, folder: Path) -> list[Path]:
    from .test_c_library import write_ppm

    return [write_ppm(folder / f"img{i}.ppm", image) for i, image in enumerate(images)]


# ---------------------------------------------------------------- the same on the tiny open_clip export, C and Python

def uncalibrated(model: Path, out: Path) -> Path:
    """A copy of an export (the files beside it too) as fitted without held-out images: no open_set in its metadata,
    the graph's defaults T = 1, threshold 0 (every image known), mcm_weight 0 (export/fused.py)."""
    out.mkdir()
    for path in model.parent.iterdir():
        if path.is_file() and path.name not in (model.name, contract.sidecar_path(model).name):
            (out / path.name).write_bytes(path.read_bytes())
    proto = onnx.load(str(model))
    defaults = {contract.TEMPERATURE: 1.0, contract.THRESHOLD: 0.0, contract.MCM_WEIGHT: 0.0}
    for tensor in proto.graph.initializer:
        if tensor.name in defaults:
            tensor.CopyFrom(numpy_helper.from_array(np.array(defaults[tensor.name], np.float32), tensor.name))
    for prop in proto.metadata_props:
        if prop.key == contract.METADATA_KEY:
            meta = json.loads(prop.value)
            del meta["open_set"]
            prop.value = json.dumps(meta)
    onnx.save(proto, str(out / model.name))
    contract.sidecar_path(out / model.name).write_text(json.dumps(meta, indent=2))
    return out / model.name


def test_uncalibrated_model_with_a_calibrated_class_file_as_python(olib, real, tmp_path) -> None:
    """An export fitted without calibration, opened with unknown "auto" and a class file that carries its own (written
    by Python after an edit): Python and C both warn that every image gets a class unless a class file brings its
    own, then apply the file's temperature, threshold and score, with the same labels and open-set scores. (Both
    said that every image gets a class, which the class file then contradicted.)"""
    from PIL import Image

    from semobridge_runtime import Classifier

    from .conftest import ENROL_CLASSES
    from .test_classes import shots

    enrol_export, pool = real
    editor = Classifier.load(enrol_export)
    editor.add_class(ENROL_CLASSES[3], shots(pool, ENROL_CLASSES[3]))
    path = tmp_path / "shop.classes"
    editor.save_classes(path)
    model = uncalibrated(enrol_export, tmp_path / "uncalibrated")
    with pytest.warns(UserWarning, match="no open-set calibration") as said:
        clf = Classifier.load(model)
    assert clf.threshold is None and "every image gets a class" in str(said[0].message)
    assert "unless a class file brings its own calibration" in str(said[0].message)
    clf.load_classes(path)
    assert (clf.temperature, clf.threshold) == (editor.temperature, editor.threshold) and clf.threshold > 0
    images = np.stack([np.asarray(Image.open(p).convert("RGB")) for p in sorted((pool / "test").rglob("*.png"))])
    want = clf.predict(images)
    rc, handle, err = c_load(olib, model, classes_path=str(path).encode())
    assert rc == 0, err
    try:
        assert olib.sb_unknown_threshold(handle) == clf.threshold
        assert olib.sb_unknown_score(handle).decode() == getattr(clf, "score", openset.SCORE)
        rc, out, err = predict(olib, handle, images)
        assert rc == 0, err
        np.testing.assert_array_equal(out["labels"], want.labels)
        if hasattr(want, "open_set_score"):
            np.testing.assert_allclose(out["open_set_score"], want.open_set_score, rtol=0, atol=1e-6)
        rc, handle2, err = c_load(olib, model)  # the fitted classes: every image known
        assert rc == 0, err
        rc, out, err = predict(olib, handle2, images)
        olib.sb_close(handle2)
        assert rc == 0 and (out["labels"] >= 0).all(), err
    finally:
        olib.sb_close(handle)

"""One open-set decision, every front-end (issue 20): the graph computes probabilities = softmax(scores / T) and
known = top probability >= threshold once (export/fused.py), so the Python runtime, the C library, semobridge-serve
and the `--formats triton` graph give the same labels (-1: unknown), known and probabilities on the same images,
each checked against the numpy reference semobridge_runtime.openset.decide. A model exported before the graph
decided runs with unknown off in Python and C, and says so once."""

from __future__ import annotations

import importlib.util
import subprocess
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from semobridge_runtime import Classifier, ModelError, contract, openset

from .test_c_library import parse_classify, write_ppm

TOL = 1e-6  # probabilities; each front-end runs one image per model run (ORT's scores move ~1e-7 with the batch)
# The Triton graph holds the class set as constants, which ONNX Runtime folds: its scores differ from the graph's with
# class-set inputs by float32 rounding (up to 1.2e-6 measured at |z| ~ 2), its probabilities by up to 1.04e-6. Its
# decision is checked against the reference on its own scores at TOL.
TRITON_TOL = 2e-6
SIZES = [(40, 48), (40, 48), (33, 57), (64, 64), (21, 30), (40, 48), (90, 70), (33, 57)]


@pytest.fixture(scope="module")
def photos() -> list[np.ndarray]:
    """Noise and flat-colour images (their top probabilities spread, so that a threshold splits them), mixed sizes."""
    rng = np.random.default_rng(20)
    noise = [rng.integers(0, 256, (h, w, 3), np.uint8) for h, w in SIZES]
    flat = [np.broadcast_to(rng.integers(0, 256, (1, 1, 3), np.uint8), (h, w, 3)).copy() for h, w in SIZES]
    return noise + flat


@pytest.fixture(scope="module")
def split(onnx_model: Path, photos) -> float:
    """A threshold between two neighbouring top probabilities near the median: about half the images unknown,
    none on the edge."""
    top = np.sort(Classifier.load(onnx_model, unknown=None).predict(photos).probabilities.max(1))
    i = len(top) // 2
    assert top[i] - top[i - 1] > 1e-4, "no gap near the median: change the images' seed"
    return float((top[i] + top[i - 1]) / 2)


def one_by_one(clf, photos) -> SimpleNamespace:
    """labels, known, probabilities, scores of each image run alone (as the C example and a --max-batch 1 server run)."""
    runs = [clf.predict(image) for image in photos]
    return SimpleNamespace(**{name: np.concatenate([getattr(r, name) for r in runs])
                              for name in ("labels", "known", "probabilities", "scores")})


def reference(scores: np.ndarray, temperature: float, threshold: float | None) -> tuple[np.ndarray, ...]:
    """(labels, known, probabilities) by the numpy reference, from the front-end's own scores."""
    return openset.decide(scores, temperature, threshold)


def check(labels, known, probabilities, scores, temperature: float, threshold: float | None) -> None:
    want_labels, want_known, want_probabilities = reference(scores, temperature, threshold)
    np.testing.assert_array_equal(known, want_known)
    np.testing.assert_array_equal(labels, want_labels)
    np.testing.assert_allclose(probabilities, want_probabilities, rtol=0, atol=TOL)


@pytest.fixture(scope="module")
def python(onnx_model: Path, photos, split: float):
    """The Python runtime's prediction at the split threshold: the one every front-end must equal."""
    clf = Classifier.load(onnx_model, unknown=split)
    batch = clf.predict(photos)
    assert all((name is None) == (label < 0) for name, label in zip(batch.class_names, batch.labels))
    p = one_by_one(clf, photos)
    check(p.labels, p.known, p.probabilities, p.scores, clf.temperature, split)
    assert 0 < p.known.sum() < len(photos), "the threshold splits the images"
    np.testing.assert_array_equal(batch.labels, p.labels)
    return clf, p


def test_python_feeds_the_graph_its_decision(onnx_model: Path, photos, python) -> None:
    """unknown=VALUE, "auto" and None reach the graph as its threshold input; the graph's defaults are the fit's."""
    clf, p = python
    auto = Classifier.load(onnx_model)
    assert auto.threshold is not None and auto.temperature == clf.temperature
    q = auto.predict(photos)
    check(q.labels, q.known, q.probabilities, q.scores, auto.temperature, auto.threshold)
    session = ort.InferenceSession(str(onnx_model), providers=["CPUExecutionProvider"])
    defaults = {i.name for i in session.get_overridable_initializers()}
    assert set(contract.DECISION_INPUTS) <= defaults
    off = one_by_one(Classifier.load(onnx_model, unknown=None), photos)
    assert off.known.all() and (off.labels == off.scores.argmax(1)).all()
    np.testing.assert_allclose(off.probabilities, p.probabilities, rtol=0, atol=TOL)


@pytest.mark.skipif(importlib.util.find_spec("openvino") is None, reason="needs openvino: pip install './runtime[openvino]'")
def test_openvino_keeps_the_decision_inputs(onnx_model: Path, photos, python, split: float) -> None:
    """OpenVINO folds initializer-backed inputs into constants; its backend restores the threshold too, so a
    threshold of one's own still decides there."""
    clf, p = python
    ov = Classifier.load(onnx_model, backend="openvino", openvino_precision="f32", unknown=split)
    got = one_by_one(ov, photos)
    check(got.labels, got.known, got.probabilities, got.scores, clf.temperature, split)
    np.testing.assert_array_equal(got.known, p.known)
    off = one_by_one(Classifier.load(onnx_model, backend="openvino", openvino_precision="f32", unknown=None), photos)
    assert off.known.all()


def test_c_library_agrees(c_build: Path, onnx_model: Path, photos, python, split: float, tmp_path: Path) -> None:
    clf, p = python
    paths = [write_ppm(tmp_path / f"img{i}.ppm", image) for i, image in enumerate(photos)]
    done = subprocess.run([c_build / "examples" / "classify", "--scores", "--probabilities", "--unknown", repr(split),
                           onnx_model, *paths], capture_output=True, text=True, check=True)
    results = parse_classify(done.stdout)
    probabilities = {}
    for line in done.stdout.splitlines():  # parse_classify keeps labels and scores; the probabilities line here
        if line.startswith("  probabilities"):
            probabilities[len(probabilities)] = np.array(line.split()[1:], np.float64)
    labels = np.array([results[str(path)]["label"] for path in paths])
    scores = np.stack([results[str(path)]["scores"] for path in paths])
    got = np.stack([probabilities[i] for i in range(len(paths))])
    np.testing.assert_array_equal(labels, p.labels)
    np.testing.assert_allclose(got, p.probabilities, rtol=0, atol=TOL)
    check(labels, labels >= 0, got, scores, clf.temperature, split)
    auto = subprocess.run([c_build / "examples" / "classify", onnx_model, *paths[:2]], capture_output=True, text=True,
                          check=True)
    assert "unknown" not in auto.stderr  # a calibrated model decides silently


def test_triton_graph_agrees(onnx_model: Path, exported_onnx: Path, photos, python, split: float, tmp_path: Path) -> None:
    """The graph `--formats triton` writes (the calibration as constants), run as Triton's ONNX Runtime backend runs
    it: the export's own at the fit's threshold, and one of a model calibrated at the split threshold."""
    from semobridge_export.tensorrt import class_set_graph

    clf, p = python
    served = exported_onnx / "triton" / "semobridge" / "1" / "model.onnx"
    config = (served.parent.parent / "config.pbtxt").read_text()
    assert 'name: "probabilities"' in config and 'name: "known" data_type: TYPE_BOOL' in config
    auto = Classifier.load(onnx_model)
    for graph, at, want in ((served.read_bytes(), auto.threshold, one_by_one(auto, photos)),
                            (class_set_graph(_calibrated_at(onnx_model, split, tmp_path), as_inputs=False), split, p)):
        session = ort.InferenceSession(graph, providers=["CPUExecutionProvider"])
        assert [i.name for i in session.get_inputs()] == ["image"] and not session.get_overridable_initializers()
        rows = [session.run(["scores", "label", "probabilities", "known"], {"image": image[None]}) for image in photos]
        scores, label, probabilities, known = (np.concatenate(column) for column in zip(*rows))
        np.testing.assert_array_equal(known, want.known)
        np.testing.assert_array_equal(np.where(known, label, -1), want.labels)
        np.testing.assert_array_equal(label, scores.argmax(1))  # the graph's label stays the argmax
        np.testing.assert_allclose(probabilities, want.probabilities, rtol=0, atol=TRITON_TOL)
        check(np.where(known, label, -1), known, probabilities, scores, clf.temperature, at)


def _calibrated_at(model: Path, threshold: float, tmp_path: Path) -> Path:
    """A copy of the model whose calibrated threshold (graph default and metadata) is `threshold`."""
    proto = onnx.load(str(model))
    for tensor in proto.graph.initializer:
        if tensor.name == "threshold":
            tensor.CopyFrom(onnx.numpy_helper.from_array(np.array(threshold, np.float32), "threshold"))
    path = tmp_path / "calibrated.onnx"
    onnx.save(proto, str(path))
    return path


@pytest.mark.skipif(importlib.util.find_spec("pytriton") is None or importlib.util.find_spec("tritonclient") is None,
                    reason="needs the serve extra: pip install './runtime[serve]' (nvidia-pytriton, tritonclient)")
def test_semobridge_serve_agrees(onnx_model: Path, photos, python, split: float, tmp_path: Path) -> None:
    import tritonclient.http as http

    from semobridge_runtime.serve import RemoteClassifier
    from tests.serve.conftest import start_server

    clf, p = python
    served = start_server(onnx_model, tmp_path, "--unknown", repr(split), "--max-batch", "1")
    try:
        with RemoteClassifier(served.grpc) as remote:
            got = remote.predict(photos)
        np.testing.assert_array_equal(got.labels, p.labels)
        np.testing.assert_array_equal(got.known, p.known)
        np.testing.assert_allclose(got.probabilities, p.probabilities, rtol=0, atol=TOL)
        check(got.labels, got.known, got.probabilities, got.scores, clf.temperature, split)
        client = http.InferenceServerClient(served.http.removeprefix("http://"))  # the raw outputs, as any client sees them
        image = photos[int(np.argmin(p.known))][None]
        tensor = http.InferInput("image", list(image.shape), "UINT8")
        tensor.set_data_from_numpy(image)
        raw = client.infer("semobridge", [tensor])
        assert raw.as_numpy("label").tolist() == [[-1]] and raw.as_numpy("class_name").tolist() == [[b""]]
        assert raw.as_numpy("known").tolist() == [[False]] and raw.as_numpy("probabilities").shape == (1, 5)
        client.close()
    finally:
        assert served.stop() == 0, served.stderr()


@pytest.fixture(scope="module")
def old_model(onnx_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The model as exported before the graph decided (the metadata's calibration kept, as exports of that time
    carry it)."""
    from benchmarks.open_set import without_decision

    return without_decision(onnx_model, tmp_path_factory.mktemp("old") / "model.onnx")


def test_an_old_export_runs_with_unknown_off_and_says_so_once(old_model: Path, c_build: Path, photos,
                                                              tmp_path: Path) -> None:
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        clf = Classifier.load(old_model)
        first, second = clf.predict(photos), clf.predict(photos[:3])
    assert len(said) == 1 and "exported before its graph decided" in str(said[0].message)
    assert clf.threshold is None and first.known.all() and second.known.all()
    np.testing.assert_array_equal(first.labels, first.scores.argmax(1))
    check(first.labels, first.known, first.probabilities, first.scores, clf.temperature, None)
    with pytest.raises(ModelError, match="before its graph decided") as refused:
        Classifier.load(old_model, unknown=0.5)  # a threshold it cannot apply
    assert "re-export" in refused.value.hint
    paths = [write_ppm(tmp_path / f"img{i}.ppm", image) for i, image in enumerate(photos[:3])]
    classify = [c_build / "examples" / "classify", "--scores"]
    done = subprocess.run([*classify, old_model, *paths], capture_output=True, text=True, check=True)
    assert done.stderr.count("exported before its graph decided 'unknown'") == 1, done.stderr
    assert [parse_classify(done.stdout)[str(path)]["label"] for path in paths] == first.labels[:3].tolist()
    refused = subprocess.run([*classify, "--probabilities", old_model, paths[0]], capture_output=True, text=True)
    assert refused.returncode == 3 and "re-export" in refused.stderr

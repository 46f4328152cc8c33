"""One open-set decision, every front-end (issue 20): the graph computes probabilities = softmax(scores / T), the
model's chosen abstention score open_set_score = (1 - w)·max probability + w·MCM (w = mcm_weight: 0 for
"max_probability", 1 for "mcm") and known = open_set_score >= threshold once (export/fused.py), so the Python runtime,
the C library, semobridge-serve and the `--formats triton` graph give the same labels (-1: unknown), known,
probabilities and open_set_score on the same images, each checked against the numpy reference
(semobridge_runtime.openset: open_set_score from the blend scores and the cosines of the embedding output with the class
set's text classifier, then decide), for both scores. A model exported before the graph decided runs with unknown off in
Python and C, and says so once; one exported before the chosen score decides on the top probability."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from semobridge_runtime import Classifier, ModelError, contract, openset

from .test_c_library import lib, parse_classify, write_ppm  # noqa: F401  (lib: a fixture)
from .test_c_open_set import olib  # noqa: F401  (a fixture)

TOL = 1e-6  # probabilities; each front-end runs one image per model run (ORT's scores move ~1e-7 with the batch)
# The Triton graph holds the class set as constants, which ONNX Runtime folds: its scores differ from the graph's with
# class-set inputs by float32 rounding (up to 1.2e-6 measured at |z| ~ 2), its probabilities by up to 1.04e-6. Its
# decision is checked against the reference on its own scores at TOL.
TRITON_TOL = 2e-6
SIZES = [(40, 48), (40, 48), (33, 57), (64, 64), (21, 30), (40, 48), (90, 70), (33, 57)]
OUTPUTS = ("labels", "known", "probabilities", "scores", "embeddings", "open_set_score")


@pytest.fixture(scope="module")
def photos() -> list[np.ndarray]:
    """Noise and flat-colour images (their top probabilities spread, so that a threshold splits them), mixed sizes."""
    rng = np.random.default_rng(20)
    noise = [rng.integers(0, 256, (h, w, 3), np.uint8) for h, w in SIZES]
    flat = [np.broadcast_to(rng.integers(0, 256, (1, 1, 3), np.uint8), (h, w, 3)).copy() for h, w in SIZES]
    return noise + flat


def variant(model: Path, out: Path, *, score: str | None = None, threshold: float | None = None,
            old: bool = False) -> Path:
    """A copy of the model (with the files beside it) as exported with another calibration: the abstention score
    `score` (metadata and the mcm_weight input's default) and the threshold (metadata and graph default); `old`: as
    exported before the chosen score (no mcm_weight input, whose initializer stays as the constant it was, no
    open_set_score output, nor in the metadata's output list)."""
    out.mkdir(parents=True, exist_ok=True)
    for path in model.parent.iterdir():
        if path.is_file() and path.name not in (model.name, contract.sidecar_path(model).name):
            shutil.copy(path, out / path.name)
    proto = onnx.load(str(model))
    defaults = {contract.THRESHOLD: threshold, contract.MCM_WEIGHT: None if score is None else openset.mcm_weight(score)}
    for tensor in proto.graph.initializer:
        if defaults.get(tensor.name) is not None:
            tensor.CopyFrom(onnx.numpy_helper.from_array(np.array(defaults[tensor.name], np.float32), tensor.name))
    for prop in proto.metadata_props:
        if prop.key == contract.METADATA_KEY:
            meta = json.loads(prop.value)
            meta["open_set"].update({k: v for k, v in (("score", score), ("threshold", threshold)) if v is not None})
            if old:
                meta["outputs"] = [o for o in meta["outputs"] if o["name"] != contract.OPEN_SET_SCORE]
            prop.value = json.dumps(meta)
    if old:
        for field, name in ((proto.graph.input, contract.MCM_WEIGHT), (proto.graph.output, contract.OPEN_SET_SCORE)):
            kept = [value for value in field if value.name != name]
            del field[:]
            field.extend(kept)
    onnx.save(proto, str(out / model.name))
    return out / model.name


@pytest.fixture(scope="module")
def models(onnx_model: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The exported model choosing each abstention score (openset.SCORES), as the fit would have written it."""
    return {score: variant(onnx_model, tmp_path_factory.mktemp(score), score=score) for score in openset.SCORES}


def one_by_one(clf, photos) -> SimpleNamespace:
    """Every Prediction field of OUTPUTS, each image run alone (as the C example and a --max-batch 1 server run)."""
    runs = [clf.predict(image) for image in photos]
    return SimpleNamespace(**{name: np.concatenate([getattr(r, name) for r in runs]) for name in OUTPUTS})


def reference(scores: np.ndarray, embeddings: np.ndarray, text_classifier: np.ndarray, temperature: float,
              threshold: float | None, score: str) -> tuple[np.ndarray, ...]:
    """(labels, known, probabilities, open_set_score) by the numpy reference, from a front-end's own blend scores and
    embeddings and the class set's text classifier."""
    probabilities = openset.probabilities(scores, temperature)
    abstain = openset.open_set_score(probabilities, embeddings.astype(np.float64) @ text_classifier.T, score)
    return (*openset.decide(scores, temperature, threshold, score=abstain), abstain)


def check(got, text_classifier: np.ndarray, temperature: float, threshold: float | None, score: str,
          embeddings: np.ndarray | None = None) -> None:
    """`got` (labels, known, probabilities, scores, and embeddings and open_set_score where it has them) against the
    reference on its own scores; `embeddings`: the ones to use where `got` has none."""
    mine = getattr(got, "embeddings", None)
    want = reference(got.scores, embeddings if mine is None else mine, text_classifier, temperature, threshold, score)
    np.testing.assert_array_equal(got.known, want[1])
    np.testing.assert_array_equal(got.labels, want[0])
    np.testing.assert_allclose(got.probabilities, want[2], rtol=0, atol=TOL)
    if hasattr(got, "open_set_score"):
        np.testing.assert_allclose(got.open_set_score, want[3], rtol=0, atol=TOL)


def split_of(clf: Classifier, photos) -> float:
    """A threshold between two neighbouring scores (the model's open_set_score) near the median: about half the
    images unknown, none on the edge."""
    top = np.sort(clf.predict(photos).open_set_score)
    i = len(top) // 2
    assert top[i] - top[i - 1] > 1e-4, "no gap near the median: change the images' seed"
    return float((top[i] + top[i - 1]) / 2)


@pytest.fixture(scope="module")
def decided(models: dict[str, Path], photos) -> dict[str, SimpleNamespace]:
    """Per score: the Python runtime's prediction at a threshold that splits the images (`split`), the one every
    front-end must equal; `clf` the classifier, `T` its class set's text classifier."""
    found = {}
    for score, model in models.items():
        split = split_of(Classifier.load(model, unknown=None), photos)
        clf = Classifier.load(model, unknown=split)
        assert clf.score == score and f"unknown={score} < " in repr(clf)
        batch = clf.predict(photos)
        assert all((name is None) == (label < 0) for name, label in zip(batch.class_names, batch.labels))
        p = one_by_one(clf, photos)
        T = clf.classes.text_classifier
        check(p, T, clf.temperature, split, score)
        assert 0 < p.known.sum() < len(photos), "the threshold splits the images"
        np.testing.assert_array_equal(batch.labels, p.labels)
        np.testing.assert_allclose(batch.open_set_score, p.open_set_score, rtol=0, atol=TOL)
        found[score] = SimpleNamespace(clf=clf, p=p, split=split, T=T, model=model)
    return found


def test_the_two_scores_decide_differently(decided) -> None:
    """The models of the two scores are the same graph fed a different mcm_weight: same scores and probabilities,
    open_set_score the top probability for one and MCM for the other (else the test of one would pass for the other)."""
    a, b = (decided[score].p for score in openset.SCORES)
    np.testing.assert_array_equal(a.scores, b.scores)
    np.testing.assert_array_equal(a.open_set_score, a.probabilities.max(1))
    assert np.abs(a.open_set_score - b.open_set_score).max() > 1e-2


@pytest.mark.parametrize("score", openset.SCORES)
def test_python_feeds_the_graph_its_decision(decided, photos, score: str) -> None:
    """unknown=VALUE, "auto" and None reach the graph as its threshold input, the model's score as its mcm_weight;
    the graph's defaults are the fit's."""
    d = decided[score]
    auto = Classifier.load(d.model)
    assert auto.threshold is not None and auto.temperature == d.clf.temperature and auto.score == score
    q = auto.predict(photos)
    check(q, d.T, auto.temperature, auto.threshold, score)
    session = ort.InferenceSession(str(d.model), providers=["CPUExecutionProvider"])
    defaults = {i.name for i in session.get_overridable_initializers()}
    assert set(contract.DECISION_INPUTS) <= defaults
    off = one_by_one(Classifier.load(d.model, unknown=None), photos)
    assert off.known.all() and (off.labels == off.scores.argmax(1)).all()
    np.testing.assert_allclose(off.probabilities, d.p.probabilities, rtol=0, atol=TOL)
    np.testing.assert_allclose(off.open_set_score, d.p.open_set_score, rtol=0, atol=TOL)


@pytest.mark.skipif(importlib.util.find_spec("openvino") is None, reason="needs openvino: pip install './runtime[openvino]'")
@pytest.mark.parametrize("score", openset.SCORES)
def test_openvino_keeps_the_decision_inputs(decided, photos, score: str) -> None:
    """OpenVINO folds initializer-backed inputs into constants; its backend restores the threshold and mcm_weight
    too, so a threshold of one's own still decides there, on the model's score."""
    d = decided[score]
    ov = Classifier.load(d.model, backend="openvino", openvino_precision="f32", unknown=d.split)
    got = one_by_one(ov, photos)
    check(got, d.T, d.clf.temperature, d.split, score)
    np.testing.assert_array_equal(got.known, d.p.known)
    off = one_by_one(Classifier.load(d.model, backend="openvino", openvino_precision="f32", unknown=None), photos)
    assert off.known.all()
    from semobridge_runtime.backends.openvino import OpenVINOBackend

    other = openset.SCORES[1 - openset.SCORES.index(score)]  # the graph fed the other score's mcm_weight
    backend, fed = OpenVINOBackend(d.model, "f32"), {contract.MCM_WEIGHT: np.array(openset.mcm_weight(other), np.float32)}
    names = (contract.SCORES, contract.EMBEDDING, contract.OPEN_SET_SCORE)
    scores, embeddings, abstain = (np.concatenate(c) for c in zip(*(backend.run(image[None], names, fed) for image in photos)))
    want = reference(scores, embeddings, d.T, d.clf.temperature, None, other)[3]
    np.testing.assert_allclose(abstain, want, rtol=0, atol=TOL)
    assert np.abs(abstain - got.open_set_score).max() > 1e-2  # the fed weight, not the folded default, decided


@pytest.mark.parametrize("score", openset.SCORES)
def test_c_library_agrees(c_build: Path, decided, photos, tmp_path: Path, score: str) -> None:
    """The classify example (sb_predict) on the model of each score at its split threshold: labels, probabilities and
    open_set_score equal Python's and the reference's; the score it names and the threshold are the model's."""
    d = decided[score]
    paths = [write_ppm(tmp_path / f"img{i}.ppm", image) for i, image in enumerate(photos)]
    done = subprocess.run([c_build / "examples" / "classify", "--scores", "--probabilities", "--open-set-score",
                           "--unknown", repr(d.split), d.model, *paths], capture_output=True, text=True, check=True)
    results = parse_classify(done.stdout)
    lines = {kind: [line.split()[1:] for line in done.stdout.splitlines() if line.startswith(f"  {kind} ")]
             for kind in ("probabilities", "open_set_score")}  # parse_classify keeps labels and scores
    assert len(lines["open_set_score"]) == len(paths)
    assert all(row[1:] == [score, f"{d.split:.9g}"] for row in lines["open_set_score"]), lines["open_set_score"]
    c = SimpleNamespace(labels=np.array([results[str(path)]["label"] for path in paths]),
                        scores=np.stack([results[str(path)]["scores"] for path in paths]),
                        probabilities=np.array(lines["probabilities"], np.float64),
                        open_set_score=np.array([row[0] for row in lines["open_set_score"]], np.float64))
    c.known = c.labels >= 0
    np.testing.assert_array_equal(c.labels, d.p.labels)
    np.testing.assert_allclose(c.probabilities, d.p.probabilities, rtol=0, atol=TOL)
    np.testing.assert_allclose(c.open_set_score, d.p.open_set_score, rtol=0, atol=TOL)
    check(c, d.T, d.clf.temperature, d.split, score, embeddings=d.p.embeddings)
    auto = subprocess.run([c_build / "examples" / "classify", d.model, *paths[:2]], capture_output=True, text=True,
                          check=True)
    assert "unknown" not in auto.stderr  # a calibrated model decides silently


def test_triton_graph_agrees(onnx_model: Path, exported_onnx: Path, photos, decided, tmp_path: Path) -> None:
    """The graph `--formats triton` writes (the calibration as constants), run as Triton's ONNX Runtime backend runs
    it: the export's own at the fit's threshold and score, and, per score, one of a model calibrated at the split
    threshold."""
    from semobridge_export.tensorrt import class_set_graph

    served = exported_onnx / "triton" / "semobridge" / "1" / "model.onnx"
    config = (served.parent.parent / "config.pbtxt").read_text()
    assert 'name: "probabilities"' in config and 'name: "known" data_type: TYPE_BOOL' in config
    assert 'name: "open_set_score" data_type: TYPE_FP32 dims: [ 1 ] reshape: { shape: [ ] }' in config
    auto = Classifier.load(onnx_model)
    cases = [(served.read_bytes(), auto.score, auto.threshold, one_by_one(auto, photos))]
    for score, d in decided.items():
        model = variant(d.model, tmp_path / score, threshold=d.split)
        cases.append((class_set_graph(model, as_inputs=False), score, d.split, d.p))
    for graph, score, at, want in cases:
        session = ort.InferenceSession(graph, providers=["CPUExecutionProvider"])
        assert [i.name for i in session.get_inputs()] == ["image"] and not session.get_overridable_initializers()
        names = ["scores", "label", "probabilities", "known", "open_set_score", "embedding"]
        rows = [session.run(names, {"image": image[None]}) for image in photos]
        scores, label, probabilities, known, abstain, embeddings = (np.concatenate(column) for column in zip(*rows))
        np.testing.assert_array_equal(known, want.known)
        np.testing.assert_array_equal(np.where(known, label, -1), want.labels)
        np.testing.assert_array_equal(label, scores.argmax(1))  # the graph's label stays the argmax
        np.testing.assert_allclose(probabilities, want.probabilities, rtol=0, atol=TRITON_TOL)
        np.testing.assert_allclose(abstain, want.open_set_score, rtol=0, atol=TRITON_TOL)
        got = SimpleNamespace(labels=np.where(known, label, -1), known=known, probabilities=probabilities, scores=scores,
                              embeddings=embeddings, open_set_score=abstain)
        check(got, decided[score].T, auto.temperature, at, score)


@pytest.mark.skipif(importlib.util.find_spec("pytriton") is None or importlib.util.find_spec("tritonclient") is None,
                    reason="needs the serve extra: pip install './runtime[serve]' (nvidia-pytriton, tritonclient)")
@pytest.mark.parametrize("score", openset.SCORES)
def test_semobridge_serve_agrees(decided, photos, tmp_path: Path, score: str) -> None:
    import tritonclient.http as http

    from semobridge_runtime.serve import RemoteClassifier
    from tests.serve.conftest import start_server

    d = decided[score]
    served = start_server(d.model, tmp_path, "--unknown", repr(d.split), "--max-batch", "1")
    try:
        with RemoteClassifier(served.grpc) as remote:
            got = remote.predict(photos)
        np.testing.assert_array_equal(got.labels, d.p.labels)
        np.testing.assert_array_equal(got.known, d.p.known)
        np.testing.assert_allclose(got.probabilities, d.p.probabilities, rtol=0, atol=TOL)
        np.testing.assert_allclose(got.open_set_score, d.p.open_set_score, rtol=0, atol=TOL)
        check(got, d.T, d.clf.temperature, d.split, score)
        client = http.InferenceServerClient(served.http.removeprefix("http://"))  # the raw outputs, as any client sees them
        i = int(np.argmin(d.p.known))
        tensor = http.InferInput("image", [1, *photos[i].shape], "UINT8")
        tensor.set_data_from_numpy(photos[i][None])
        raw = client.infer("semobridge", [tensor])
        assert raw.as_numpy("label").tolist() == [[-1]] and raw.as_numpy("class_name").tolist() == [[b""]]
        assert raw.as_numpy("known").tolist() == [[False]] and raw.as_numpy("probabilities").shape == (1, 5)
        assert raw.as_numpy("open_set_score").shape == (1, 1) and raw.as_numpy("open_set_score")[0, 0] < d.split
        client.close()
    finally:
        assert served.stop() == 0, served.stderr()


@pytest.fixture(scope="module")
def old_model(models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The model as exported before the graph decided (the metadata's calibration kept, as exports of that time
    carry it)."""
    from benchmarks.open_set import without_decision

    return without_decision(models[openset.SCORE], tmp_path_factory.mktemp("old") / "model.onnx")


def test_an_old_export_runs_with_unknown_off_and_says_so_once(old_model: Path, c_build: Path, photos, decided,
                                                              tmp_path: Path) -> None:
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        clf = Classifier.load(old_model)
        first, second = clf.predict(photos), clf.predict(photos[:3])
    assert len(said) == 1 and "exported before its graph decided" in str(said[0].message)
    assert clf.threshold is None and first.known.all() and second.known.all()
    np.testing.assert_array_equal(first.labels, first.scores.argmax(1))
    check(first, decided[openset.SCORE].T, clf.temperature, None, openset.SCORE)
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


def test_an_export_before_the_chosen_score_decides_on_the_top_probability(models, decided, photos,
                                                                          tmp_path: Path) -> None:
    """A graph with probabilities and known but no mcm_weight input nor open_set_score output (exported before the
    score became a choice) loads as it did, silently: its score is the top calibrated probability, at "auto" and at a
    threshold of one's own, and Prediction.open_set_score gives it."""
    d = decided[openset.SCORE]
    old = variant(models[openset.SCORE], tmp_path / "old", old=True)
    assert contract.MCM_WEIGHT not in {i.name for i in onnx.load(str(old)).graph.input}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        auto, clf = Classifier.load(old), Classifier.load(old, unknown=d.split)
    assert auto.score == clf.score == openset.SCORE and auto.threshold == Classifier.load(d.model).threshold
    got = one_by_one(clf, photos)
    check(got, d.T, clf.temperature, d.split, openset.SCORE)
    for name in OUTPUTS:
        np.testing.assert_allclose(getattr(got, name), getattr(d.p, name), rtol=0, atol=TOL, err_msg=name)
    q = auto.predict(photos)
    check(q, d.T, auto.temperature, auto.threshold, openset.SCORE)


def test_a_model_choosing_mcm_whose_graph_cannot_compute_it_is_refused(models, tmp_path: Path) -> None:
    """Metadata that chose "mcm" on a graph exported before the score (no mcm_weight input) would decide on the top
    probability with MCM's threshold: refused, naming the fix."""
    old = variant(models["mcm"], tmp_path / "old", old=True)
    for unknown in ("auto", 0.5, None):
        with pytest.raises(ModelError, match="'mcm'.*no 'mcm_weight' input") as refused:
            Classifier.load(old, unknown=unknown)
        assert "re-export" in refused.value.hint


def mcm_class_file(clf: Classifier, threshold: float, path: Path) -> Path:
    """The classifier's class set saved as a class file whose calibration chose MCM at `threshold`."""
    from semobridge_runtime import tensorfile

    clf.save_classes(path)
    tensors, meta = tensorfile.read(path)
    path.write_bytes(tensorfile.encode(tensors, {**meta, contract.CLASS_FILE_SCORE: "mcm", "threshold": repr(threshold)}))
    return path


def test_a_class_file_choosing_mcm_on_a_graph_that_cannot_compute_it_is_refused(models, decided, photos,
                                                                                 tmp_path: Path) -> None:
    """On a graph exported before the chosen score, a class file that chose MCM is refused when loaded (naming the
    fix), and the classifier keeps the classes it had."""
    clf = Classifier.load(variant(models[openset.SCORE], tmp_path / "old", old=True))
    before = clf.predict(photos[:4])
    with pytest.raises(ModelError, match="'mcm'.*no 'mcm_weight' input") as refused:
        clf.load_classes(mcm_class_file(clf, decided["mcm"].split, tmp_path / "mcm.safetensors"))
    assert "re-export" in refused.value.hint and clf.score == openset.SCORE
    np.testing.assert_array_equal(clf.predict(photos[:4]).labels, before.labels)


def test_a_class_set_choosing_another_score_is_applied(models, decided, photos, tmp_path: Path) -> None:
    """A class file whose calibration chose MCM, loaded into a model that chose the top probability (and the other
    way round): its score is fed to the graph (mcm_weight) and its threshold applies to it, so the predictions are
    those of a model that chose that score; Classifier.score and the repr say which."""
    from semobridge_runtime import tensorfile

    for model_score, file_score in zip(openset.SCORES, reversed(openset.SCORES)):
        clf = Classifier.load(models[model_score])
        assert clf.score == model_score
        clf.save_classes(tmp_path / "fitted.safetensors")
        tensors, meta = tensorfile.read(tmp_path / "fitted.safetensors")
        want = decided[file_score]
        meta.update({contract.CLASS_FILE_SCORE: file_score, "threshold": repr(want.split)})
        path = tmp_path / f"{file_score}.safetensors"
        path.write_bytes(tensorfile.encode(tensors, meta))
        clf.load_classes(path)
        assert clf.score == file_score and clf.threshold == want.split and f"unknown={file_score} < " in repr(clf)
        got = one_by_one(clf, photos)
        check(got, want.T, clf.temperature, want.split, file_score)
        for name in OUTPUTS:
            np.testing.assert_allclose(getattr(got, name), getattr(want.p, name), rtol=0, atol=TOL, err_msg=name)


# ---------------------------------------------------------------- the C library on the same models (sb_predict)

def c_one_by_one(olib, model: Path, photos, **params) -> SimpleNamespace:
    """labels, known, probabilities, scores, embeddings and open_set_score from the C library (sb_predict through
    ctypes), each image run alone; with `score` and `threshold`: the ones it says are in force."""
    from .test_c_library import c_load
    from .test_c_open_set import predict

    rc, handle, err = c_load(olib, model, **params)
    assert rc == 0, err
    try:
        runs = []
        for image in photos:
            rc, out, err = predict(olib, handle, image[None], embeddings=olib.sb_embedding_dim(handle))
            assert rc == 0, err
            runs.append(out)
        got = SimpleNamespace(**{name: np.concatenate([run[name] for run in runs]) for name in runs[0]})
        got.known, got.score = got.labels >= 0, olib.sb_unknown_score(handle).decode()
        got.threshold = olib.sb_unknown_threshold(handle)
        return got
    finally:
        olib.sb_close(handle)


def assert_c_equals(got: SimpleNamespace, want: SimpleNamespace) -> None:
    np.testing.assert_array_equal(got.labels, want.labels)
    for name in ("probabilities", "open_set_score", "embeddings"):
        np.testing.assert_allclose(getattr(got, name), getattr(want, name), rtol=0, atol=TOL, err_msg=name)


def test_c_on_an_export_before_the_chosen_score(olib, models, decided, photos, tmp_path: Path, capfd) -> None:
    """The C side of test_an_export_before_the_chosen_score_decides_on_the_top_probability: such a graph opens
    silently, decides on the top probability, and sb_predict's open_set_score gives it, as Python's."""
    d = decided[openset.SCORE]
    old = variant(models[openset.SCORE], tmp_path / "old", old=True)
    got = c_one_by_one(olib, old, photos, unknown=2, unknown_threshold=d.split)
    assert (got.score, got.threshold) == (openset.SCORE, d.split) and "semobridge" not in capfd.readouterr().err
    assert_c_equals(got, d.p)
    check(got, d.T, d.clf.temperature, d.split, openset.SCORE)


def test_c_refuses_mcm_on_a_graph_that_cannot_compute_it(olib, models, tmp_path: Path) -> None:
    """The C side of test_a_model_choosing_mcm_whose_graph_cannot_compute_it_is_refused, for every `unknown`."""
    from .test_c_library import c_load

    old = variant(models["mcm"], tmp_path / "old", old=True)
    for params in ({}, {"unknown": 2, "unknown_threshold": 0.5}, {"unknown": 1}):
        rc, handle, err = c_load(olib, old, **params)
        assert (rc, handle.value) == (-2, None), err
        assert "'mcm'" in err and "no 'mcm_weight' input" in err and "re-export" in err, err


def test_c_applies_a_class_set_choosing_another_score(olib, models, decided, photos, tmp_path: Path) -> None:
    """The C side of test_a_class_set_choosing_another_score_is_applied: the class file's score reaches the graph's
    mcm_weight and its threshold decides, so C predicts as the model that chose that score (and as Python)."""
    from semobridge_runtime import tensorfile

    for model_score, file_score in zip(openset.SCORES, reversed(openset.SCORES)):
        Classifier.load(models[model_score]).save_classes(tmp_path / "fitted.safetensors")
        tensors, meta = tensorfile.read(tmp_path / "fitted.safetensors")
        want = decided[file_score]
        meta.update({contract.CLASS_FILE_SCORE: file_score, "threshold": repr(want.split)})
        path = tmp_path / f"{file_score}.safetensors"
        path.write_bytes(tensorfile.encode(tensors, meta))
        got = c_one_by_one(olib, models[model_score], photos, classes_path=str(path).encode())
        assert (got.score, got.threshold) == (file_score, want.split)
        assert_c_equals(got, want.p)
        check(got, want.T, want.clf.temperature, want.split, file_score)


def test_enrolment_on_a_graph_before_the_chosen_score_chooses_among_the_scores_it_computes(models, photos,
                                                                                          tmp_path: Path) -> None:
    """An edit recalibrates the class set and may choose MCM (it does here on the current graph); on a graph exported
    before the score became a choice it chooses the top probability, the one score that graph computes (it chose
    MCM, and every prediction after the edit raised the graph's ModelError)."""
    new = Classifier.load(models[openset.SCORE])
    old = Classifier.load(variant(models[openset.SCORE], tmp_path / "old", old=True))
    for clf in (new, old):
        clf.remove_class(clf.class_names[-1])
    assert new.score == "mcm" and old.score == openset.SCORE
    got = old.predict(photos[:4])
    assert got.known.dtype == bool and len(got.labels) == 4


def test_a_threshold_of_ones_own_stays_on_the_models_score(olib, models, decided, photos, tmp_path: Path) -> None:
    """unknown=VALUE (C: SB_UNKNOWN_THRESHOLD) is a threshold on the model's score: a class file that chose the other
    score does not move it there (it did: MCM's values sit just above 1/C, so a threshold given for the top
    probability called every image unknown). Python and C predict as the model itself at that threshold."""
    d = decided[openset.SCORE]
    clf = Classifier.load(models[openset.SCORE], unknown=d.split)
    path = mcm_class_file(clf, decided["mcm"].split, tmp_path / "mcm.safetensors")
    clf.load_classes(path)
    assert (clf.score, clf.threshold) == (openset.SCORE, d.split)
    got = one_by_one(clf, photos)
    check(got, d.T, clf.temperature, d.split, openset.SCORE)
    np.testing.assert_array_equal(got.labels, d.p.labels)
    c = c_one_by_one(olib, models[openset.SCORE], photos, unknown=2, unknown_threshold=d.split,
                     classes_path=str(path).encode())
    assert (c.score, c.threshold) == (openset.SCORE, d.split)
    assert_c_equals(c, d.p)

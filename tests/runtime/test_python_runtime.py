"""semobridge_runtime.Classifier: parity with plain ONNX Runtime, input forms, batching, threads."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from PIL import Image

from semobridge_runtime import Classifier, Prediction

CPU = ["CPUExecutionProvider"]


def reference(model: Path, batch: np.ndarray) -> dict[str, np.ndarray]:
    """Outputs of a plain InferenceSession on the same file and provider; `label` as a plain ONNX Runtime user must
    read it: the graph's argmax, -1 where its `known` output is false."""
    session = ort.InferenceSession(str(model), providers=CPU)
    names = ["scores", "label", "embedding"] + (["known"] if "known" in {o.name for o in session.get_outputs()} else [])
    scores, label, embedding, *known = session.run(names, {"image": batch})
    return {"scores": scores, "label": np.where(known[0], label, -1) if known else label, "embedding": embedding}


def test_parity_with_plain_onnxruntime(onnx_model: Path, images: list[np.ndarray]) -> None:
    clf = Classifier.load(onnx_model, providers=CPU)
    result = clf.predict(images)
    for i, image in enumerate(images):
        ref = reference(onnx_model, image[None])
        assert result.labels[i] == ref["label"][0]
        np.testing.assert_allclose(result.scores[i], ref["scores"][0], rtol=0, atol=1e-5)
        np.testing.assert_allclose(result.embeddings[i], ref["embedding"][0], rtol=0, atol=1e-5)
    batch = np.stack([images[0], images[2]])
    ref = reference(onnx_model, batch)
    batched = clf.predict(batch)
    np.testing.assert_array_equal(batched.labels, ref["label"])
    np.testing.assert_allclose(batched.scores, ref["scores"], rtol=0, atol=1e-5)


def test_metadata_and_repr(onnx_model: Path) -> None:
    meta = json.loads({p.key: p.value for p in onnx.load(str(onnx_model)).metadata_props}["semobridge"])
    clf = Classifier.load(onnx_model)
    assert clf.class_names == meta["class_names"]
    assert clf.info.embedding_dim == meta["embedding_dim"]
    assert clf.providers[-1] == "CPUExecutionProvider"
    assert "CPUExecutionProvider" in repr(clf)


def test_result_fields(contract_onnx: Path, images: list[np.ndarray]) -> None:
    clf = Classifier.load(contract_onnx)
    result = clf.predict(images, top_k=3)
    n, c = len(images), len(clf.class_names)
    assert isinstance(result, Prediction) and len(result) == n
    assert result.scores.shape == (n, c) and result.scores.dtype == np.float32
    np.testing.assert_array_equal(result.labels, result.scores.argmax(axis=1))
    assert result.class_names == [clf.class_names[i] for i in result.labels]
    k = min(3, c)
    assert result.top_k.indices.shape == (n, k) and result.top_k.scores.shape == (n, k)
    np.testing.assert_array_equal(result.top_k.indices[:, 0], result.labels)
    assert np.all(np.diff(result.top_k.scores, axis=1) <= 0)
    assert result.top_k.names[0] == [clf.class_names[i] for i in result.top_k.indices[0]]
    assert clf.predict(images[0], top_k=10_000).top_k.indices.shape == (1, c)


def test_embed(contract_onnx: Path, images: list[np.ndarray]) -> None:
    clf = Classifier.load(contract_onnx)
    embeddings = clf.embed(images)
    assert embeddings.shape == (len(images), clf.info.embedding_dim)
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(embeddings, clf.predict(images).embeddings, atol=1e-6)


def test_input_forms_agree(contract_onnx: Path, images: list[np.ndarray], tmp_path: Path) -> None:
    clf = Classifier.load(contract_onnx)
    image = images[3]
    path = tmp_path / "image.png"
    Image.fromarray(image).save(path)
    expected = clf.predict(image[None]).scores
    for form in (image, [image], path, str(path), [path], Image.fromarray(image)):
        np.testing.assert_allclose(clf.predict(form).scores, expected, atol=1e-6)


def test_channel_conversions(contract_onnx: Path, images: list[np.ndarray]) -> None:
    clf = Classifier.load(contract_onnx)
    gray = images[0][:, :, 0]
    rgb_gray = np.repeat(gray[:, :, None], 3, axis=2)
    expected = clf.predict(rgb_gray).scores
    np.testing.assert_allclose(clf.predict(gray).scores, expected, atol=1e-6)
    np.testing.assert_allclose(clf.predict(gray[:, :, None]).scores, expected, atol=1e-6)
    rgba = np.concatenate([images[0], np.zeros_like(images[0][:, :, :1])], axis=2)
    np.testing.assert_allclose(clf.predict(rgba).scores, clf.predict(images[0]).scores, atol=1e-6)


def test_static_batch_is_split_and_padded(make_model, images: list[np.ndarray]) -> None:
    dynamic = Classifier.load(make_model(seed=3))
    static = Classifier.load(make_model(seed=3, batch=2))
    assert static.max_batch == 2 and dynamic.max_batch is None
    batch = np.stack([images[0]] * 2 + [images[2]] * 3)
    np.testing.assert_allclose(static.predict(batch).scores, dynamic.predict(batch).scores, atol=1e-6)
    np.testing.assert_allclose(static.predict(images).scores, dynamic.predict(images).scores, atol=1e-6)
    np.testing.assert_allclose(static.embed(images[1]), dynamic.embed(images[1]), atol=1e-6)


def test_fixed_size_model(make_model) -> None:
    clf = Classifier.load(make_model(fixed_size=(24, 20)))
    assert clf.fixed_size == (24, 20)
    assert clf.predict(np.zeros((3, 24, 20, 3), np.uint8)).scores.shape[0] == 3


def test_float_variant(make_model) -> None:
    path = make_model(kind="float")
    clf = Classifier.load(path)
    x = np.random.default_rng(0).standard_normal((3, 3, 32, 32)).astype(np.float32)
    ref = reference(path, x)
    result = clf.predict(x)
    np.testing.assert_array_equal(result.labels, ref["label"])
    np.testing.assert_allclose(result.scores, ref["scores"], atol=1e-5)
    assert clf.embed(x).shape == (3, clf.info.embedding_dim)


def test_thread_settings_reach_the_session(onnx_model: Path, images: list[np.ndarray]) -> None:
    spin_key = "session.intra_op.allow_spinning"
    default = Classifier.load(onnx_model, providers=["CPUExecutionProvider"])
    quiet = Classifier.load(onnx_model, providers=["CPUExecutionProvider"], intra_op_num_threads=1, allow_spinning=False)
    assert default._backend._session.get_session_options().get_session_config_entry(spin_key) == "1"
    options = quiet._backend._session.get_session_options()
    assert options.get_session_config_entry(spin_key) == "0" and options.intra_op_num_threads == 1
    np.testing.assert_allclose(quiet.predict(images).scores, default.predict(images).scores, rtol=0, atol=1e-5)


def test_threads_match_sequential(onnx_model: Path, images: list[np.ndarray]) -> None:
    clf = Classifier.load(onnx_model)
    jobs = []
    for i in range(48):
        image = images[i % len(images)] + np.uint8(i)  # wraps around: a distinct image per job
        jobs.append(image if i % 3 else [image, images[(i + 1) % len(images)]])
    sequential = [clf.predict(job).scores for job in jobs]
    with ThreadPoolExecutor(max_workers=8) as pool:
        parallel = list(pool.map(lambda job: clf.predict(job).scores, jobs))
    for a, b in zip(sequential, parallel):
        np.testing.assert_array_equal(a, b)

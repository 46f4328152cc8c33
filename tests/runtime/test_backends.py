"""Every installed backend runs the exported graph as the fp32 graph in ONNX Runtime does: exact preprocessing,
the class set honoured (enrolled classes, class files), the same labels; and Classifier.load's automatic choice.

Backends that are not installed are skipped with the reason (OpenVINO: pip install 'semobridge-runtime[openvino]').
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from semobridge_runtime import Classifier, InputError
from semobridge_runtime.backends import choice

from .test_runtime_telemetry import clean_env, written  # noqa: F401  (clean_env: a fixture)

NO_OPENVINO = importlib.util.find_spec("openvino") is None
needs_openvino = pytest.mark.skipif(NO_OPENVINO, reason="openvino not installed (pip install 'semobridge-runtime[openvino]')")
#: (backend, model file, Classifier.load options, |score - fp32 score| allowed)
BACKENDS = {
    "onnxruntime-fp32": ("onnxruntime", "model.onnx", {"prefer_int8": False}, 1e-5),
    "onnxruntime-int8": ("onnxruntime", "model_int8.onnx", {}, 5e-2),
    "openvino-auto": ("openvino", "model.onnx", {}, 5e-2),  # bf16 on CPUs that compute bf16, else f32
    "openvino-f32": ("openvino", "model.onnx", {"openvino_precision": "f32"}, 1e-4),
    # static int8: activations clip at the ranges NNCF calibrated on the export's 32 smooth check images, and these
    # noisy photos lie outside them (measured: |score difference| 0.072, embedding cosine 0.9975 at worst)
    "openvino-int8": ("openvino", "model.onnx", {"openvino_precision": "int8"}, 0.1),
}
MIN_COSINE = {"openvino-int8": 0.995}  # else 0.999
NO_INT8_IR = "no OpenVINO int8 IR in the export: nncf was not installed (pip install 'semobridge[nncf]')"


def skip_without_int8_ir(folder: Path) -> None:
    if NO_OPENVINO:
        pytest.skip("openvino not installed (pip install 'semobridge-runtime[openvino]')")
    if not (folder / "model_openvino_int8.xml").is_file():
        pytest.skip(NO_INT8_IR)


def photos(n: int, seed: int) -> list[np.ndarray]:
    """Smooth random photos of varied sizes (down- and upscaled by the graph)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        h, w = (int(v) for v in rng.integers(60, 700, 2))
        low = rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)
        smooth = np.asarray(Image.fromarray(low).resize((w, h), Image.BICUBIC)).astype(np.int16)
        out.append(np.clip(smooth + rng.integers(-12, 13, smooth.shape), 0, 255).astype(np.uint8))
    return out


def pil_reference(photo: np.ndarray, size: int) -> np.ndarray:
    """open_clip's resize (shorter side to `size`, PIL bicubic, horizontal pass then vertical) and centre crop, as
    grey levels [3, S, S] (tests/export/test_preprocess.py's reference)."""
    h, w = photo.shape[:2]
    new_h, new_w = size * h // min(h, w), size * w // min(h, w)
    resized = np.asarray(Image.fromarray(photo).resize((new_w, h), Image.BICUBIC).resize((new_w, new_h), Image.BICUBIC))
    top, left = int(round((new_h - size) / 2.0)), int(round((new_w - size) / 2.0))
    return resized[top:top + size, left:left + size].astype(np.float32).transpose(2, 0, 1)


@pytest.fixture(scope="module", params=list(BACKENDS))
def loaded(request: pytest.FixtureRequest, exported_onnx: Path) -> tuple[str, Classifier, float]:
    name = request.param
    backend, file, options, tolerance = BACKENDS[name]
    if backend == "openvino" and NO_OPENVINO:
        pytest.skip("openvino not installed (pip install 'semobridge-runtime[openvino]')")
    if options.get("openvino_precision") == "int8":
        skip_without_int8_ir(exported_onnx)
    return name, Classifier.load(exported_onnx / file, backend=backend, **options), tolerance


@pytest.fixture(scope="module")
def fp32(exported_onnx: Path) -> Classifier:
    return Classifier.load(exported_onnx / "model.onnx", backend="onnxruntime", prefer_int8=False)


def test_labels_and_embeddings_agree_with_fp32(loaded, fp32: Classifier) -> None:
    name, clf, tolerance = loaded
    images = photos(12, seed=1)
    got, want = clf.predict(images), fp32.predict(images)
    assert np.abs(got.scores - want.scores).max() <= tolerance, name
    top = np.sort(want.scores, axis=1)
    clear = top[:, -1] - top[:, -2] > 2 * tolerance  # labels that a difference within the tolerance cannot flip
    np.testing.assert_array_equal(got.labels[clear], want.labels[clear])
    cosine = (got.embeddings * want.embeddings).sum(1)  # both L2-normalised
    assert cosine.min() > MIN_COSINE.get(name, 0.999), f"{name}: {cosine.min()}"


@pytest.fixture(scope="module")
def edited_classes(exported_onnx: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A class file: the fitted classes without 'red fox', with 'enrolled' (from two photos)."""
    clf = Classifier.load(exported_onnx / "model.onnx", backend="onnxruntime", prefer_int8=False)
    clf.remove_class("red fox")
    clf.add_class("enrolled", photos(2, seed=2), prompts=["a photo of an enrolled thing."])
    path = tmp_path_factory.mktemp("classes") / "edited.classes"
    clf.save_classes(path)
    return path


@pytest.fixture(scope="module")
def fitted_classes(exported_onnx: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A class file of the fitted classes (to give the shared classifiers their classes back)."""
    path = tmp_path_factory.mktemp("classes") / "fitted.classes"
    Classifier.load(exported_onnx / "model.onnx", backend="onnxruntime", prefer_int8=False).save_classes(path)
    return path


def test_class_sets_are_honoured(loaded, edited_classes: Path, fitted_classes: Path, exported_onnx: Path) -> None:
    """A class file with an enrolled class and without a fitted one changes the scores as on the fp32 graph."""
    name, clf, tolerance = loaded
    fp32 = Classifier.load(exported_onnx / "model.onnx", backend="onnxruntime", prefer_int8=False, classes=edited_classes)
    images = photos(4, seed=2)
    fitted = clf.predict(images)
    clf.load_classes(edited_classes)
    try:
        got, want = clf.predict(images), fp32.predict(images)
        assert got.class_names == want.class_names and got.scores.shape == (4, 5), name
        assert "enrolled" in clf.class_names and "red fox" not in clf.class_names
        np.testing.assert_array_equal(got.labels, want.labels)
        assert np.abs(got.scores - want.scores).max() <= tolerance, name
        assert [n for n in got.class_names if n not in fitted.class_names], "the class file was ignored"
    finally:
        clf.load_classes(fitted_classes)


@needs_openvino
@pytest.mark.parametrize("precision", ["auto", "f32", "int8"])
def test_openvino_preprocessing_is_exact(exported_onnx: Path, precision: str) -> None:
    """OpenVINO's bf16 ran the in-graph resize in bf16 (12 grey levels off PIL); split off, it stays f32."""
    from semobridge_runtime.backends.openvino import OpenVINOBackend

    if precision == "int8":
        skip_without_int8_ir(exported_onnx)
    backend = OpenVINOBackend(exported_onnx / "model.onnx", precision)
    size, info = backend.info.image_size, backend.info
    mean, std = (np.array(v, np.float32).reshape(3, 1, 1) * 255 for v in (info.mean, info.std))
    for photo in [*photos(4, seed=3), photos(1, seed=4)[0][:, :40]]:
        got = backend.preprocess(photo[None])[0] * std + mean
        diff = np.abs(got - pil_reference(photo, size))
        assert diff.max() <= 1.0 + 1e-3 and (diff > 0.5).mean() < 1e-3, (photo.shape, diff.max())


@needs_openvino
def test_openvino_cuts_the_graph_at_the_encoders_input(exported_onnx: Path) -> None:
    """The model past the preprocessing (what the export quantises to int8) takes the pixels and the class-set and
    decision inputs; fitted_inputs are the graph's own defaults (its initializers), as writeable copies."""
    import onnx
    from onnx import numpy_helper

    from semobridge_runtime.backends.openvino import PIXELS, OpenVINOBackend, import_openvino, input_names, read_parts

    path = exported_onnx / "model.onnx"
    ov = import_openvino()
    parts, plain = read_parts(ov, ov.Core(), path), OpenVINOBackend(path, "f32")
    assert input_names(parts.rest) == {PIXELS, *plain.fitted_inputs} and len(plain.fitted_inputs) >= 2
    assert [p.get_friendly_name() for p in parts.pre.get_parameters()] == ["image"]
    defaults = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(path)).graph.initializer}
    for name, value in plain.fitted_inputs.items():
        np.testing.assert_array_equal(value, defaults[name])
        value[...] = 0  # a copy: the backend's defaults are not changed
    assert all(np.array_equal(v, defaults[k]) for k, v in plain.fitted_inputs.items())


@needs_openvino
def test_openvino_refuses_images_its_32_bit_indices_cannot_resize(exported_onnx: Path) -> None:
    """16x16384 came out wrong on 99 % of its pixels (OpenVINO computes the int64 index arithmetic in int32)."""
    from semobridge_runtime.backends.openvino import INDEX_LIMIT, OpenVINOBackend, resize_index_bound

    backend = OpenVINOBackend(exported_onnx / "model.onnx")
    S = backend.info.image_size
    assert resize_index_bound(16, 16384, S) >= INDEX_LIMIT > resize_index_bound(64, 16384, S)
    with pytest.raises(InputError, match="2\\*\\*31") as err:
        backend.run(np.zeros((1, 16, 16384, 3), np.uint8), ("label",))
    assert "backend='onnxruntime'" in err.value.hint
    photo = np.asarray(Image.fromarray(photos(1, seed=5)[0]).resize((16384, 64), Image.BICUBIC))  # just inside: exact
    mean, std = (np.array(v, np.float32).reshape(3, 1, 1) * 255 for v in (backend.info.mean, backend.info.std))
    assert np.abs(backend.preprocess(photo[None])[0] * std + mean - pil_reference(photo, S)).max() <= 1.0 + 1e-3


@needs_openvino
def test_export_records_openvino_against_fp32(exported_onnx: Path) -> None:
    """--int8-cpu with openvino installed measures OpenVINO's labels and embedding cosine (in the file and the sidecar)."""
    measured = json.loads((exported_onnx / "model.json").read_text())["openvino"]
    assert measured["precision"] in ("bf16", "f32") and measured["images"] > 0
    # the random-weight tiny model's classes are near ties: bf16 flips a few (auto then keeps ONNX Runtime)
    assert 0.5 <= measured["label_agreement"] <= 1.0 and 0.999 < measured["min_cosine"] <= 1.0
    assert Classifier.load(exported_onnx / "model.onnx", prefer_int8=False).info.to_dict()["openvino"] == measured


@pytest.fixture()
def folder(exported_onnx: Path, tmp_path: Path) -> Path:
    for name in ("model.onnx", "model.json", "model_int8.onnx", "model_int8.json"):
        shutil.copy(exported_onnx / name, tmp_path / name)
    return tmp_path


@pytest.mark.parametrize("amx, measured, installed, expect", [
    (True, {"precision": "bf16", "label_agreement": 1.0, "min_cosine": 0.9999}, True, "openvino"),
    (False, {"precision": "bf16", "label_agreement": 1.0, "min_cosine": 0.9999}, True, "onnxruntime"),  # no AMX
    (True, {"precision": "bf16", "label_agreement": 0.97, "min_cosine": 0.99}, True, "onnxruntime"),  # labels differ
    (True, None, True, "onnxruntime"),  # not measured
    (True, {"precision": "bf16", "label_agreement": 1.0, "min_cosine": 0.9999}, False, "onnxruntime"),  # not installed
])
def test_auto_takes_openvino_only_on_amx_where_the_export_measured_it(folder: Path, monkeypatch, amx, measured,
                                                                       installed, expect) -> None:
    meta = json.loads((folder / "model.json").read_text())
    meta.pop("openvino", None)
    (folder / "model.json").write_text(json.dumps({**meta, **({"openvino": measured} if measured else {})}))
    monkeypatch.setattr(choice, "cpu_flags", lambda: frozenset({"avx512f", "amx_bf16"} if amx else {"avx512f", "avx512_bf16"}))
    real = choice.importlib.util.find_spec
    monkeypatch.setattr(choice.importlib.util, "find_spec", lambda name: real(name) if installed and name == "openvino" else None)
    picked = choice.choose(folder / "model.onnx", "auto", None, prefer_int8=True)
    assert picked.backend == expect, picked.reason
    assert picked.path.name == ("model.onnx" if expect == "openvino" else "model_int8.onnx")
    if expect == "openvino" and not NO_OPENVINO:
        clf = Classifier.load(folder / "model.onnx")
        assert "backend='openvino'" in repr(clf) and "why='AMX; OpenVINO bf16 agreed with fp32 on 100.0%" in repr(clf)
    elif expect == "onnxruntime":
        assert picked.reason.startswith("not openvino: ")


def test_the_repr_says_why_onnxruntime_runs(exported_onnx: Path, monkeypatch) -> None:
    monkeypatch.setattr(choice, "cpu_flags", lambda: frozenset({"avx512f", "avx512_bf16"}))
    clf = Classifier.load(exported_onnx / "model.onnx")
    assert "why='not openvino: " in repr(clf) and "backend='onnxruntime'" in repr(clf)
    assert "why='asked for'" in repr(Classifier.load(exported_onnx / "model.onnx", backend="onnxruntime"))


def test_an_unknown_backend_is_refused(exported_onnx: Path) -> None:
    with pytest.raises(InputError, match="unknown backend 'openvno'") as err:
        Classifier.load(exported_onnx / "model.onnx", backend="openvno")
    assert "'openvino'" in err.value.hint


@needs_openvino
def test_openvino_writes_nothing_but_its_cache_where_asked(clean_env, onnx_model: Path, tmp_path: Path) -> None:  # noqa: F811
    env, folders = clean_env
    cache = tmp_path / "ov-cache"
    for options in ("", f", openvino_cache={str(cache)!r}"):
        code = ("import numpy as np; from semobridge_runtime import Classifier; "
                f"print(Classifier.load({str(onnx_model)!r}, backend='openvino'{options}).predict(np.zeros((8, 8, 3), np.uint8)).labels)")
        subprocess.run([sys.executable, "-c", code], env=env, check=True, capture_output=True)
    assert written(folders) == []
    assert any(cache.iterdir()), "the cache folder stayed empty"

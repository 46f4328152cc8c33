"""Class sets in the C library: class files written by Python, refusals, concurrent swaps, valgrind and sanitizers.

The parity tests use the tiny open_clip export (`enrol_export`, the full install); the rest a toy graph that takes
its class set as data (contract_model.py, `head_as_data`), fast enough for valgrind.
"""

from __future__ import annotations

import ctypes
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

from semobridge_runtime import Classifier, ModelError, tensorfile
from semobridge_runtime.classes import ClassSet

from .conftest import C_DIR
from .contract_model import TOY_IDENTITY, toy_class_set
from .test_c_library import VALGRIND, error_case_args, lib, parse_classify, write_ppm  # noqa: F401  (fixtures)
from .test_runtime_files import within_timeout

SB_EINVAL, SB_EMODEL = -1, -2
TOY = TOY_IDENTITY


# ---------------------------------------------------------------- the C library through ctypes

@pytest.fixture(scope="module")
def clib(lib: ctypes.CDLL) -> ctypes.CDLL:
    lib.sb_set_classes.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
    lib.sb_get_classes.restype = ctypes.c_void_p
    lib.sb_get_classes.argtypes = [ctypes.c_void_p]
    lib.sb_release_classes.argtypes = [ctypes.c_void_p]
    lib.sb_classes_count.argtypes = [ctypes.c_void_p]
    lib.sb_classes_name.argtypes = [ctypes.c_void_p, ctypes.c_int]
    lib.sb_classes_name.restype = ctypes.c_char_p
    lib.sb_classify_with.argtypes = [ctypes.c_void_p] * 3 + [ctypes.c_int] * 4 + [ctypes.c_void_p] * 2
    return lib


class CModel:
    """A model opened by the C library (closed on exit)."""

    def __init__(self, lib: ctypes.CDLL, path: Path, classes: Path | None = None):
        self.lib, params, err = lib, lib.sb_default_params(), ctypes.create_string_buffer(512)
        params.classes_path = str(classes).encode() if classes else None
        self.handle = ctypes.c_void_p()
        rc = lib.sb_load(str(path).encode(), params, ctypes.byref(self.handle), err, len(err))
        assert rc == 0, err.value.decode()

    def __enter__(self) -> "CModel":
        return self

    def __exit__(self, *exc) -> None:
        self.lib.sb_close(self.handle)

    def set_classes(self, path: Path | None) -> tuple[int, str]:
        rc = self.lib.sb_set_classes(self.handle, str(path).encode() if path is not None else None)
        return rc, self.lib.sb_last_error(self.handle).decode()

    @property
    def names(self) -> list[str]:
        return [self.lib.sb_class_name(self.handle, i).decode() for i in range(self.lib.sb_num_classes(self.handle))]

    def classify(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        n, h, w, _ = images.shape
        images = np.ascontiguousarray(images)
        scores, labels = np.empty((n, self.lib.sb_num_classes(self.handle)), np.float32), np.empty(n, np.int64)
        rc = self.lib.sb_classify(self.handle, images.ctypes.data, n, h, w, 3 * w, scores.ctypes.data, labels.ctypes.data)
        assert rc == 0, self.lib.sb_last_error(self.handle)
        return scores, labels


# ---------------------------------------------------------------- parity with the Python runtime (tiny open_clip)

@pytest.fixture(scope="module")
def python_class_files(real, tmp_path_factory) -> dict[str, tuple[Path, Classifier]]:
    """Class files written by the Python runtime: a fresh set (the fitted classes all replaced) and edits of the fitted one."""
    from .conftest import ENROL_CLASSES
    from .test_classes import shots

    enrol_export, enrol_pool = real
    folder = tmp_path_factory.mktemp("c_classes")
    fresh = Classifier.load(enrol_export, unknown=None)  # C answers no "unknown" yet: compare closed-set
    for name in ENROL_CLASSES[3:]:
        fresh.add_class(name, shots(enrol_pool, name))
    for name in ENROL_CLASSES[:3]:
        fresh.remove_class(name)
    edited = Classifier.load(enrol_export, unknown=None)
    edited.remove_class("red fox")
    edited.add_class("white swan", shots(enrol_pool, "white swan"))
    edited.rename_class("blue whale", "Wal (blau) \"groß\" 🐋")
    fresh.save_classes(folder / "fresh.classes")
    edited.save_classes(folder / "edited.classes")
    return {"fresh": (folder / "fresh.classes", fresh), "edited": (folder / "edited.classes", edited)}


@pytest.mark.parametrize("which", ["fresh", "edited"])
def test_c_scores_a_python_class_file_as_python(clib, real, python_class_files, which) -> None:
    from .test_classes import query_images

    (enrol_export, enrol_pool), (path, clf) = real, python_class_files[which]
    images = query_images(enrol_pool)
    expected = Classifier.load(enrol_export, classes=path, unknown=None).predict(images)  # C: no "unknown" yet
    np.testing.assert_array_equal(expected.scores, clf.predict(images).scores)
    with CModel(clib, enrol_export) as c:
        fitted = c.classify(images)
        assert c.set_classes(path) == (0, "")
        assert c.names == clf.class_names
        scores, labels = c.classify(images)
        np.testing.assert_allclose(scores, expected.scores, rtol=0, atol=1e-5)
        np.testing.assert_array_equal(labels, expected.labels)
        assert c.set_classes(None)[0] == 0  # back to the fitted classes
        assert c.names == Classifier.load(enrol_export).class_names
        np.testing.assert_array_equal(c.classify(images)[0], fitted[0])
    np.testing.assert_allclose(fitted[0], Classifier.load(enrol_export).predict(images).scores, rtol=0, atol=1e-5)


def test_classify_example_with_a_class_file(c_build, real, python_class_files, tmp_path) -> None:
    from .test_classes import query_images

    (enrol_export, enrol_pool), (path, clf) = real, python_class_files["edited"]
    images = query_images(enrol_pool)
    ppms = [write_ppm(tmp_path / f"q{i}.ppm", image) for i, image in enumerate(images)]
    done = subprocess.run([c_build / "examples" / "classify", "--classes", path, "--scores", "--top-k", "2", enrol_export,
                           *ppms], capture_output=True, text=True, check=True)
    results, expected = parse_classify(done.stdout), clf.predict(images, top_k=2)
    for i, ppm in enumerate(ppms):
        got = results[str(ppm)]
        assert got["label"] == expected.labels[i] and got["top"] == expected.top_k.indices[i].tolist()
        np.testing.assert_allclose(got["scores"], expected.scores[i], rtol=0, atol=1e-5)
    assert f"  label {expected.labels[0]} {expected.class_names[0]}\n" in done.stdout
    bad = subprocess.run([c_build / "examples" / "classify", "--classes", tmp_path / "missing.classes", enrol_export,
                          ppms[0]], capture_output=True, text=True)
    assert bad.returncode == 3 and "cannot read class file" in bad.stderr


def test_c_swaps_concurrently_on_the_real_model(c_build, real, python_class_files) -> None:
    done = subprocess.run([c_build / "tests" / "test_classes", "--calls", "6", real[0],
                           python_class_files["fresh"][0], python_class_files["edited"][0]],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0 and "FAIL" not in done.stdout, done.stdout + done.stderr


def test_c_runs_the_int8_artifact_as_python(clib, request, tmp_path) -> None:
    """The C library opens the file it is given: model_int8.onnx (which Classifier.load prefers on the CPU) scores as
    the Python runtime does on it, with its fitted classes and with a class file (the same head inputs as fp32)."""
    try:
        int8 = request.getfixturevalue("exported_onnx") / "model_int8.onnx"
    except (pytest.FixtureLookupError, ImportError):
        pytest.skip("needs the full install (semobridge, semobridge-export, torch) to export the tiny model")
    python = Classifier.load(int8, prefer_int8=False, unknown=None)  # C: no "unknown" yet
    assert python.info.precision == "int8"
    images = np.random.default_rng(5).integers(0, 256, (3, 40, 36, 3), np.uint8)
    fitted = python.class_names, python.predict(images)
    python.remove_class(python.class_names[0])
    python.rename_class(python.class_names[0], "renamed")
    python.save_classes(tmp_path / "int8.classes")
    edited = python.class_names, python.predict(images)
    with CModel(clib, int8) as c:
        for path, (names, expected) in ((None, fitted), (tmp_path / "int8.classes", edited)):
            assert c.set_classes(path) == (0, "")
            assert c.names == names
            scores, labels = c.classify(images)
            np.testing.assert_allclose(scores, expected.scores, rtol=0, atol=1e-5)
            np.testing.assert_array_equal(labels, expected.labels)


# ---------------------------------------------------------------- the toy model: refusals, threads, memory checks

@pytest.fixture(scope="module")
def toy(make_model) -> Path:
    return make_model(head_as_data=True, seed=3)


def toy_set(names: tuple[str, ...], seed: int) -> ClassSet:
    return ClassSet(names, *toy_class_set(len(names), TOY.embedding_dim, seed))


@pytest.fixture(scope="module")
def toy_files(tmp_path_factory) -> tuple[Path, Path]:
    """Two valid class files of four classes for the toy model, with other names and values."""
    folder = tmp_path_factory.mktemp("toy_classes")
    toy_set(("a", "b", "c", "Große Straße 🐋"), 1).save(folder / "a.classes", TOY)
    toy_set(("w", "x", "y", "z"), 2).save(folder / "b.classes", TOY)
    return folder / "a.classes", folder / "b.classes"


def split(data: bytes) -> tuple[str, bytes]:
    """A class file's header as text (latin-1: every byte one character, for byte edits) and data block."""
    header, body = tensorfile.split(data)
    return header.decode("latin-1"), bytes(body)


def join(header: str | bytes, body: bytes) -> bytes:
    return tensorfile.join(header.encode("latin-1") if isinstance(header, str) else header, body)


def encoded(good: Path, names: list[str] | bytes | None = None, meta: dict | None = None, **tensors: np.ndarray) -> bytes:
    """The class file `good` with tensors and metadata replaced (a tensor None: left out)."""
    old, old_meta = tensorfile.read(good)
    arrays = {k: v for k, v in {**old, **tensors}.items() if v is not None}
    if names is not None:
        raw = names if isinstance(names, bytes) else "\n".join(names).encode("utf-8", "surrogatepass")
        arrays["class_names"] = np.frombuffer(raw, np.uint8)
    return tensorfile.encode(arrays, {**old_meta, **(meta or {})})


def header_edit(good: Path, old: str, new: str) -> bytes:
    header, body = split(good.read_bytes())
    assert old in header
    return join(header.replace(old, new, 1), body)


CALIBRATED = {"temperature": "0.5", "threshold": "0.25", "score": "mcm"}  # a class file's open set


def scored(good: Path, score: str) -> bytes:
    """The class file `good` with CALIBRATED's open set, its score written as the JSON `score` ('"score":...')."""
    header, body = split(encoded(good, meta=CALIBRATED))
    return join(header.replace('"score":"mcm"', score, 1), body)


def with_value(good: Path, tensor: str, index: tuple, value: float) -> bytes:
    array = np.array(tensorfile.read(good)[0][tensor])
    array[index] = value
    return encoded(good, **{tensor: array})


#: case -> (file bytes from the good file A, the message the C library gives, whether Python refuses it too)
BAD_FILES: dict[str, Callable[[Path], tuple[bytes, str, bool]]] = {
    "empty": lambda a: (b"", "truncated or not a safetensors file (0 bytes)", True),
    "cut at 4": lambda a: (a.read_bytes()[:4], "truncated", True),
    "cut at 12": lambda a: (a.read_bytes()[:12], "truncated", True),
    "cut at 200": lambda a: (a.read_bytes()[:200], "its header claims", True),
    "cut in the data": lambda a: (a.read_bytes()[:-100], "truncated", True),
    "cut by one byte": lambda a: (a.read_bytes()[:-1], "truncated or corrupt (tensor 'class_names' has data_offsets [400, 425], but its shape needs 25 bytes, within the 424", True),
    "header length 2^63": lambda a: ((1 << 63).to_bytes(8, "little") + a.read_bytes()[8:], "truncated", True),
    "header not JSON": lambda a: (join("{not json}", b""), "its header is not JSON: expected a string key at byte 1", True),
    "header an array": lambda a: (join("[]", b""), "its header is not a JSON object", True),
    "data after the header's object": lambda a: (header_edit(a, "]}}", "]}}x"), "unexpected data after the value", True),
    "invalid UTF-8 in the header": lambda a: (header_edit(a, '"toy"', '"t\xffy"'), "invalid UTF-8", True),
    "control character in a header string": lambda a: (header_edit(a, '"toy"', '"t\x01y"'), "control character in a string", True),
    "bad escape": lambda a: (header_edit(a, '"toy"', '"t\\qy"'), "bad escape", True),
    "bad hex digit in a \\u escape": lambda a: (header_edit(a, '"toy"', '"t\\u00g0"'), "bad \\u escape at byte", True),
    "nested too deep": lambda a: (header_edit(a, '"toy"', "[" * 70 + "]" * 70), "nested too deep", True),
    "lone surrogate escape": lambda a: (header_edit(a, '"toy"', '"\\ud800"'), "lone surrogate escape", False),
    "duplicate tensor key": lambda a: (header_edit(a, '"class_kl":', '"class_kl":{},"class_kl":'), "'class_kl' appears twice", True),
    "another format": lambda a: (encoded(a, meta={"format": "something/1"}), "is not a semobridge class file (format \"something/1\"", True),
    "no metadata": lambda a: (header_edit(a, '"__metadata__"', '"__nometadata__"'), "is not a semobridge class file (format none", True),
    "metadata value not a string": lambda a: (header_edit(a, '"num_classes":"4"', '"num_classes":4'), "a __metadata__ value is not a string", True),
    "an unknown open-set score": lambda a: (encoded(a, meta={**CALIBRATED, "score": "energy"}),
                                            'open-set calibration (score "energy" is not one of max_probability, mcm)', True),
    "an empty open-set score": lambda a: (encoded(a, meta={**CALIBRATED, "score": ""}), 'score "" is not one of', True),
    "an open-set score not a string": lambda a: (scored(a, '"score":1'), "a __metadata__ value is not a string", True),
    "an open-set score given twice": lambda a: (scored(a, '"score":"max_probability","score":"mcm"'),
                                                "a __metadata__ key appears twice", True),
    "a threshold given twice": lambda a: (header_edit(a, '"format":', '"threshold":"0.5","threshold":"0.9","format":'),
                                          "a __metadata__ key appears twice", True),
    "another backbone": lambda a: (encoded(a, meta={"weights_hash": "0123456789abcdef", "backbone": "ViT-B-16"}),
                                   "was made for the backbone \"ViT-B-16\" with weights \"0123456789abcdef\", but this model's backbone is \"toy\"", True),
    "another bridge": lambda a: (encoded(a, meta={"bridge_hash": "fedcba9876543210"}), "was bridged with another W+ (bridge \"fedcba9876543210\"", True),
    "no class_kl": lambda a: (encoded(a, class_kl=None), "lacks the tensor(s) class_kl; write it again", True),
    "offsets beyond the data": lambda a: (header_edit(a, "data_offsets\":[400,", "data_offsets\":[1400,"), "tensor 'class_names' has data_offsets [1400,", True),
    "offsets reversed": lambda a: (header_edit(a, "data_offsets\":[0,128]", "data_offsets\":[128,0]"), "tensor 'text_classifier' has data_offsets [128, 0]", True),
    "offsets span too few bytes": lambda a: (header_edit(a, "data_offsets\":[0,128]", "data_offsets\":[0,124]"), "has data_offsets [0, 124], but its shape needs 128 bytes", True),
    "negative offset": lambda a: (header_edit(a, "data_offsets\":[0,128]", "data_offsets\":[-4,128]"), "is corrupt (tensor 'text_classifier' is not {\"dtype\": string", True),
    "dtype BF16": lambda a: (header_edit(a, '"F32"', '"BF16"'), "has tensor 'text_classifier' of dtype \"BF16\", expected F32; write it again", True),
    "dtype F64": lambda a: (encoded(a, text_classifier=np.zeros((4, 8))), "of dtype \"F64\", expected F32", False),
    "names as F32": lambda a: (encoded(a, class_names=np.zeros(3, np.float32)), "has tensor 'class_names' of dtype \"F32\", expected U8", True),
    "other width": lambda a: (encoded(a, **dict(zip(("text_classifier", "bridged_prototypes", "image_prototypes"), toy_class_set(4, 9, 0)))),
                              "has 9-wide prototypes; this model's are 8: enrol the classes again", True),
    "class_kl of another count": lambda a: (encoded(a, class_kl=np.zeros(5, np.float32)),
                                            "shapes [4, 8], [4, 8], [4, 8], [5] and [25], which do not make one class set", True),
    "class_kl of rank 2": lambda a: (encoded(a, class_kl=np.zeros((4, 1), np.float32)), "[4, 1]", True),
    "text_classifier of rank 3": lambda a: (encoded(a, text_classifier=np.zeros((4, 8, 1), np.float32)), "of rank 3", True),
    "zero classes": lambda a: (encoded(a, names=[], **dict(zip(("text_classifier", "bridged_prototypes", "image_prototypes", "class_kl"),
                                                               (np.zeros((0, 8), np.float32),) * 3 + (np.zeros(0, np.float32),)))),
                               "has 0 classes; a class set has 1 to 1048576", True),
    "five names for four classes": lambda a: (encoded(a, names=["a", "b", "c", "d", "e"]), "has 5 class names for 4 classes", True),
    "an empty name": lambda a: (encoded(a, names=["a", "", "c", "d"]), "class name 1, \"\", is empty", True),
    "a name of white space": lambda a: (encoded(a, names=["a", " \u3000\t", "c", "d"]), "is empty", True),
    "duplicate names ignoring case": lambda a: (encoded(a, names=["Red fox", "b", " red FOX", "d"]),
                                                "class name 2, \" red FOX\", repeats class 0, \"Red fox\", ignoring case and surrounding white space", True),
    "duplicate names by full case folding": lambda a: (encoded(a, names=["a", "STRASSE", "c", "straße"]), "repeats class 1", True),
    "duplicate Greek names": lambda a: (encoded(a, names=["a", "ΣΊΣΥΦΟΣ", "σίσυφος", "d"]), "repeats class 1", True),
    "a tab in a name": lambda a: (encoded(a, names=["a", "b\tc", "c", "d"]), "class name 1, \"b\\u0009c\", contains a control character (U+0009)", True),
    "a NUL in a name": lambda a: (encoded(a, names=["a", "b\x00c", "c", "d"]), "class name 1, \"b\\u0000c\", contains a control character (U+0000)", True),
    "a C1 control in a name": lambda a: (encoded(a, names=["a", "b\x85c", "c", "d"]), "class name 1, \"b\\u0085c\", contains a control character (U+0085)", True),
    "a line separator in a name": lambda a: (encoded(a, names=["a", "b\u2028", "c", "d"]), "class name 1, \"b\\u2028\", contains a line separator (U+2028)", True),
    "a name of 257 characters": lambda a: (encoded(a, names=["a", "é" * 257, "c", "d"]), "has 257 characters, over 256", True),
    "names not UTF-8": lambda a: (encoded(a, names=b"a\nb\xffc\nc\nd"), "not UTF-8 at byte 3", True),
    "a surrogate in a name": lambda a: (encoded(a, names=["a", "\ud800", "c", "d"]), "not UTF-8 at byte 2", True),
    "NaN": lambda a: (with_value(a, "image_prototypes", (2, 3), np.nan), "holds NaN or infinite values (image_prototypes, class 2)", True),
    "infinity": lambda a: (with_value(a, "class_kl", (3,), np.inf), "holds NaN or infinite values (class_kl, class 3)", True),
}


@pytest.fixture(scope="module")
def bad_files(toy_files, tmp_path_factory) -> dict[str, tuple[Path, str, bool]]:
    """case -> (path, C message, refused by Python too); plus a missing file, a directory and a sparse 100 MB header."""
    folder = tmp_path_factory.mktemp("bad_classes")
    files = {}
    for i, (case, make) in enumerate(BAD_FILES.items()):
        data, message, python = make(toy_files[0])
        (folder / f"{i:02d}.classes").write_bytes(data)
        files[case] = (folder / f"{i:02d}.classes", message, python)
    files["missing"] = (folder / "missing.classes", "cannot read class file", True)
    files["directory"] = (folder, "is a directory, not a class file", True)
    os.mkfifo(folder / "pipe.classes")  # opening it must not block
    files["a pipe"] = (folder / "pipe.classes", "is not a regular file (a pipe or a device); pass a class file", True)
    with open(folder / "huge.classes", "wb") as f:  # sparse: no disk used
        f.write((100_000_001).to_bytes(8, "little"))
        f.truncate(8 + 100_000_001)
    files["header over 100 MB"] = (folder / "huge.classes", "a header of 100000001 bytes, over safetensors' limit", True)
    return files


def run_test_classes(command: list, toy: Path, toy_files, bad_files, calls: int) -> subprocess.CompletedProcess:
    return subprocess.run([*map(str, command), "--calls", str(calls), str(toy), *map(str, toy_files),
                           *(str(path) for path, _, _ in bad_files.values())], capture_output=True, text=True, timeout=900)


def test_c_refuses_bad_class_files_and_keeps_its_set(c_build, toy, toy_files, bad_files) -> None:
    done = run_test_classes([c_build / "tests" / "test_classes"], toy, toy_files, bad_files, 50)
    assert done.returncode == 0 and "FAIL" not in done.stdout, done.stdout + done.stderr
    refused = dict(re.findall(r"^refused (-?\d+ .*?): (.*)$", done.stdout, re.M))
    for case, (path, message, _) in bad_files.items():
        assert refused[f"{SB_EMODEL} {path}"].find(message) >= 0, (case, refused[f"{SB_EMODEL} {path}"])
    assert re.search(r"^open-refused -2 ", done.stdout, re.M)
    fitted, a, b, mismatched, swaps = map(int, re.search(r"^concurrent (.*)$", done.stdout, re.M).group(1).split())
    assert mismatched == 0 and fitted + a + b == 8 * 50 and sum(x > 0 for x in (fitted, a, b)) >= 2 and swaps > 0


def test_python_refuses_the_same_files(toy, bad_files) -> None:
    for case, (path, _, python) in bad_files.items():
        if python:
            with pytest.raises(ModelError):
                within_timeout(lambda: ClassSet.load(path, TOY), *[p for p, _, _ in bad_files.values() if p.is_fifo()])


def test_c_reads_other_safetensors_writers(clib, toy, toy_files, tmp_path) -> None:
    """Any valid safetensors file with the tensors and metadata: another order, the safetensors package, escapes."""
    from safetensors.numpy import save_file

    tensors, meta = tensorfile.read(toy_files[0])
    save_file(dict(reversed(list(tensors.items()))), str(tmp_path / "st.classes"), metadata=meta)
    header, body = split(toy_files[0].read_bytes())
    (tmp_path / "escaped.classes").write_bytes(join(header.replace('"format"', ' "\\u0066orm\\u0061t" ').replace(",", " ,\n\t"), body))
    images = np.random.default_rng(0).integers(0, 256, (3, 24, 20, 3), np.uint8)
    with CModel(clib, toy, classes=toy_files[0]) as c:
        expected, names = c.classify(images), c.names
        for path in (tmp_path / "st.classes", tmp_path / "escaped.classes"):
            assert c.set_classes(None)[0] == 0 and c.set_classes(path) == (0, "")
            assert c.names == names == ["a", "b", "c", "Große Straße 🐋"]
            np.testing.assert_array_equal(c.classify(images)[0], expected[0])


def test_c_toy_scores_equal_onnxruntime_fed_the_class_set(clib, toy, toy_files) -> None:
    """An independent reference: onnxruntime fed the file's tensors as the graph's class-set inputs."""
    import onnxruntime as ort

    images = np.random.default_rng(1).integers(0, 256, (3, 24, 20, 3), np.uint8)
    session = ort.InferenceSession(str(toy), providers=["CPUExecutionProvider"])
    with CModel(clib, toy) as c:
        for path in toy_files:
            assert c.set_classes(path)[0] == 0
            feeds = ClassSet.load(path, TOY).feeds()
            scores, labels = session.run(["scores", "label"], {"image": images, **feeds})
            got = c.classify(images)
            np.testing.assert_allclose(got[0], scores, rtol=0, atol=1e-6)
            np.testing.assert_array_equal(got[1], labels)


def test_c_class_set_arguments(clib, toy, toy_files, contract_onnx) -> None:
    assert clib.sb_set_classes(None, str(toy_files[0]).encode()) == SB_EINVAL
    with CModel(clib, contract_onnx) as c:  # classes baked into the graph
        rc, message = c.set_classes(toy_files[0])
        assert rc == SB_EMODEL and "has its classes baked in; re-export it with semobridge-export" in message
        assert c.set_classes(None)[0] == 0 and len(c.names) == 5
    with CModel(clib, toy) as c:
        held = clib.sb_get_classes(c.handle)
        try:
            assert c.set_classes(toy_files[1])[0] == 0
            assert clib.sb_classes_count(held) == 5 and clib.sb_classes_name(held, 0) == b"class 0"
            assert c.names == ["w", "x", "y", "z"]
        finally:
            clib.sb_release_classes(held)


@pytest.mark.skipif(shutil.which("valgrind") is None, reason="valgrind is not installed (apt-get install valgrind)")
def test_class_sets_valgrind_clean(c_build, toy, toy_files, bad_files) -> None:
    done = run_test_classes([*VALGRIND, c_build / "tests" / "test_classes"], toy, toy_files, bad_files, 4)
    assert done.returncode == 0 and "FAIL" not in done.stdout, done.stdout[-3000:] + done.stderr[-5000:]


def sanitizers_work() -> bool:
    probe = subprocess.run(["cc", "-fsanitize=address,undefined", "-x", "c", "-", "-o", "/dev/null"],
                           input="int main(void) { return 0; }", capture_output=True, text=True)
    return probe.returncode == 0


@pytest.mark.skipif(not sanitizers_work(), reason="the C compiler lacks ASan/UBSan runtimes (apt-get install libasan8 libubsan1)")
def test_sanitizers_clean(c_build, toy, toy_files, bad_files, error_case_args, make_model, tmp_path) -> None:
    """AddressSanitizer + UndefinedBehaviorSanitizer (leaks included), and ThreadSanitizer on the concurrent swaps."""
    made = subprocess.run(["make", "-C", str(C_DIR), "sanitize", f"PYTHON={sys.executable}"], capture_output=True, text=True,
                          timeout=900)
    assert made.returncode == 0, made.stdout + made.stderr
    sanitize = c_build / "sanitize"
    done = run_test_classes([sanitize / "test_classes"], toy, toy_files, bad_files, 20)
    assert done.returncode == 0 and "FAIL" not in done.stdout, done.stdout[-3000:] + done.stderr[-5000:]
    done = subprocess.run([sanitize / "test_errors", *error_case_args], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0 and "FAIL" not in done.stdout, done.stdout[-3000:] + done.stderr[-5000:]
    done = run_test_classes([sanitize / "tsan_test_classes"], toy, toy_files, {}, 50)
    assert done.returncode == 0 and "ThreadSanitizer" not in done.stderr, done.stdout[-3000:] + done.stderr[-5000:]
    sanitized_open_set(sanitize / "classify", make_model, tmp_path)


def sanitized_open_set(classify: Path, make_model, folder: Path) -> None:
    """The classify example, sanitized, through the open-set paths of sb_predict: a graph deciding on each score (the
    metadata's, a class file's), fed a threshold or not, and one exported before the score (its score from the
    probabilities)."""
    from .test_c_open_set import class_file, with_decision, write_images

    images = write_images(np.random.default_rng(3).integers(0, 256, (2, 21, 17, 3), np.uint8), folder)
    mcm = with_decision(make_model(head_as_data=True, seed=4), score="mcm")
    old = with_decision(make_model(seed=4), weight_input=False, score_output=False)
    own = class_file(folder / "own.classes", {**CALIBRATED, "score": "max_probability"})
    for flags, model in ((["--unknown", "0.3"], mcm), (["--unknown", "off", "--classes", own], mcm), ([], old),
                         (["--classes", own], mcm)):
        done = subprocess.run([classify, "--open-set-score", "--probabilities", *flags, model, *images],
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0 and done.stdout.count("  open_set_score ") == 2, done.stdout + done.stderr[-5000:]
        assert "Sanitizer" not in done.stderr and "runtime error" not in done.stderr, done.stderr[-5000:]

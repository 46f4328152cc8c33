"""The C library (runtime/c): build it, compare it with the Python runtime, check bad input and leaks.

Building needs a C compiler, make, and (first time) apt access to fetch ONNX Runtime's headers.
"""

from __future__ import annotations

import ctypes
import math
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from semobridge_runtime import ERROR_TABLE, Classifier, InputError, ModelError, SemobridgeError
from semobridge_runtime.limits import ImageLimits, overrides

from .conftest import C_DIR
from .contract_model import MISMATCHED

VALGRIND = ["valgrind", "--leak-check=full", "--errors-for-leak-kinds=definite", "--error-exitcode=1",
            f"--suppressions={C_DIR / 'tests' / 'valgrind.supp'}", "-q"]


def write_ppm(path: Path, image: np.ndarray) -> Path:
    h, w, _ = image.shape
    path.write_bytes(b"P6\n# written by the test\n%d %d\n255\n" % (w, h) + image.tobytes())
    return path


def parse_classify(stdout: str) -> dict[str, dict]:
    """{path: {"label": int, "top": [index...], "scores": np.ndarray}} from `classify --scores`."""
    results: dict[str, dict] = {}
    current: dict = {}
    for line in stdout.splitlines():
        if not line.startswith("  "):
            current = results.setdefault(line, {"top": []})
            continue
        kind, rest = line.split(maxsplit=1)
        if kind == "label":
            current["label"] = int(rest.split()[0])
        elif kind == "top":
            current["top"].append(int(rest.split()[0]))
        elif kind == "scores":
            current["scores"] = np.array(rest.split(), dtype=np.float64)
    return results


@pytest.mark.parametrize("flags", [[], ["--threads", "1", "--no-spinning"]])
def test_classify_example_matches_python(c_build: Path, onnx_model: Path, images: list[np.ndarray],
                                         tmp_path: Path, flags: list[str]) -> None:
    paths = [write_ppm(tmp_path / f"img{i}.ppm", image) for i, image in enumerate(images)]
    done = subprocess.run([c_build / "examples" / "classify", *flags, "--scores", "--top-k", "3", onnx_model, *paths],
                          capture_output=True, text=True, check=True)
    results = parse_classify(done.stdout)
    expected = Classifier.load(onnx_model, providers=["CPUExecutionProvider"]).predict(images, top_k=3)
    for i, path in enumerate(paths):
        got = results[str(path)]
        assert got["label"] == expected.labels[i]
        assert got["top"] == expected.top_k.indices[i].tolist()
        np.testing.assert_allclose(got["scores"], expected.scores[i], rtol=0, atol=1e-5)


class Params(ctypes.Structure):
    """struct sb_params, field for field (new fields are appended at the end)."""

    _fields_ = [("intra_op_num_threads", ctypes.c_int), ("inter_op_num_threads", ctypes.c_int),
                ("use_cuda", ctypes.c_bool), ("cuda_device_id", ctypes.c_int),
                ("graph_optimization_level", ctypes.c_int), ("allow_spinning", ctypes.c_bool),
                ("max_side", ctypes.c_int), ("max_pixels", ctypes.c_int64), ("max_aspect", ctypes.c_double),
                ("classes_path", ctypes.c_char_p), ("unknown", ctypes.c_int), ("unknown_threshold", ctypes.c_double)]


@pytest.fixture(scope="session")
def lib(c_build: Path) -> ctypes.CDLL:
    lib = ctypes.CDLL(str(c_build / "libsemobridge.so"))
    lib.sb_default_params.restype = Params
    defaults = lib.sb_default_params()  # the struct's layout and defaults, as the header says
    assert defaults.allow_spinning is True and defaults.graph_optimization_level == 99
    assert (defaults.max_side, defaults.max_pixels, defaults.max_aspect, defaults.classes_path) == (0, 0, 0.0, None)
    lib.sb_version.restype = ctypes.c_char_p
    lib.sb_load.argtypes = [ctypes.c_char_p, Params, ctypes.POINTER(ctypes.c_void_p), ctypes.c_char_p, ctypes.c_size_t]
    lib.sb_open_with_error.restype = ctypes.c_void_p
    lib.sb_open_with_error.argtypes = [ctypes.c_char_p, Params, ctypes.c_char_p, ctypes.c_size_t]
    lib.sb_close.argtypes = [ctypes.c_void_p]
    lib.sb_num_classes.argtypes = lib.sb_embedding_dim.argtypes = [ctypes.c_void_p]
    lib.sb_class_name.argtypes = [ctypes.c_void_p, ctypes.c_int]
    lib.sb_class_name.restype = ctypes.c_char_p
    lib.sb_last_error.argtypes = [ctypes.c_void_p]
    lib.sb_last_error.restype = ctypes.c_char_p
    image_args = [ctypes.c_void_p, ctypes.c_void_p] + [ctypes.c_int] * 4
    lib.sb_classify.argtypes = image_args + [ctypes.c_void_p, ctypes.c_void_p]
    lib.sb_embed.argtypes = image_args + [ctypes.c_void_p]
    return lib


def c_run(lib: ctypes.CDLL, model: Path, batch: np.ndarray, pad: int) -> tuple[np.ndarray, ...]:
    """Classify and embed `batch` through ctypes, with rows padded by `pad` bytes (stride > 3w)."""
    n, h, w, _ = batch.shape
    rows = np.zeros((n, h, w * 3 + pad), np.uint8)
    rows[:, :, : w * 3] = batch.reshape(n, h, w * 3)
    err = ctypes.create_string_buffer(512)
    m = lib.sb_open_with_error(str(model).encode(), lib.sb_default_params(), err, len(err))
    assert m, err.value.decode()
    try:
        classes, dim = lib.sb_num_classes(m), lib.sb_embedding_dim(m)
        scores, labels = np.empty((n, classes), np.float32), np.empty(n, np.int64)
        embeddings = np.empty((n, dim), np.float32)
        rc = lib.sb_classify(m, rows.ctypes.data, n, h, w, w * 3 + pad, scores.ctypes.data, labels.ctypes.data)
        assert rc == 0, lib.sb_last_error(m)
        rc = lib.sb_embed(m, rows.ctypes.data, n, h, w, w * 3 + pad, embeddings.ctypes.data)
        assert rc == 0, lib.sb_last_error(m)
        names = [lib.sb_class_name(m, i).decode() for i in range(classes)]
    finally:
        lib.sb_close(m)
    return scores, labels, embeddings, names


@pytest.mark.parametrize("pad", [0, 5])
def test_c_batches_match_python(lib: ctypes.CDLL, onnx_model: Path, images: list[np.ndarray], pad: int) -> None:
    batch = np.stack([images[0], images[2], images[0] // 2])
    scores, labels, embeddings, names = c_run(lib, onnx_model, batch, pad)
    expected = Classifier.load(onnx_model, providers=["CPUExecutionProvider"]).predict(batch)
    assert names == Classifier.load(onnx_model).class_names
    np.testing.assert_array_equal(labels, expected.labels)
    np.testing.assert_allclose(scores, expected.scores, rtol=0, atol=1e-5)
    np.testing.assert_allclose(embeddings, expected.embeddings, rtol=0, atol=1e-5)


def test_c_static_batch_is_split_and_padded(lib: ctypes.CDLL, make_model, images: list[np.ndarray]) -> None:
    model = make_model(batch=2, seed=5)
    batch = np.stack([images[0], images[2]] * 2 + [images[0] // 3])  # 5 images: runs of 2, 2, 1 (+1 padding)
    scores, labels, embeddings, _ = c_run(lib, model, batch, 0)
    expected = Classifier.load(model).predict(batch)
    np.testing.assert_array_equal(labels, expected.labels)
    np.testing.assert_allclose(scores, expected.scores, rtol=0, atol=1e-5)
    np.testing.assert_allclose(embeddings, expected.embeddings, rtol=0, atol=1e-5)


def test_c_one_model_from_threads(lib: ctypes.CDLL, onnx_model: Path, images: list[np.ndarray]) -> None:
    """ctypes drops the GIL during calls, so these sb_classify calls really run concurrently."""
    err = ctypes.create_string_buffer(512)
    m = lib.sb_open_with_error(str(onnx_model).encode(), lib.sb_default_params(), err, len(err))
    assert m, err.value.decode()

    def classify(i: int) -> np.ndarray:
        image = np.ascontiguousarray(images[i % len(images)] + np.uint8(i))
        h, w, _ = image.shape
        scores, labels = np.empty((1, lib.sb_num_classes(m)), np.float32), np.empty(1, np.int64)
        assert lib.sb_classify(m, image.ctypes.data, 1, h, w, 3 * w, scores.ctypes.data, labels.ctypes.data) == 0
        return scores

    try:
        sequential = [classify(i) for i in range(32)]
        with ThreadPoolExecutor(max_workers=8) as pool:
            parallel = list(pool.map(classify, range(32)))
    finally:
        lib.sb_close(m)
    for a, b in zip(sequential, parallel):
        np.testing.assert_array_equal(a, b)


@pytest.fixture(scope="session")
def error_case_args(make_model, contract_onnx: Path, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Arguments for tests/test_errors: good, float, not-ours, truncated and missing model paths."""
    folder = tmp_path_factory.mktemp("bad_models")
    truncated = folder / "truncated.onnx"
    truncated.write_bytes(contract_onnx.read_bytes()[:300])
    return [contract_onnx, make_model(kind="float"), make_model(metadata=False), truncated, folder / "missing.onnx"]


def test_c_bad_input(c_build: Path, error_case_args: list[Path]) -> None:
    done = subprocess.run([c_build / "tests" / "test_errors", *error_case_args], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "FAIL" not in done.stdout and done.stdout.count("\nok ") >= 25


@pytest.mark.skipif(shutil.which("valgrind") is None, reason="valgrind is not installed (apt-get install valgrind)")
@pytest.mark.parametrize("program", ["classify", "test_errors"])
def test_valgrind_clean(c_build: Path, contract_onnx: Path, error_case_args: list[Path], tmp_path: Path,
                        program: str) -> None:
    if program == "classify":
        ppm = write_ppm(tmp_path / "img.ppm", np.arange(5 * 7 * 3, dtype=np.uint8).reshape(5, 7, 3))
        command = [c_build / "examples" / "classify", "--scores", contract_onnx, ppm]
    else:
        command = [c_build / "tests" / "test_errors", *error_case_args]
    done = subprocess.run([*VALGRIND, *map(str, command)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-5000:]


def c_load(lib: ctypes.CDLL, model: Path, **params) -> tuple[int, ctypes.c_void_p, str]:
    """sb_load through ctypes: (return code, model handle, error message)."""
    options = lib.sb_default_params()
    for name, value in params.items():
        setattr(options, name, value)
    handle, err = ctypes.c_void_p(), ctypes.create_string_buffer(512)
    rc = lib.sb_load(str(model).encode(), options, ctypes.byref(handle), err, len(err))
    return rc, handle, err.value.decode()


def c_classify(lib: ctypes.CDLL, handle: ctypes.c_void_p, image: np.ndarray) -> tuple[int, str]:
    h, w, _ = image.shape
    scores, labels = np.empty((1, lib.sb_num_classes(handle)), np.float32), np.empty(1, np.int64)
    image = np.ascontiguousarray(image)
    rc = lib.sb_classify(handle, image.ctypes.data, 1, h, w, 3 * w, scores.ctypes.data, labels.ctypes.data)
    return rc, lib.sb_last_error(handle).decode()


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("embedding width", "embedding has 8 values but its metadata says 9"),
        ("class count", "scores have 5 classes but its metadata names 4"),
        ("label renamed", "no 'label' output"),
        ("label is float", "output 'label' has element type 1 and 1 dims, expected 7"),
        ("scores are double", "output 'scores' has element type 11"),
        ("float input of another size", "neither uint8 [N,H,W,3] RGB nor float [N,3,S,S]"),
        ("limit not positive", "limit 'max_side' is not a positive number"),
        ("limits not an object", "'limits' is not an object"),
    ],
)
def test_c_refuses_graph_that_does_not_match_its_metadata(lib: ctypes.CDLL, make_model, case: str,
                                                          message: str) -> None:
    bad_limits = {"limit not positive": {"max_side": 0}, "limits not an object": [1, 2]}
    options = MISMATCHED[case] if case in MISMATCHED else {"meta_changes": {"limits": bad_limits[case]}}
    rc, handle, err = c_load(lib, make_model(**options))
    assert (rc, handle.value) == (-2, None) and message in err, err  # SB_EMODEL, as ModelError in Python


def test_c_limits_from_metadata_and_params(lib: ctypes.CDLL, make_model) -> None:
    model = make_model(meta_changes={"limits": {"max_side": 64, "max_pixels": 1000, "max_aspect": 2}})
    wide, big = np.zeros((10, 30, 3), np.uint8), np.zeros((32, 32, 3), np.uint8)
    rc, handle, err = c_load(lib, model)
    assert rc == 0, err
    try:
        assert c_classify(lib, handle, wide) == (-1, "images are 10x30 (HxW): their aspect ratio 3:1 exceeds the "
                                                     "limit of 2:1; crop or pad them, or raise sb_params.max_aspect")
        assert "1024 pixels exceed the limit of 1000" in c_classify(lib, handle, big)[1]
    finally:
        lib.sb_close(handle)
    rc, handle, err = c_load(lib, model, max_aspect=3.0, max_pixels=2000)  # the caller's limits win
    assert rc == 0, err
    try:
        assert c_classify(lib, handle, wide)[0] == 0 and c_classify(lib, handle, big)[0] == 0
    finally:
        lib.sb_close(handle)


@pytest.mark.parametrize("value", [0.5, 0.999, -1.0, float("nan"), float("inf")])
def test_c_and_python_refuse_an_aspect_limit_below_one(lib: ctypes.CDLL, make_model, value: float) -> None:
    """max_aspect 0.5 was taken, and then every image refused: both runtimes refuse it, the caller's (input error)
    and the model's metadata's (model error)."""
    with pytest.raises(InputError, match="at least 1"):
        overrides(max_aspect=value)
    rc, handle, err = c_load(lib, make_model(), max_aspect=value)
    assert (rc, handle.value) == (-1, None) and "or at least 1" in err and "square images only" in err, err
    if math.isfinite(value):  # JSON holds no NaN or infinity
        with pytest.raises(ModelError, match="at least 1"):
            ImageLimits.from_metadata({"max_aspect": value}, "model.onnx")
        rc, handle, err = c_load(lib, make_model(meta_changes={"limits": {"max_aspect": value}}))
        assert (rc, handle.value) == (-2, None) and "'max_aspect' is not a positive number (at least 1)" in err, err


def python_kind(action) -> type[SemobridgeError]:
    with pytest.raises(SemobridgeError) as info:
        action()
    return type(info.value)


@pytest.mark.parametrize("case", ["missing model", "directory as model", "not ours", "mismatched graph",
                                  "float model given pixels", "1 x 1000000 image", "aspect ratio", "257 threads"])
def test_python_and_c_classify_failures_alike(lib: ctypes.CDLL, make_model, contract_onnx: Path, tmp_path: Path,
                                              case: str) -> None:
    """The same failure is the same kind in both runtimes: the Python class's C code is what C returns."""
    model, image, params = contract_onnx, np.zeros((8, 8, 3), np.uint8), {}
    if case == "missing model":
        model = tmp_path / "missing.onnx"
    elif case == "directory as model":
        model = tmp_path
    elif case == "not ours":
        model = make_model(metadata=False)
    elif case == "mismatched graph":
        model = make_model(**MISMATCHED["embedding width"])
    elif case == "float model given pixels":
        model = make_model(kind="float")
    elif case == "1 x 1000000 image":
        image = np.broadcast_to(np.zeros(3, np.uint8), (1, 1_000_000, 3))
    elif case == "aspect ratio":
        image = np.zeros((1, 40, 3), np.uint8)
    else:
        params = {"intra_op_num_threads": 257}
    kind = python_kind(lambda: Classifier.load(model, **params).predict(image))
    c_rc, handle, err = c_load(lib, model, **params)
    if c_rc == 0:
        c_rc, err = c_classify(lib, handle, image)
        lib.sb_close(handle)
    row = next(row for row in ERROR_TABLE if row.python is kind)
    assert c_rc in row.c_codes.values(), f"Python raised {kind.__name__}, C returned {c_rc}: {err}"

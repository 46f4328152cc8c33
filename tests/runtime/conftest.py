"""Fixtures for the runtime tests: model files that follow the fused-graph contract."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

from tests.sharing import built_once, one_worker_at_a_time

from .contract_model import build_contract_model

C_DIR = Path(__file__).resolve().parents[2] / "runtime" / "c"


@pytest.fixture(scope="session")
def c_build(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Run `make -C runtime/c` once per session; fail loudly if it does not build."""
    if not (shutil.which("make") and shutil.which("cc")):
        pytest.fail("building runtime/c needs make and a C compiler (apt-get install build-essential)")
    with one_worker_at_a_time(tmp_path_factory, "c_build"):  # pytest-xdist: one make in the build folder at a time
        done = subprocess.run(["make", "-C", str(C_DIR), f"PYTHON={sys.executable}"],
                              capture_output=True, text=True, timeout=900)
    if done.returncode != 0:
        pytest.fail(f"make -C runtime/c failed:\n{done.stdout}\n{done.stderr}")
    return C_DIR / "build"


@pytest.fixture(scope="session")
def make_model(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """Build a synthetic contract model in its own folder: make_model(kind="float", batch=2, ...)."""

    def make(**options) -> Path:
        return build_contract_model(tmp_path_factory.mktemp("contract") / "model.onnx", **options)

    return make


@pytest.fixture(scope="session")
def contract_onnx(make_model: Callable[..., Path]) -> Path:
    """Always the small synthetic uint8 model (fast enough for valgrind and error tests)."""
    return make_model()


@pytest.fixture(scope="session")
def onnx_model(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The uint8 model under test: the tiny open_clip model as the exporter writes it (tests/conftest.py's
    `exported_onnx`), in a folder without the int8 artifact (on the CPU, Classifier.load would pick it instead;
    tests/runtime/test_int8_choice.py).

    Skipped with the runtime alone (no semobridge, semobridge_export, torch): run
    `python -m pytest tests/runtime --confcutdir tests/runtime` there, as runtime/README.md says.
    """
    try:
        exported = request.getfixturevalue("exported_onnx")
    except pytest.FixtureLookupError:
        pytest.skip("needs the full install (semobridge, semobridge-export, torch) to export the tiny model")
    folder = tmp_path_factory.mktemp("fp32")
    for path in exported.iterdir():
        if path.is_file() and not path.name.startswith("model_int8."):
            shutil.copy(path, folder / path.name)
    return folder / "model.onnx"


@pytest.fixture()
def images() -> list[np.ndarray]:
    """Seeded random RGB images of several sizes (two share a size, to exercise grouping)."""
    rng = np.random.default_rng(7)
    sizes = [(40, 40), (17, 23), (40, 40), (64, 33), (5, 7), (96, 80)]
    return [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in sizes]


# ---------------------------------------------------------------- class enrolment

ENROL_CLASSES = ("blue whale", "green tree", "red fox", "white swan", "yellow cab")
ENROL_TEMPLATES = ("a photo of a {}.", "art of the {}.")
ENROL_DESCRIPTIONS = {"red fox": ["A small orange wild dog.", "Its tail is bushy."], "blue whale": ["The largest animal."]}
ENROL_PARAMS = {"smoothness": 0.5, "alpha": 3.0, "beta": 2.0, "gamma": 4.0, "lambda1": 0.5, "lambda2": 0.4, "lambda3": 0.3}
ENROL_SHOTS = 3


@pytest.fixture(scope="session")
def enrol_pool(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Images of five classes, {train (3 = the shots), val (3), test (2)}/<class>/*.png, all 224x224,
    where the graph's preprocessing equals open_clip's PIL preprocessing exactly."""
    from PIL import Image

    from tests.helpers import random_photos

    root = tmp_path_factory.mktemp("enrol_pool")
    for s, (split, n) in enumerate({"train": ENROL_SHOTS, "val": ENROL_SHOTS, "test": 2}.items()):
        for c, name in enumerate(ENROL_CLASSES):
            folder = root / split / name.replace(" ", "_")
            folder.mkdir(parents=True)
            for i, img in enumerate(random_photos(n, seed=100 * s + c, size=(224, 224))):
                tint = np.array([(c * 67) % 256, (c * 131) % 256, (c * 29) % 256])
                Image.fromarray((img * 0.6 + 0.4 * tint).astype(np.uint8)).save(folder / f"{i}.png")
    return root


@pytest.fixture(scope="session")
def fit_on(enrol_pool: Path, tiny_backbone, tmp_path_factory: pytest.TempPathFactory) -> Callable:
    """fit_on(classes) -> the head `semobridge fit` makes from those classes of the pool (fixed blend
    parameters, the pool's shots, the same templates and descriptions)."""
    import json
    import warnings

    from semobridge.blend import BlendParams
    from semobridge.encode import EmbeddingCache
    from semobridge.pipeline import PromptOptions, fit_dataset

    descriptions = tmp_path_factory.mktemp("descriptions") / "descriptions.json"
    descriptions.write_text(json.dumps(ENROL_DESCRIPTIONS))

    def fit(classes: tuple[str, ...]):
        data = tmp_path_factory.mktemp("dataset")
        for split in ("train", "val", "test"):
            for name in classes:
                (data / split).mkdir(exist_ok=True)
                (data / split / name.replace(" ", "_")).symlink_to(enrol_pool / split / name.replace(" ", "_"))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # classes without descriptions
            head = fit_dataset(
                data, ENROL_SHOTS, backbone=tiny_backbone, params=BlendParams.from_dict(ENROL_PARAMS),
                prompts=PromptOptions(templates=list(ENROL_TEMPLATES), descriptions=descriptions),
                cache=EmbeddingCache(),
            ).head
        return head

    return fit


@pytest.fixture(scope="session")
def enrol_export(fit_on: Callable, tiny_backbone, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """model.onnx (+ text.onnx, text_int8.onnx, head.safetensors, vocabulary) fitted by semobridge on the pool's
    first three classes. No int8 image model: Classifier.load runs fp32, to compare with fit exactly."""
    from semobridge_export import export

    def build(out: Path) -> None:
        export(fit_on(ENROL_CLASSES[:3]), tiny_backbone, out, formats=("onnx", "text", "text-int8"), log=lambda _: None)

    return built_once(tmp_path_factory, "enrol_export", build) / "model.onnx"


@pytest.fixture(scope="module")
def real(request: pytest.FixtureRequest) -> tuple[Path, Path]:
    """(the tiny open_clip export fitted on three classes, the image pool); skipped with the runtime alone."""
    try:
        return request.getfixturevalue("enrol_export"), request.getfixturevalue("enrol_pool")
    except (pytest.FixtureLookupError, ImportError):
        pytest.skip("needs the full install (semobridge, semobridge-export, torch) to fit and export the tiny model")

"""Every ONNX Runtime session goes through one factory (backends/session.py): the model, the int8 model and the
enrolment text tower run with the caller's providers, threads and spinning, and no other code opens a session."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import onnxruntime as ort
import pytest

from semobridge_runtime import Classifier
from semobridge_runtime.backends.session import SPINNING, SessionSettings, open_session
from semobridge_runtime.errors import BackendError, InputError, ModelError

ROOT = Path(__file__).resolve().parents[2]
CPU = ["CPUExecutionProvider"]


def settings_of(session: ort.InferenceSession) -> tuple[int, str, ort.GraphOptimizationLevel, list[str]]:
    options = session.get_session_options()
    return (options.intra_op_num_threads, options.get_session_config_entry(SPINNING),
            options.graph_optimization_level, session.get_providers())


@pytest.mark.parametrize("model, text", [("model.onnx", None), ("model_int8.onnx", "text_int8.onnx")])
def test_every_session_of_a_classifier_takes_its_settings(exported_onnx: Path, model: str, text: str | None) -> None:
    clf = Classifier.load(exported_onnx / model, providers=CPU, intra_op_num_threads=3, allow_spinning=False,
                          prefer_int8=False, text_model=exported_onnx / text if text else None)
    assert clf.path.name == model
    tower = clf._enrolment.text()._session
    want = (3, "0", ort.GraphOptimizationLevel.ORT_ENABLE_ALL, CPU)
    assert settings_of(clf._backend._session) == want
    assert settings_of(tower) == want  # before the factory: 0 threads (one per core), spinning on
    assert Path(tower._model_path).name == (text or "text.onnx")


def test_text_tower_runs_the_threads_asked_for(exported_onnx: Path) -> None:
    """Counted, not read back: opening the text tower adds the intra-op pool of the threads asked for (n - 1
    threads beside the caller's), whatever the machine's core count."""
    code = (
        "import os, sys; from semobridge_runtime import Classifier\n"
        "count = lambda: len(os.listdir('/proc/self/task'))\n"
        f"clf = Classifier.load({str(exported_onnx / 'model.onnx')!r}, providers=['CPUExecutionProvider'], "
        "intra_op_num_threads=int(sys.argv[1]), prefer_int8=False)\n"
        "before = count(); clf._enrolment.text(); print(count() - before)\n"
    )
    if not Path("/proc/self/task").is_dir():
        pytest.skip("counting threads needs Linux's /proc/self/task")
    added = {n: int(subprocess.run([sys.executable, "-c", code, str(n)], check=True, capture_output=True,
                                   text=True).stdout) for n in (1, 5)}
    assert added == {1: 0, 5: 4}


def test_factory_refuses_bad_settings(contract_onnx: Path, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="intra_op_num_threads"):
        SessionSettings(intra_op_num_threads=-1)
    with pytest.raises(InputError, match="list of execution provider names"):
        SessionSettings(providers="CPUExecutionProvider")
    with pytest.raises(BackendError, match="NoSuchExecutionProvider"):
        open_session(contract_onnx, SessionSettings(("NoSuchExecutionProvider",)))
    bad = tmp_path / "text.onnx"
    bad.write_bytes(b"\x00not onnx")
    with pytest.raises(ModelError, match="cannot load the text model .*text.onnx"):
        open_session(bad, SessionSettings(), "text model")


def test_provider_options_pass_through(contract_onnx: Path) -> None:
    """(name, options) pairs, as InferenceSession takes them (the latency benchmark's CUDA streams)."""
    settings = SessionSettings((("CPUExecutionProvider", {"arena_extend_strategy": "kSameAsRequested"}),))
    assert open_session(contract_onnx, settings).get_providers() == CPU
    assert settings.beside(["TensorRT"]).providers == ("CPUExecutionProvider",)  # an engine's: the CPU
    assert settings.beside(settings.providers).providers == settings.providers


def test_no_session_is_opened_outside_the_factory() -> None:
    """A grep: InferenceSession(...) and SessionOptions() appear only in backends/session.py (tests may open
    plain sessions as independent references; runtime/c holds no Python of ours, but its aarch64 build folder holds
    a copy of onnxruntime once tests/runtime/test_aarch64.py has run)."""
    pattern = re.compile(r"\b(InferenceSession|SessionOptions)\(")
    factory = "runtime/semobridge_runtime/backends/session.py"
    found = [(str(path.relative_to(ROOT)), n) for folder in ("runtime", "export", "semobridge", "benchmarks")
             for path in sorted((ROOT / folder).rglob("*.py")) if (ROOT / "runtime" / "c") not in path.parents
             for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1) if pattern.search(line)]
    assert [f"{path}:{n}" for path, n in found if path != factory] == []
    assert len(found) == 2  # the factory's own SessionOptions() and InferenceSession(...)

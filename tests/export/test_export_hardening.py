"""The export's output folder, interruption, telemetry and models it cannot export (issue 9)."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from click.testing import CliRunner

from semobridge_export import export
from semobridge_export.cli import main
from tests.helpers import synthetic_features


def _names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_a_plain_export_replaces_an_earlier_one_as_a_whole(exported_onnx, tiny_head, tiny_backbone, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(exported_onnx, out)  # an earlier export with int8 artifacts and a Triton repository (the session's)
    assert "model_int8.onnx" in _names(out) and (out / "triton").is_dir()
    export(tiny_head, tiny_backbone, out, log=lambda _: None)
    names = _names(out)
    assert "model.onnx" in names and not [n for n in names if "int8" in n]  # no stale int8 graph with old classes
    plain = json.loads((out / "manifest.json").read_text())["files"]
    assert not (out / "triton").exists() and not any(f.startswith("triton/") for f in plain)
    assert set(names) == {Path(f).parts[0] for f in plain} | {"manifest.json"}


def test_a_folder_with_other_files_is_refused_before_the_fit(tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    started = time.perf_counter()
    result = CliRunner().invoke(main, ["--model", "semobridge-tiny", "--pretrained", "none", "--shots", "1", "--out", str(out)])
    assert result.exit_code == 2 and "no semobridge export wrote there: notes.txt" in result.output
    assert time.perf_counter() - started < 5 and _names(out) == ["notes.txt"]


def test_a_model_fitted_from_unnamed_features_says_how_to_export_it(tmp_path):
    from semobridge.fit import features_info, fit_features

    feats = synthetic_features(classes=3, shots=2, val=0)
    head = fit_features(feats, features_info(feats))
    model = head.save(tmp_path / "m.safetensors")
    result = CliRunner().invoke(main, ["--from-model", str(model), "--out", str(tmp_path / "out")])
    assert result.exit_code == 3 and "--model NAME --pretrained WEIGHTS" in result.output


def _export_process(args: list[str], home: Path) -> subprocess.Popen:
    env = {**os.environ, "HOME": str(home), "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    env.pop("ORT_DISABLE_TELEMETRY", None)
    return subprocess.Popen([sys.executable, "-m", "semobridge_export.cli", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_sigterm_leaves_nothing_and_home_stays_clean(tmp_path):
    """SIGTERM while the graph is written: no staging folder is left; and no export writes under HOME."""
    home = tmp_path / "home"
    home.mkdir()
    args = ["--model", "semobridge-tiny", "--pretrained", "none", "--shots", "1", "--int8-cpu"]
    proc = _export_process([*args, "--out", str(tmp_path / "killed")], home)
    for line in proc.stdout:
        if line.startswith("writing onnx"):
            time.sleep(0.5)
            proc.send_signal(signal.SIGTERM)
            break
    proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM
    assert _names(tmp_path) == ["home"], "no .partial staging folder and no output are left behind"

    proc = _export_process([*args, "--out", str(tmp_path / "done")], home)
    output, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, output
    assert list(home.rglob("*")) == [], "ONNX Runtime telemetry (or anything else) wrote under HOME"


def test_the_int8_fusions_log_no_deduplication_warnings(caplog):
    """Every --int8-cpu export printed four `WARNING:onnx_ir...Skipped deduplication` lines about the class-set
    inputs (initializers that are graph inputs by design): nothing the user can act on (issue 18, item 12)."""
    import logging

    import numpy as np
    import onnx_ir as ir

    from semobridge_export.precision import fuse_for_onnxruntime

    x = ir.Value(name="x", type=ir.TensorType(ir.DataType.FLOAT), shape=ir.Shape([2]))
    classes = ir.Value(name="class_kl", type=ir.TensorType(ir.DataType.FLOAT), shape=ir.Shape([2]),
                       const_value=ir.tensor(np.ones(2, np.float32)))
    add = ir.node("Add", [x, classes])
    add.outputs[0].name, add.outputs[0].shape, add.outputs[0].type = "y", ir.Shape([2]), ir.TensorType(ir.DataType.FLOAT)
    graph = ir.Graph([x, classes], add.outputs, nodes=[add], initializers=[classes], opset_imports={"": 18})
    with caplog.at_level(logging.WARNING):
        fuse_for_onnxruntime(ir.Model(graph, ir_version=10))
    assert not [r for r in caplog.records if "deduplication" in r.getMessage()]

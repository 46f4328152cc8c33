"""The export folder's manifest and staging folders (issue 18, items 1 and 12): a crafted manifest.json makes us
remove nothing outside the folder, nothing changed since, nothing through a symbolic link; a staging folder that
a killed export left is cleaned by the next export, when it holds our marker and its process is gone."""
from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from semobridge.errors import InputError
from semobridge_export.cli import main
from semobridge_export.exporter import MANIFEST, STAGE_MARKER, _move_into, check_out_dir, remove_stale_stages


def _manifest(folder: Path, files: dict) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / MANIFEST).write_text(json.dumps({"semobridge_export": "0.1.0", "files": files}))


def _entry(data: bytes) -> dict:
    return {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def _stage(parent: Path, name: str, marker: dict | None) -> Path:
    stage = parent / name
    (stage / "sub").mkdir(parents=True)
    (stage / "model.onnx").write_bytes(b"half written")
    if marker is not None:
        (stage / STAGE_MARKER).write_text(json.dumps(marker))
    return stage


def test_the_issues_crafted_manifest_empties_nothing(tiny_head, tmp_path, monkeypatch):
    """The issue's command: `semobridge-export --from-model m.safetensors --out art` with art/manifest.json listing
    "../README.txt" emptied proj/. Also a staging folder of a SIGKILLed export is cleaned, and only that one."""
    proj = tmp_path / "proj"
    (proj / "art").mkdir(parents=True)
    (proj / "README.txt").write_text("notes\n")
    (proj / "art" / MANIFEST).write_text('{"semobridge_export":"0.1.0", "files":{"../README.txt":{"bytes":1,"sha256":"0"}}}')
    tiny_head.save(proj / "m.safetensors")
    process = subprocess.Popen(["true"])
    process.wait()
    killed = _stage(proj, ".art.k1ll3d.partial", {"pid": process.pid, "host": socket.gethostname()})
    running = _stage(proj, ".art.running.partial", {"pid": os.getpid(), "host": socket.gethostname()})
    unmarked = _stage(proj, ".art.mine.partial", None)
    monkeypatch.chdir(proj)
    result = CliRunner().invoke(main, ["--from-model", "m.safetensors", "--out", "art"])
    assert result.exit_code == 0, result.output
    assert (proj / "README.txt").read_text() == "notes\n" and (proj / "m.safetensors").is_file()
    assert (proj / "art" / "model.onnx").is_file() and "../README.txt" not in (proj / "art" / MANIFEST).read_text()
    assert not killed.exists() and running.is_dir() and unmarked.is_dir()
    assert sorted(p.name for p in proj.iterdir()) == [".art.mine.partial", ".art.running.partial", "README.txt", "art",
                                                      "m.safetensors"]


@pytest.mark.parametrize("name", ["../victim.txt", "VICTIM", "sub/../../victim.txt", "./../victim.txt", "link/victim.txt",
                                  "file_link", "", "a\\..\\..\\victim.txt"])
def test_manifest_names_outside_the_folder_remove_nothing(tmp_path, name):
    """Absolute and relative escapes, names through a symbolic link to a folder or a file outside: nothing outside
    the folder is touched, with an absolute --out too (the issue's second case emptied X of X/out)."""
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    out = tmp_path / "out"
    out.mkdir()
    (out / "link").symlink_to(tmp_path)
    (out / "file_link").symlink_to(victim)
    _manifest(out, {(str(victim) if name == "VICTIM" else name): _entry(b"precious"), "link": _entry(b""),
                    "file_link": _entry(b"precious")})
    with pytest.raises(InputError, match="no semobridge export wrote there: file_link, link"):
        check_out_dir(out)  # the links are not ours: refused before the fit
    for link in ("link", "file_link"):
        (out / link).unlink()
    assert check_out_dir(out) == out
    stage = tmp_path / "stage"
    stage.mkdir()
    (stage / "model.onnx").write_bytes(b"new")
    _manifest(stage, {"model.onnx": _entry(b"new")})
    _move_into(stage, out, {})
    assert victim.read_text() == "precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "stage", "victim.txt"]
    assert sorted(p.name for p in out.iterdir()) == [MANIFEST, "model.onnx"]


def test_only_unchanged_files_of_the_manifest_are_removed(tmp_path):
    """An earlier export is replaced as a whole, file by file; a file changed since it was written is not ours
    any more: the folder is refused before the fit, and if it changes during the export it is left alone."""
    out = tmp_path / "out"
    (out / "triton" / "1").mkdir(parents=True)
    files = {"model.onnx": b"old graph", "model_int8.onnx": b"old int8", "triton/1/model.onnx": b"old triton"}
    for name, data in files.items():
        (out / name).write_bytes(data)
    _manifest(out, {name: _entry(data) for name, data in files.items()})
    assert check_out_dir(out) == out
    stage = tmp_path / "stage"
    stage.mkdir()
    (stage / "model.onnx").write_bytes(b"new graph")
    _manifest(stage, {"model.onnx": _entry(b"new graph")})
    (out / "triton" / "1" / "notes.txt").write_text("added during the export")  # not ours: kept, and said so
    with pytest.raises(InputError, match="changed during the export: triton/1/notes.txt .* nothing was placed"):
        _move_into(stage, out, {})
    assert (out / "triton" / "1" / "notes.txt").read_text() == "added during the export"
    for name, data in files.items():  # nothing placed, nothing removed (the new graph was placed, int8 removed)
        assert (out / name).read_bytes() == data
    assert sorted(p.name for p in out.iterdir()) == [MANIFEST, "model.onnx", "model_int8.onnx", "triton"]
    assert (stage / "model.onnx").read_bytes() == b"new graph"

    (out / "model.onnx").write_bytes(b"edited by hand")
    with pytest.raises(InputError, match="no semobridge export wrote there: model.onnx"):
        check_out_dir(out)


def test_only_our_stale_stages_of_dead_exports_are_removed(tmp_path):
    process = subprocess.Popen(["true"])
    process.wait()
    host = socket.gethostname()
    out = tmp_path / "out"
    dead = _stage(tmp_path, ".out.dead.partial", {"pid": process.pid, "host": host})
    alive = _stage(tmp_path, ".out.alive.partial", {"pid": os.getpid(), "host": host})
    elsewhere = _stage(tmp_path, ".out.other.partial", {"pid": process.pid, "host": host + "-another-machine"})
    unmarked = _stage(tmp_path, ".out.plain.partial", None)
    garbled = _stage(tmp_path, ".out.garbled.partial", None)
    (garbled / STAGE_MARKER).write_text("{not json")
    other_out = _stage(tmp_path, ".output.dead.partial", {"pid": process.pid, "host": host})
    linked = tmp_path / ".out.link.partial"
    linked.symlink_to(dead)
    assert remove_stale_stages(out) == [dead]
    assert not dead.exists() and all(p.is_dir() for p in (alive, elsewhere, unmarked, garbled, other_out))
    assert linked.is_symlink()

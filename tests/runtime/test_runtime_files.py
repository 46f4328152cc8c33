"""The one bounded reader and the one output rule (issue 18, items 4-7 and 12): FIFOs and devices are refused
without blocking, sizes are capped before reading, class files are saved under the output rule, non-finite
tensors and unusable class names in a model are refused at load."""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import threading
from pathlib import Path
from typing import Any, Callable

import numpy as np
import onnx
import pytest

from semobridge_runtime import Classifier, InputError, ModelError, files, tensorfile
from semobridge_runtime.classes_cli import main as classes_main
from semobridge_runtime.cli import main as run_main
from tests.runtime.test_classes import shots

TIMEOUT = 20  # seconds: a reader that blocks on a FIFO fails the test instead of hanging the suite


def within_timeout(call: Callable[[], Any], *fifos: Path) -> Any:
    """call() in a thread; fail (and unblock it by opening the FIFOs for writing) if it does not end in TIMEOUT."""
    result: dict[str, Any] = {}

    def run() -> None:
        try:
            result["value"] = call()
        except BaseException as exc:  # noqa: BLE001  (re-raised below, in the test's thread)
            result["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(TIMEOUT)
    if thread.is_alive():
        for fifo in fifos:
            with open(fifo, "wb"):
                pass
        pytest.fail(f"blocked for over {TIMEOUT} s (a FIFO opened or read without O_NONBLOCK?)")
    if "error" in result:
        raise result["error"]
    return result.get("value")


@pytest.fixture()
def odd_files(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    """name -> (path, what the error says): a FIFO, a character device, a directory, a symlink loop."""
    fifo = tmp_path / "pipe.classes"
    os.mkfifo(fifo)
    device = tmp_path / "zero.classes"
    try:
        os.mknod(device, stat.S_IFCHR | 0o644, os.makedev(1, 5))  # the issue's `mknod z.classes c 1 5` (as root)
    except PermissionError:
        device.symlink_to("/dev/zero")  # the same device, reached through a link
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    (tmp_path / "folder.classes").mkdir()
    return {"fifo": (fifo, "is a pipe (FIFO), not a regular file"),
            "device": (device, "is a character device, not a regular file"),
            "folder": (tmp_path / "folder.classes", "is a directory, not a file"),
            "loop": (tmp_path / "loop", "Too many levels of symbolic links")}


def test_the_reader_refuses_what_is_not_a_small_regular_file(odd_files, tmp_path) -> None:
    for path, says in odd_files.values():
        with pytest.raises(InputError, match=re.escape(says)) as info:
            within_timeout(lambda: files.read_bytes(path, "class file", 1 << 20), path)
        assert info.value.hint
        with pytest.raises(ModelError, match=re.escape(says)):
            within_timeout(lambda: files.read_bytes(path, "class file", 1 << 20, ModelError), path)
    big = tmp_path / "big.bin"
    with open(big, "wb") as f:
        f.truncate(101)  # sparse: the size is checked before a byte is read
    with pytest.raises(InputError, match="has 101 bytes, over the limit of 100 for a manifest"):
        files.read_bytes(big, "manifest", 100)
    assert files.read_bytes(big, "manifest", 101) == b"\0" * 101
    with pytest.raises(InputError, match="it does not exist"):
        files.read_text(tmp_path / "missing.json", "manifest")
    (tmp_path / "latin1.txt").write_bytes(b"caf\xe9")
    with pytest.raises(InputError, match="is not UTF-8 text"):
        files.read_text(tmp_path / "latin1.txt", "class names file")


def test_class_files_that_are_fifos_or_devices_are_refused_by_every_front_end(enrol_export, enrol_pool, odd_files,
                                                                               capsys) -> None:
    """semobridge-classes list/add, semobridge-run --classes and Classifier.load(classes=) (semobridge-serve's path):
    the issue's FIFO blocked them, its character device was read until the OOM killer came."""
    model, image = str(enrol_export), str(shots(enrol_pool, "red fox", "test")[0])
    for name in ("fifo", "device"):
        path, says = odd_files[name]
        for argv, main in ((["list", str(path)], classes_main),
                           (["add", str(path), "swan", image, "--model", model], classes_main),
                           ([model, image, "--classes", str(path)], run_main)):
            assert within_timeout(lambda: main(argv), path) == 3, (name, argv)
            assert says in capsys.readouterr().err, (name, argv)
        with pytest.raises(ModelError, match=re.escape(says)):
            within_timeout(lambda: Classifier.load(enrol_export, classes=path), path)
        assert stat.S_ISFIFO(os.stat(path).st_mode) or stat.S_ISCHR(os.stat(path).st_mode)  # left as it was


def test_an_image_that_is_a_fifo_is_named_as_such(enrol_export, odd_files, capsys) -> None:
    fifo, _ = odd_files["fifo"]
    assert within_timeout(lambda: run_main([str(enrol_export), str(fifo)]), fifo) == 2
    err = capsys.readouterr().err
    assert "image file" in err and "is a pipe (FIFO), not a regular file" in err and "no such image" not in err


def test_save_classes_follows_the_output_rule(enrol_export, enrol_pool, tmp_path, capsys) -> None:
    clf = Classifier.load(enrol_export)
    fifo = tmp_path / "pipe.classes"
    os.mkfifo(fifo)
    with pytest.raises(InputError, match="exists and is not a regular file"):
        within_timeout(lambda: clf.save_classes(fifo), fifo)
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)
    locked = tmp_path / "locked.classes"
    clf.save_classes(locked)
    before = locked.read_bytes()
    locked.chmod(0o444)
    with pytest.raises(InputError, match="is read-only"):
        clf.save_classes(locked)
    assert stat.S_IMODE(locked.stat().st_mode) == 0o444 and locked.read_bytes() == before
    private = tmp_path / "private.classes"
    clf.save_classes(private)
    private.chmod(0o600)
    clf.rename_class(clf.class_names[0], "renamed")
    clf.save_classes(private)
    assert stat.S_IMODE(private.stat().st_mode) == 0o600 and private.read_bytes() != before
    # the command: chmod 444 s.classes; semobridge-classes add s.classes x IMG ... exited 0
    swan = [str(p) for p in shots(enrol_pool, "white swan")]
    assert classes_main(["add", str(locked), "x", *swan, "--model", str(enrol_export)]) == 2
    assert "is read-only" in capsys.readouterr().err and locked.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["locked.classes", "pipe.classes", "private.classes"]


def test_remove_names_a_class_given_twice(enrol_export, tmp_path, capsys) -> None:
    file = tmp_path / "shop.classes"
    assert classes_main(["remove", str(file), "red fox", "red fox", "--model", str(enrol_export)]) == 2
    err = capsys.readouterr().err
    assert "'red fox' given more than once" in err and "no class named" not in err and not file.exists()


def _with_nan(src: Path, dst: Path, tensor: str) -> Path:
    tensors, meta = tensorfile.read(src, "head")
    bad = np.array(tensors[tensor])
    bad.reshape(-1)[1] = np.nan
    dst.write_bytes(tensorfile.encode({**tensors, tensor: bad}, meta))
    return dst


def test_non_finite_tensors_are_refused_on_load(enrol_export, tmp_path) -> None:
    """head.safetensors (the fitted head that enrolment reads) and class files with NaN: a ModelError naming the
    tensor, not NaN scores."""
    model = tmp_path / "model"
    shutil.copytree(enrol_export.parent, model)
    _with_nan(enrol_export.parent / "head.safetensors", model / "head.safetensors", "bridge.pinv")
    clf = Classifier.load(model / "model.onnx")
    with pytest.raises(ModelError, match=r"holds NaN or infinite values \(bridge.pinv\)"):
        clf.remove_class(clf.class_names[0])
    Classifier.load(enrol_export).save_classes(tmp_path / "good.classes")
    bad = _with_nan(tmp_path / "good.classes", tmp_path / "bad.classes", "text_classifier")
    with pytest.raises(ModelError, match=r"class file .* holds NaN or infinite values \(text_classifier\)"):
        Classifier.load(enrol_export, classes=bad)


def test_a_safetensors_header_over_the_limit_is_refused_before_it_is_read(tmp_path) -> None:
    path = tmp_path / "huge.classes"
    with open(path, "wb") as f:  # sparse: no disk used
        f.write((100_000_001).to_bytes(8, "little"))
        f.truncate(8 + 100_000_001)
    with pytest.raises(ModelError, match="a header of 100000001 bytes, over safetensors' limit"):
        tensorfile.read(path, "class file")


def _edited_model(src: Path, dst: Path, **changes: Any) -> Path:
    model = onnx.load(str(src))
    for prop in model.metadata_props:
        if prop.key == "semobridge":
            prop.value = json.dumps({**json.loads(prop.value), **changes})
    onnx.save(model, str(dst))
    return dst


@pytest.mark.parametrize("names, says", [
    (["a", "b"], "the graph holds 3 classes"),  # 2 names for 3 classes: an IndexError in semobridge-run before
    (["a", "b", "c", "d"], "the graph holds 3 classes"),
    (["a", "", "c"], "is empty"),
    (["a", "a\nb", "c"], "contains a control character"),
    (["a", "B", "b"], "duplicate class name 'b' \\(class 2 repeats class 1, 'B'"),
])
def test_class_names_in_the_metadata_are_checked_at_load(enrol_export, tmp_path, names, says) -> None:
    bad = _edited_model(enrol_export, tmp_path / "model.onnx", class_names=names)
    with pytest.raises(ModelError, match=says):
        Classifier.load(bad, prefer_int8=False)

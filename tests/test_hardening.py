"""Bad input to the `semobridge` command: exit code by kind, one line naming the problem (and a hint),
no traceback, nothing written or changed (issue 9)."""
from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from semobridge.cli import main
from semobridge.data import load_dataset, load_rgb
from semobridge.encode import EmbeddingCache, encode_items
from semobridge.errors import INPUT_EXIT, MODEL_EXIT, InputError
from semobridge_runtime import tensorfile
from tests.helpers import synthetic_features, write_image_folder

TINY = ["--model", "semobridge-tiny", "--pretrained", "none"]


def refused(*args, code: int = INPUT_EXIT, says: str) -> str:
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code == code, result.output + repr(result.exception)
    assert says in result.output, result.output
    assert "Traceback" not in result.output and "semobridge: error: " in result.output
    return result.output


@pytest.fixture(scope="module")
def features_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("feats") / "features.npz"
    synthetic_features(classes=4, shots=2, seed=5).save(path)
    return path


@pytest.fixture(scope="module")
def model_file(features_file, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("model") / "m.safetensors"
    assert CliRunner().invoke(main, ["fit-features", str(features_file), "-o", str(path), "--search-trials", "16"]).exit_code == 0
    return path


# --- outputs: never replace what is not a regular writable file; check before the work -----------

def test_a_non_regular_target_is_refused_and_left_alone(features_file, tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)  # like /dev/full: not a regular file
    refused("fit-features", features_file, "-o", fifo, says="exists and is not a regular file")
    refused("fit-features", features_file, "-o", tmp_path / "m.safetensors", "--log-json", fifo, says="not a regular file")
    assert fifo.is_fifo() and not (tmp_path / "m.safetensors").exists()


def test_a_read_only_target_is_refused_and_an_existing_file_keeps_its_mode(features_file, model_file, tmp_path):
    locked = tmp_path / "locked.safetensors"
    locked.write_bytes(b"precious")
    locked.chmod(0o444)
    refused("fit-features", features_file, "-o", locked, says="is read-only")
    assert locked.read_bytes() == b"precious"
    kept = tmp_path / "kept.safetensors"
    kept.write_bytes(b"old")
    kept.chmod(0o640)
    assert CliRunner().invoke(main, ["fit-features", str(features_file), "-o", str(kept), "--search-trials", "4"]).exit_code == 0
    assert kept.read_bytes() != b"old" and kept.stat().st_mode & 0o777 == 0o640
    refused("predict-features", model_file, features_file, "-o", locked, says="is read-only")


def test_an_unusable_folder_is_refused_before_the_fit(image_folder, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    refused("fit", "--data", image_folder, "--shots", 1, *TINY, "-o", blocker / "m.safetensors", says="is not a folder")
    refused("fit", "--data", image_folder, "--shots", 1, *TINY, "-o", tmp_path / "m.safetensors",
            "--cache-dir", blocker / "cache", says="is not a folder")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


# --- numbers and options --------------------------------------------------------------------

@pytest.mark.parametrize("params, says", [
    ("5", "must be a JSON object"), ("[1, 2, 3]", "must be a JSON object"), ('{"alpha": 1}', "missing"),
    (json.dumps({**dict.fromkeys(["smoothness", "alpha", "beta", "gamma", "lambda1", "lambda2"], 0.5), "lambda3": None}),
     "lambda3 must be a finite number"),
    (json.dumps({**dict.fromkeys(["smoothness", "alpha", "beta", "gamma", "lambda1", "lambda2", "lambda3"], 0.5), "alpha": 11}),
     "alpha = 11 is outside its range 0.0..10.0"),
    ('{"smoothness": NaN, "alpha": 1, "beta": 1, "gamma": 1, "lambda1": 1, "lambda2": 1, "lambda3": 1}',
     "smoothness must be a finite number"), ("x" * 20_000, "over 10,000 characters"), ("{not json", "is not JSON"),
])
def test_bad_params_give_one_line(features_file, tmp_path, params, says):
    refused("fit-features", features_file, "-o", tmp_path / "m.safetensors", "--params", params, says=says)
    assert not (tmp_path / "m.safetensors").exists()


def test_a_params_file_with_bad_json_and_non_positive_counts(features_file, tmp_path):
    bad = tmp_path / "p.json"
    bad.write_text('{"alpha": ')
    refused("fit-features", features_file, "-o", tmp_path / "m", "--params", bad, says=f"--params file {bad} is not JSON")
    refused("fit-features", features_file, "-o", tmp_path / "m", "--steps", 0, says="Invalid value for '--steps'")
    refused("fit-features", features_file, "-o", tmp_path / "m", "--search-trials", -1, says="Invalid value for '--search-trials'")


# --- model files ------------------------------------------------------------------------------

def _rewrite_metadata(src: Path, dst: Path, edit) -> Path:
    """A copy of a model file whose JSON metadata went through `edit` (a user's hand edit)."""
    text, data = tensorfile.split(src.read_bytes())
    header = json.loads(text)
    meta = json.loads(header["__metadata__"]["semobridge"])
    header["__metadata__"]["semobridge"] = json.dumps(edit(meta))
    dst.write_bytes(tensorfile.join(json.dumps(header).encode(), data))
    return dst


@pytest.mark.parametrize("edit, says", [
    (lambda m: {**m, "surprise": 1}, "unknown metadata key(s) surprise"),
    (lambda m: [m], "not a semobridge model file"),
    (lambda m: {**m, "backbone": "ViT-B-16"}, "'backbone' has the wrong type"),
    (lambda m: {**m, "class_names": m["class_names"][:-1]}, "does not match the number of class names"),
    (lambda m: {k: v for k, v in m.items() if k != "params"}, "metadata lacks params"),
    (lambda m: {**m, "class_names": ["a", "b\nc", "d", "e"]}, "contains a control character"),
    (lambda m: {**m, "class_names": ["a", "b\ud800", "d", "e"]}, "contains a lone surrogate (U+D800)"),
])
def test_edited_model_files_are_refused_on_load(model_file, tmp_path, edit, says):
    bad = _rewrite_metadata(model_file, tmp_path / "bad.safetensors", edit)
    refused("info", bad, code=MODEL_EXIT, says=says)
    refused("predict-features", bad, model_file, "-o", tmp_path / "s.npy", code=MODEL_EXIT, says=says)
    assert not (tmp_path / "s.npy").exists()


def test_a_model_file_missing_a_tensor(model_file, tmp_path):
    from safetensors.torch import load_file, save_file
    from safetensors import safe_open

    tensors = load_file(str(model_file))
    with safe_open(str(model_file), "pt") as f:
        meta = f.metadata()
    del tensors["image_prototypes"]
    save_file(tensors, str(tmp_path / "m.safetensors"), metadata=meta)
    refused("info", tmp_path / "m.safetensors", code=MODEL_EXIT, says="missing tensor(s) image_prototypes")


# --- FEATURES.npz and QUERIES.npz ---------------------------------------------------------------

def _features_with(tmp_path: Path, **override) -> Path:
    base = tmp_path / "f.npz"
    synthetic_features(classes=3, shots=2, seed=1).save(base)
    arrays = {**np.load(base), **override}
    path = tmp_path / "edited.npz"
    np.savez(path, **arrays)
    return path


@pytest.mark.parametrize("override, says", [
    ({"shot_image": np.zeros((6, 64), np.complex64)}, "shot_image has dtype complex64"),
    ({"text_eos": np.array([["a"] * 48] * 6)}, "text_eos has dtype <U1"),
    ({"logit_scale": np.array([100.0, 50.0])}, "logit_scale has shape (2,)"),
    ({"class_names": np.array(["cat", "", "dog"])}, "class name 1, '', is empty"),
    ({"class_names": np.array(["cat", "Cat", "dog"])}, "duplicate class name 'Cat'"),
    ({"class_names": np.array(["cat", "dog\n", "cow"])}, "contains a control character (U+000A)"),
    ({"class_names": np.array(["cat", "c\u200bat", "cow"])}, "contains an invisible format character (U+200B)"),
])
def test_bad_feature_arrays_name_the_file_and_key(tmp_path, override, says):
    refused("fit-features", _features_with(tmp_path, **override), "-o", tmp_path / "m.safetensors", says=says)
    assert not (tmp_path / "m.safetensors").exists()


def test_unreadable_npz_files(tmp_path, model_file):
    empty, text = tmp_path / "empty.npz", tmp_path / "text.npz"
    empty.write_bytes(b"")
    text.write_text("path,label\n")
    for path in (empty, text):
        refused("fit-features", path, "-o", tmp_path / "m.safetensors", says=f"{path} is not a .npz archive of arrays")
    objects = tmp_path / "objects.npz"
    np.savez(objects, image=np.array([{"a": 1}], dtype=object))
    refused("predict-features", model_file, objects, "-o", tmp_path / "s.npy", says="object arrays and pickles are not accepted")
    nan = tmp_path / "nan.npz"
    np.savez(nan, image=np.full((2, 64), np.nan, np.float32))
    refused("predict-features", model_file, nan, "-o", tmp_path / "s.npy", says="NaN or inf")
    assert not (tmp_path / "m.safetensors").exists() and not (tmp_path / "s.npy").exists()


# --- datasets ---------------------------------------------------------------------------------

def test_one_class_csv_and_coop_problems_are_named(tmp_path):
    one = write_image_folder(tmp_path / "one", {"train": 3}, classes=("cat",))
    refused("fit", "--data", one / "train", "--shots", 1, *TINY, "-o", tmp_path / "m", says="a classifier needs at least 2")
    image = next((one / "train").rglob("*.png"))
    csv = tmp_path / "list.csv"
    csv.write_text(f"path,label\n{image},cat\n{image}\n")
    refused("fit", "--data", csv, "--shots", 1, *TINY, "-o", tmp_path / "m", says=f"{csv}, line 3")
    coop = tmp_path / "coop"
    (coop / "images").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(coop / "images" / "a.png")
    (coop / "split_zhou_x.json").write_text(json.dumps({"train": [["images/a.png", 0, "cat"], ["images/a.png", 1]]}))
    refused("fit", "--data", coop, "--shots", 1, *TINY, "-o", tmp_path / "m", says="train entry 1 is [")
    assert not (tmp_path / "m").exists()


def test_sixteen_bit_images_are_scaled_not_saturated(tmp_path):
    values = np.array([[0, 257, 32896], [65535, 1000, 40000]], np.uint16)
    path = tmp_path / "deep.png"
    Image.fromarray(values).save(path)  # a 16-bit grey PNG (mode I;16)
    with Image.open(path) as im:
        assert im.mode.startswith("I")
    pixels = np.asarray(load_rgb(path))
    assert pixels[..., 0].tolist() == ((values.astype(np.int64) + 128) // 257).tolist()
    assert (pixels[..., 0] == pixels[..., 2]).all()


def test_huge_or_extreme_images_are_refused_at_fit(tmp_path):
    path = tmp_path / "line.png"
    Image.new("L", (100_000, 1)).save(path)
    with pytest.raises(Exception, match="side over the limit of 16384"):
        load_rgb(path)


def test_eval_refuses_a_dataset_with_other_class_names(image_folder, tmp_path):
    model = tmp_path / "m.safetensors"
    assert CliRunner().invoke(main, ["fit", "--data", str(image_folder), "--shots", "2", *TINY, "-o", str(model),
                                     "--search-trials", "4"]).exit_code == 0
    other = write_image_folder(tmp_path / "other", {"train": 1, "val": 1, "test": 1}, classes=("cat", "dog", "cow"))
    refused("eval", model, "--data", other, says="they differ at class 0")


def test_the_cache_is_keyed_on_content_not_on_path_size_and_mtime(tiny_backbone, tmp_path):
    folder = write_image_folder(tmp_path / "data", {"train": 1}, classes=("cat", "dog"))
    path = str(next((folder / "train").rglob("*.png")))
    cache = EmbeddingCache(tmp_path / "cache")
    before, _ = encode_items(tiny_backbone, [(path, 0)], cache)
    stat = os.stat(path)
    pixels = np.asarray(Image.open(path).convert("RGB"))[::-1].copy()  # other pixels, same size
    Image.fromarray(pixels).save(path)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    after, _ = encode_items(tiny_backbone, [(path, 0)], cache)
    assert not torch.equal(before, after)


def test_no_cache_unless_asked(tiny_backbone, tmp_path, monkeypatch):
    monkeypatch.delenv("SEMOBRIDGE_CACHE", raising=False)
    assert not EmbeddingCache().enabled
    monkeypatch.setenv("SEMOBRIDGE_CACHE", str(tmp_path / "c"))
    assert EmbeddingCache().folder == tmp_path / "c"


# --- the command itself -----------------------------------------------------------------------

def test_help_and_info_do_not_import_torch(model_file):
    code = ("import sys; from semobridge.cli import main\n"
            "try:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
            "assert 'torch' not in sys.modules, 'torch imported'")
    for args in (["--help"], ["info", str(model_file)], ["fit", "--help"]):
        done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr


def test_every_command_has_version_and_every_option_help():
    from semobridge_export.cli import build_engine_main, main as export_main

    commands = [main, *main.commands.values(), export_main, build_engine_main]
    for cmd in commands:
        for param in cmd.params:
            if isinstance(param, __import__("click").Option) and param.name not in ("help",):
                assert param.help, f"{cmd.name} {param.opts} has no help text"
    for cmd in (main, export_main, build_engine_main):
        result = CliRunner().invoke(cmd, ["--version"])
        assert result.exit_code == 0 and "0.1.0" in result.output


def test_info_describes_an_exported_graph(exported_onnx):
    result = CliRunner().invoke(main, ["info", str(exported_onnx / "model.onnx")])
    assert result.exit_code == 0, result.output
    assert "classes       5: red fox" in result.output and "max_pixels 67,108,864" in result.output
    refused("info", exported_onnx / "model.json", code=MODEL_EXIT, says="not a semobridge model file")


def test_dataset_class_names_from_csv_are_checked(tmp_path):
    folder = write_image_folder(tmp_path / "d", {"train": 1}, classes=("cat", "dog"))
    images = sorted((folder / "train").rglob("*.png"))
    csv = tmp_path / "l.csv"
    csv.write_text(f"{images[0]},Cat\n{images[1]},cat\n")
    with pytest.raises(Exception, match="duplicate class name"):
        load_dataset(csv)
    csv.write_text(f"{images[0]},cat\n{images[1]},\ufeffdog\n")  # a byte order mark inside the file
    with pytest.raises(InputError, match=r"class name 1, '\\ufeffdog', contains an invisible format character"):
        load_dataset(csv)


def test_fit_features_records_a_named_backbone_so_the_model_exports(tiny_backbone, tmp_path):
    from benchmarks.common import synthetic_features as features_for
    from semobridge_export.cli import main as export_main

    W = tiny_backbone.text_projection
    features_for(3, 2, 2, *W.shape, seed=0, text_projection=W).save(tmp_path / "f.npz")
    model = tmp_path / "m.safetensors"
    result = CliRunner().invoke(main, ["fit-features", str(tmp_path / "f.npz"), *TINY, "-o", str(model), "--search-trials", "8"])
    assert result.exit_code == 0, result.output
    result = CliRunner().invoke(export_main, ["--from-model", str(model), "--pretrained", "none", "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    synthetic_features(classes=3, shots=2, seed=1).save(tmp_path / "other.npz")
    refused("fit-features", tmp_path / "other.npz", *TINY, "-o", tmp_path / "o.safetensors", says="is not the text projection of")


# --- issue 18: whole model files validated, bounded readers, exit codes and messages ------------------

def _rewrite_tensors(src: Path, dst: Path, edit) -> Path:
    """A copy of a model file whose raw bytes (header JSON, data) went through `edit(header, data) -> (header, data)`."""
    text, data = tensorfile.split(src.read_bytes())
    header, data = edit(json.loads(text), bytearray(data))
    dst.write_bytes(tensorfile.join(json.dumps(header).encode(), data))
    return dst


def _nan_in(name: str):
    def edit(header, data):
        begin = header[name]["data_offsets"][0]
        data[begin:begin + 4] = struct.pack("<f", float("nan"))
        return header, data
    return edit


def _offsets_out_of_range(header, data):
    begin, end = header["class_kl"]["data_offsets"]
    header["class_kl"]["data_offsets"] = [begin + len(data), end + len(data)]
    return header, data


@pytest.mark.parametrize("make, says", [
    (lambda src, dst: _rewrite_tensors(src, dst, _nan_in("bridge.pinv")), "holds NaN or infinite values (bridge.pinv)"),
    (lambda src, dst: _rewrite_tensors(src, dst, _nan_in("class_kl")), "holds NaN or infinite values (class_kl)"),
    (lambda src, dst: _rewrite_metadata(src, dst, lambda m: {**m, "std": [0, 0, 0]}), "std [0, 0, 0] is not positive"),
    (lambda src, dst: _rewrite_metadata(src, dst, lambda m: {**m, "std": [0.2, -1, 0.2]}), "is not positive"),
    (lambda src, dst: _rewrite_metadata(src, dst, lambda m: {**m, "image_size": -1}), "image_size -1 is outside"),
    (lambda src, dst: dst.write_bytes(src.read_bytes()[: src.stat().st_size // 2]) and dst, "truncated"),
    (lambda src, dst: _rewrite_tensors(src, dst, _offsets_out_of_range), "does not fit the shape"),
])
def test_the_whole_model_file_is_validated_on_load(model_file, tmp_path, make, says):
    """Issue 18 items 6 and 8: `semobridge info` exited 0 on these, predict-features wrote NaN scores."""
    bad = make(model_file, tmp_path / "bad.safetensors")
    refused("info", bad, code=MODEL_EXIT, says=says)
    refused("predict-features", bad, model_file, "-o", tmp_path / "s.npy", code=MODEL_EXIT, says=says)
    assert not (tmp_path / "s.npy").exists()


def test_csv_rows_naming_a_fifo_a_folder_or_a_link_loop_are_input_errors(tmp_path):
    """A FIFO row blocked `fit`; a folder or a symbolic-link loop exited 4 ("Is a directory")."""
    from tests.runtime.test_runtime_files import within_timeout

    folder = write_image_folder(tmp_path / "d", {"train": 2}, classes=("cat", "dog"))
    good = sorted((folder / "train").rglob("*.png"))
    os.mkfifo(tmp_path / "pipe.png")
    (tmp_path / "dir.png").mkdir()
    (tmp_path / "loop.png").symlink_to(tmp_path / "loop.png")
    for name, says in (("pipe.png", "is a pipe (FIFO), not a regular file"), ("dir.png", "is a directory, not a file"),
                       ("loop.png", "Too many levels of symbolic links")):
        csv = tmp_path / "list.csv"
        csv.write_text("".join(f"{p},{p.parent.name}\n" for p in good) + f"{tmp_path / name},cat\n")
        within_timeout(lambda: refused("fit", "--data", csv, "--shots", 1, *TINY, "-o", tmp_path / "m", says=says),
                       tmp_path / "pipe.png")
    assert not (tmp_path / "m").exists()


def test_a_long_params_value_is_cut_in_the_message(features_file, tmp_path):
    value = json.dumps({"x" * 5000: 1})
    output = refused("fit-features", features_file, "-o", tmp_path / "m.safetensors", "--params", value, says="unknown: xxx")
    assert len(output) < 1000 and "..." in output


def test_short_npz_class_names_are_named(tmp_path):
    path = _features_with(tmp_path, class_names=np.array(["cat", "dog"]))  # three classes in the labels
    refused("fit-features", path, "-o", tmp_path / "m.safetensors", says="class_names has 2 names, but the labels")


def test_ctrl_c_says_interrupted_and_exits_130():
    from semobridge_runtime.commandline import command

    @command("slow")
    def slow():
        raise KeyboardInterrupt

    result = CliRunner().invoke(slow, [])
    assert result.exit_code == 130 and "interrupted" in result.output and "Aborted" not in result.output


def test_fifos_given_as_model_or_feature_files_are_refused_without_blocking(model_file, tmp_path):
    from tests.runtime.test_runtime_files import within_timeout

    fifo = tmp_path / "pipe.safetensors"
    os.mkfifo(fifo)
    within_timeout(lambda: refused("info", fifo, code=MODEL_EXIT, says="is a pipe (FIFO), not a regular file"), fifo)
    within_timeout(lambda: refused("fit-features", fifo, "-o", tmp_path / "m.safetensors", says="is a pipe (FIFO)"), fifo)
    within_timeout(lambda: refused("predict-features", model_file, fifo, "-o", tmp_path / "s.npy",
                                   says="is a pipe (FIFO)"), fifo)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pipe.safetensors"]


def test_a_model_file_with_partial_calibration_data_is_refused_on_load(model_file, tmp_path):
    """The calibration tensors go through the runtime's own check (calibration.CalibrationData.of) when the library
    loads a model file: a partial set was dropped silently, a malformed one written on into head.safetensors."""
    import torch
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    tensors = {k: v for k, v in load_file(str(model_file)).items() if not k.startswith("calibration_")}
    with safe_open(str(model_file), "pt") as f:
        meta = f.metadata()
    save_file({**tensors, "calibration_labels": torch.zeros(3, dtype=torch.int64)}, str(tmp_path / "m.safetensors"),
              metadata=meta)
    refused("predict-features", tmp_path / "m.safetensors", model_file, "-o", tmp_path / "s.npy", code=MODEL_EXIT,
            says="unusable calibration data")
    assert not (tmp_path / "s.npy").exists()

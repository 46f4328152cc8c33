"""`semobridge-export` and `semobridge-build-engine`."""
from __future__ import annotations

import json
import re

from click.testing import CliRunner

from semobridge.backbones import RANDOM_WARNING
from semobridge.cli import fit_cmd as fit_command
from semobridge.datasets import FLIP, Augment
from semobridge.modelfile import read_info
from semobridge_export import openvino_int8
from semobridge_export.cli import build_engine_main, main
from semobridge_export.reference import reference_scores
from tests.helpers import random_photos


def test_help_shows_the_format_table():
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0
    for row in ("onnx-fp16 model_fp16.onnx", "onnx-int8 model_int8.onnx", "pt2 model.pt2", "model_trt.engine",
                "text text.onnx", "text-int8 text_int8.onnx", "openvino-int8 model_openvino_int8.xml"):
        assert re.search(r"\s+".join(map(re.escape, row.split())), result.output), row


def test_export_from_a_model_file(tiny_head, tmp_path):
    model = tiny_head.save(tmp_path / "head.safetensors")
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["--from-model", str(model), "--pretrained", "none", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == [
        "bpe_simple_vocab_16e6.txt.gz", "bpe_simple_vocab_16e6.txt.gz.LICENSE.txt", "head.safetensors", "manifest.json",
        "model.json", "model.onnx", "text.onnx",
    ]
    assert "classes       5: red fox" in result.output and "model.onnx" in result.output
    assert "semobridge-run" in result.output and RANDOM_WARNING in result.output
    scores = reference_scores(out / "model.onnx", random_photos(2, seed=0))["scores"]
    assert scores.shape == (2, 5)


def test_int8_cpu_without_nncf_writes_the_rest_and_says_what_to_install(tiny_head, tmp_path, monkeypatch):
    from semobridge_export import formats

    """--int8-cpu adds the OpenVINO IR only where nncf is installed (the CLI passed the flag's formats on as if asked
    for by name: without nncf every --int8-cpu export failed after the fit); asked for by name, it is refused before
    any work."""
    absent = "nncf is not installed (pip install 'semobridge[nncf]')"
    monkeypatch.setattr(openvino_int8, "missing", lambda: absent)
    monkeypatch.setitem(formats.FLAG_FORMATS, "int8_cpu", ("onnx-int8", "openvino-int8"))  # not the text tower's: time
    model = tiny_head.save(tmp_path / "head.safetensors")
    base = ["--from-model", str(model), "--pretrained", "none"]
    result = CliRunner().invoke(main, [*base, "--out", str(tmp_path / "out"), "--formats", "onnx", "--int8-cpu"])
    assert result.exit_code == 0, result.output
    assert f"openvino-int8 skipped: {absent}" in result.output
    written = {p.name for p in (tmp_path / "out").iterdir()}
    assert "model_int8.onnx" in written and not any("openvino" in name for name in written)
    named = CliRunner().invoke(main, [*base, "--out", str(tmp_path / "named"), "--formats", "onnx,openvino-int8"])
    assert named.exit_code == 2 and f"the openvino-int8 format cannot be written here: {absent}" in named.output
    assert not (tmp_path / "named").exists()


def test_fit_and_export_in_one_go(image_folder, tmp_path):
    """Export reaches the fit's options (here params, templates, descriptions, augment and protocol), and the int8 check
    runs on the split the fit drew."""
    out = tmp_path / "out"
    params = {"smoothness": 0.4, "alpha": 2.0, "beta": 1.5, "gamma": 3.0, "lambda1": 0.5, "lambda2": 0.4, "lambda3": 0.3}
    descriptions = tmp_path / "descriptions.json"
    descriptions.write_text(json.dumps({"red fox": ["A small orange wild dog."]}))
    args = ["--data", str(image_folder), "--shots", "2", "--model", "semobridge-tiny", "--pretrained", "none",
            "--out", str(out), "--fixed-size", "64x48", "--int8-cpu", "--params", json.dumps(params),
            "--template", "a photo of a {}.", "--template", "art of the {}.", "--descriptions", str(descriptions),
            "--augment", "1", "--protocol", "consistent"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    meta = json.loads((out / "model.json").read_text())
    assert meta["shots"] == 2 and meta["num_classes"] == 3 and meta["input"]["shape"] == ["N", 64, 48, 3]
    assert meta["params"] == params
    assert meta["prompts"] == {"templates": ["a photo of a {}.", "art of the {}."],
                               "descriptions": {"red fox": ["A small orange wild dog."]}}
    info = read_info(out / "head.safetensors")
    assert info.protocol == "consistent" and info.augment == Augment(1, FLIP).describe()
    assert "shots         2" in result.output and "val accuracy" in result.output and RANDOM_WARNING in result.output
    # the int8 label agreement is measured on the 2 x 3 images the head was fitted on
    assert "int8: label agreement with fp32 = " in result.output and "on 6 few-shot images" in result.output
    assert json.loads((out / "model_int8.json").read_text())["int8"]["measured_on"] == "few-shot images"
    if openvino_int8.missing() is None:  # the static int8 IR is calibrated and measured on them too
        assert (meta["openvino_int8"]["measured_on"], meta["openvino_int8"]["images"]) == ("few-shot images", 6)


def test_export_takes_every_fit_option():
    """One definition: `semobridge-export` has each option of `semobridge fit`, the same (-o/--out: fit writes a
    model file, export a folder)."""
    fit = {p.name: p for p in fit_command.params if p.name != "out"}
    export = {p.name: p for p in main.params}
    assert export["out"].opts == [p for p in fit_command.params if p.name == "out"][0].opts == ["-o", "--out", "--output"]
    assert set(fit) <= set(export), set(fit) - set(export)
    for name, option in fit.items():
        theirs = export[name]
        assert (theirs.opts, theirs.secondary_opts, type(theirs.type), theirs.multiple) == (
            option.opts, option.secondary_opts, type(option.type), option.multiple), name
        if name not in ("data", "shots"):  # export: the demo dataset, 8 shots
            assert theirs.default == option.default, name


def test_missing_weights_name_both_ways_on(tmp_path):
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["--model", "ViT-B-16", "--pretrained", str(tmp_path / "missing.bin"), "--out", str(out)])
    assert result.exit_code != 0
    assert "--pretrained" in result.output and "--model semobridge-tiny --pretrained none" in result.output
    assert not out.exists()


def test_bad_options_are_refused(tiny_head, tmp_path):
    model = tiny_head.save(tmp_path / "head.safetensors")
    base = ["--from-model", str(model), "--pretrained", "none", "--out", str(tmp_path / "out")]
    for extra, message in [(["--fixed-size", "12"], "HEIGHTxWIDTH"), (["--formats", "onnx,tflite"], "unknown format"),
                           (["--engine", "--batch", "1,2"], "MIN,OPT,MAX"), (["--batch", "1,2,4"], "applies to none"),
                           (["--fixed-size", "100000x100000"], "over the limit"), (["--fixed-size", "16x4000"], "aspect ratio"),
                           (["--shots", "4"], "--from-model exports a fitted model"),
                           (["--model", "ViT-B-32"], "only apply to fitting"),
                           (["--template", "a {}.", "--protocol", "paper"], "--template, --protocol only apply to fitting"),
                           (["--log-json", str(tmp_path / "log.jsonl")], "--log-json only apply to fitting")]:
        result = CliRunner().invoke(main, base + extra)
        assert result.exit_code == 2 and message in result.output, result.output
    assert not (tmp_path / "out").exists()


def test_build_engine_without_tensorrt(exported_onnx, tmp_path):
    result = CliRunner().invoke(build_engine_main, [str(exported_onnx / "model.onnx"), "--cache-dir", str(tmp_path)])
    if "TensorRT is not installed" not in result.output:
        return  # TensorRT present: covered by test_tensorrt.test_build_engine
    assert result.exit_code != 0 and "trtexec --onnx=" in result.output

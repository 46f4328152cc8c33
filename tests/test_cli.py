"""The `semobridge` command end to end: images and embeddings in, model files and scores out."""
import json
import re

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from tests.helpers import synthetic_features
from semobridge.blend import BlendParams
from semobridge.cli import main
from semobridge.model import ModelFileError, SeMoBridge

TINY = ["--model", "semobridge-tiny", "--pretrained", "none"]


def run(*args, ok=True):
    result = CliRunner().invoke(main, [str(a) for a in args])
    if ok:
        assert result.exit_code == 0, result.output + repr(result.exception)
    else:
        assert result.exit_code != 0 and result.exception is not None
    return result


@pytest.fixture(scope="module")
def features_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("feats") / "features.npz"
    synthetic_features(classes=6, shots=3, seed=11).save(path)
    return path


def test_fit_eval_from_images(image_folder, tmp_path, tiny_backbone):
    model = tmp_path / "model.safetensors"
    out = run("fit", "--data", image_folder, "--shots", 4, *TINY, "--cache-dir", tmp_path / "cache", "-o", model).output
    assert "val accuracy" in out and "RANDOM WEIGHTS" in out
    assert "probabilities: temperature" in out and "ECE" in out and re.search("unknown: (top probability|MCM) below", out)
    head = SeMoBridge.load(model)
    info = head.info
    assert info.class_names == ["blue whale", "green tree", "red fox"] and info.shots == 4 and info.val_source == "whole val split"
    assert info.backbone == tiny_backbone.identity() and info.image_size == 224 and info.variant == "training-free"
    assert 0 <= info.val_accuracy <= 1
    head.check_backbone(tiny_backbone)
    files = {"--json": tmp_path / "eval.json", "--csv": tmp_path / "eval.csv", "--confusion": tmp_path / "confusion.png"}
    out = run("eval", model, "--data", image_folder, "--split", "test", "--cache-dir", tmp_path / "cache", "--open-set",
              *[x for kv in files.items() for x in kv]).output
    assert "SeMoBridge" in out and "zero-shot CLIP" in out and "15 test images" in out and "RANDOM WEIGHTS" in out
    assert "macro-F1" in out and "confusion matrix" in out and "MCM (zero-shot)" in out
    report = json.loads(files["--json"].read_text())
    m = np.array(report["confusion"])
    assert m.shape == (3, 3) and m.sum() == 15 and report["accuracy"] == pytest.approx(np.trace(m) / 15)
    assert [r["accuracy"] for r in report["per_class"]] == pytest.approx(list(np.diag(m) / m.sum(1)))
    assert len(report["open_set"]["folds"]) == 2 and 0 <= report["open_set"]["auroc"] <= 1
    o = report["open_set"]
    assert o["score"] == info.open_set["score"] and f"chosen: {o['score']}" in out
    for fold in o["folds"]:  # the chosen score's figures are those of the model's score
        assert fold["chosen_auroc"] == fold["auroc" if o["score"] == "max_probability" else "mcm_auroc"]
    assert files["--csv"].read_text().splitlines()[0] == "class,images,accuracy,precision,f1"
    assert files["--confusion"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # a re-fit with other hyper-parameters encodes nothing again: every embedding comes from the cache
    cached = sorted((tmp_path / "cache").glob("*.npy"))
    run("fit", "--data", image_folder, "--shots", 4, *TINY, "--cache-dir", tmp_path / "cache", "-o", tmp_path / "m2.safetensors",
        "--params", json.dumps(BlendParams(alpha=2).to_dict()))
    assert sorted((tmp_path / "cache").glob("*.npy")) == cached


def test_fit_from_images_is_deterministic_and_trains(image_folder, tmp_path):
    paths = [tmp_path / f"{i}.safetensors" for i in range(2)]
    for p in paths:
        run("fit", "--data", image_folder, "--shots", 2, *TINY, "--train", "--steps", 20, "--seed", 3,
            "--cache-dir", tmp_path / "cache", "-o", p, "--log-json", tmp_path / "log.jsonl")
    assert paths[0].read_bytes() == paths[1].read_bytes()
    assert SeMoBridge.load(paths[0]).info.variant == "trained"
    assert len((tmp_path / "log.jsonl").read_text().splitlines()) == 20


def test_model_from_another_backbone_is_refused(tmp_path, tiny_head):
    from semobridge.backbones import load_backbone

    other = load_backbone("semobridge-tiny", "none", device="cpu", seed=1)
    with pytest.raises(ModelFileError, match="fitted on semobridge-tiny"):
        tiny_head.check_backbone(other)


def test_fit_features_and_predict_features(features_file, tmp_path):
    model, log = tmp_path / "m.safetensors", tmp_path / "log.jsonl"
    run("fit-features", features_file, "-o", model, "--train", "--steps", 1, "--log-json", log, "--search-trials", 256)
    lines = log.read_text().splitlines()
    assert len(lines) == 1
    assert set(json.loads(lines[0])) == {"step", "loss", "img", "txtp", "txte", "cons", "bias", "lr", "val_acc"}
    queries = tmp_path / "q.npz"
    q = np.random.default_rng(0).normal(size=(7, 64)).astype(np.float32)
    np.savez(queries, image=q)
    run("predict-features", model, queries, "-o", tmp_path / "scores.npy")
    scores = np.load(tmp_path / "scores.npy")
    assert scores.dtype == np.float32 and scores.shape == (7, 6)
    with torch.no_grad():
        np.testing.assert_allclose(scores, SeMoBridge.load(model)(torch.from_numpy(q)).numpy(), rtol=1e-6)


def test_fixed_params_and_unequal_shots(tmp_path):
    feats = synthetic_features(classes=4, shots=3, seed=2)
    keep = torch.ones(len(feats.shot_label), dtype=torch.bool)
    keep[:2] = False  # class 0 has one shot, the others three
    feats.shot_image, feats.shot_label = feats.shot_image[keep], feats.shot_label[keep]
    feats.save(tmp_path / "f.npz")
    params = BlendParams(smoothness=0.3, alpha=2, beta=3, gamma=4, lambda1=0.1, lambda2=0.2, lambda3=0.3)
    run("fit-features", tmp_path / "f.npz", "-o", tmp_path / "m.safetensors", "--params", json.dumps(params.to_dict()))
    assert SeMoBridge.load(tmp_path / "m.safetensors").info.params == pytest.approx(params.to_dict())


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda z: z.update(shot_image=z["shot_image"][:, :10]), "shot_image has shape"),
        (lambda z: z.update(text_eos=np.full_like(z["text_eos"], np.nan)), "NaN or inf"),
        (lambda z: z.pop("text_projection"), "lacks the key"),
        (lambda z: z.update(class_names=np.array(["a", "a", "b", "c", "d", "e"])), "duplicate class name"),
        (lambda z: z.update(class_names=np.array(["a", "", "b", "c", "d", "e"])), "empty"),
        (lambda z: z.update(shot_label=np.zeros_like(z["shot_label"])), "have no rows"),
    ],
)
def test_bad_features_are_refused_without_output(features_file, tmp_path, change, message):
    z = dict(np.load(features_file))
    change(z)
    np.savez(tmp_path / "bad.npz", **z)
    result = run("fit-features", tmp_path / "bad.npz", "-o", tmp_path / "m.safetensors", ok=False)
    assert message in result.output
    assert list(tmp_path.iterdir()) == [tmp_path / "bad.npz"]


def test_bad_params_and_queries(features_file, tmp_path):
    result = run("fit-features", features_file, "-o", tmp_path / "m.safetensors", "--params", '{"alpha": 1}', ok=False)
    assert "missing" in result.output and not (tmp_path / "m.safetensors").exists()
    run("fit-features", features_file, "-o", tmp_path / "m.safetensors", "--search-trials", 64)
    np.savez(tmp_path / "q.npz", image=np.zeros((2, 5), np.float32))
    result = run("predict-features", tmp_path / "m.safetensors", tmp_path / "q.npz", "-o", tmp_path / "s.npy", ok=False)
    assert "expected [rows, 64]" in result.output and not (tmp_path / "s.npy").exists()
    (tmp_path / "junk.safetensors").write_bytes(b"\x00" * 100)
    result = run("predict-features", tmp_path / "junk.safetensors", tmp_path / "q.npz", "-o", tmp_path / "s.npy", ok=False)
    assert "is not a semobridge model file" in result.output


def test_failed_fit_from_images_leaves_no_file(image_folder, tmp_path):
    result = run("fit", "--data", image_folder, "--shots", 9, *TINY, "-o", tmp_path / "m.safetensors", ok=False)
    assert "fewer than the 9 needed" in result.output
    assert list(tmp_path.iterdir()) == []

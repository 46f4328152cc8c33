"""The open-set decision: calibration maths against independent references, the runtime's unknown/probabilities,
its bad inputs, and models exported before calibration existed."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

from semobridge_runtime import Classifier, InputError, ModelError, evaluation, openset
from semobridge_runtime.cli import main as run_main

RNG = np.random.default_rng(7)


def reference_nll(z: np.ndarray, y: np.ndarray, t: float) -> float:
    shifted = z / t - (z / t).max(1, keepdims=True)
    log_p = shifted - np.log(np.exp(shifted).sum(1, keepdims=True))
    return float(-np.mean(log_p[np.arange(len(y)), y]))


def test_temperature_minimises_the_nll_on_a_dense_grid() -> None:
    z = RNG.normal(2.5, 0.3, (300, 6))
    y = np.where(RNG.random(300) < 0.6, z.argmax(1), RNG.integers(0, 6, 300))
    t = openset.fit_temperature(z, y)
    grid = np.exp(np.linspace(np.log(1e-3), np.log(1e3), 20001))
    best = grid[np.argmin([reference_nll(z, y, g) for g in grid])]
    assert abs(np.log(t) - np.log(best)) < 1e-3
    assert reference_nll(z, y, t) <= reference_nll(z, y, 1.0)


def test_ece_auroc_fpr_and_threshold_against_direct_computations() -> None:
    probs = RNG.dirichlet(np.ones(4), 500).astype(np.float32)
    y = RNG.integers(0, 4, 500)
    conf, right = probs.max(1), probs.argmax(1) == y
    edges = np.linspace(0, 1, openset.ECE_BINS + 1)
    expected = sum(abs(right[m].mean() - conf[m].mean()) * m.mean()
                   for lo, hi in zip(edges[:-1], edges[1:]) if (m := (conf >= lo) & (conf < hi)).any())
    assert openset.ece(probs, y) == pytest.approx(expected, abs=1e-9)

    known, unknown = RNG.normal(1, 1, 200).round(1), RNG.normal(0, 1, 150).round(1)  # rounded: ties
    pairs = (known[:, None] > unknown[None]).mean() + 0.5 * (known[:, None] == unknown[None]).mean()
    assert openset.auroc(known, unknown) == pytest.approx(pairs, abs=1e-12)
    assert openset.auroc(unknown, known) == pytest.approx(1 - pairs, abs=1e-12)  # the other set searched

    t = openset.threshold_at(known, 0.95)
    assert (known >= t).mean() >= 0.95 and (known > t).mean() < 0.95  # the largest threshold that keeps 95 %
    assert openset.fpr_at_tpr(known, unknown, 0.95) == pytest.approx((unknown >= t).mean())


def test_leave_one_class_out_aurocs_equal_dropping_the_column() -> None:
    z = RNG.normal(0, 3, (90, 6))
    y = RNG.integers(0, 5, 90)  # class 5 has no image: NaN
    got = openset.loco_aurocs(z, y, 0.7)
    for c in range(6):
        if c == 5:
            assert np.isnan(got[c])
            continue
        top = openset.abstention_score(openset.probabilities(np.delete(z, c, axis=1), 0.7))
        assert got[c] == pytest.approx(openset.auroc(top[y != c], top[y == c]), abs=1e-12)


def test_the_score_is_the_top_probability_only_when_it_wins_leave_one_class_out_with_confidence() -> None:
    """Class c's images: blend scores peaked on c (the top probability tells a class that is not enrolled: its
    images spread over the others) or flat; cosines peaked on c, weaker. MCM wins ties and where it is better."""
    C, per = 8, 30
    y = np.repeat(np.arange(C), per)
    onehot = np.eye(C)[y]

    def chosen(blend_peak: float, cosine_peak: float) -> tuple[str, dict]:
        rng = np.random.default_rng(1)
        z = blend_peak * onehot + rng.normal(0, 1, (len(y), C))
        cos = cosine_peak * onehot + rng.normal(0, 1, (len(y), C))
        return openset.choose_score(z, cos, y, 1.0)

    score, figures = chosen(4.0, 1.0)
    assert score == "max_probability" and figures["max_probability"] > figures["mcm"] + 2 * figures["se"]
    assert chosen(1.0, 4.0)[0] == "mcm"
    assert chosen(2.0, 2.0)[0] == "mcm"  # the same data: a tie goes to MCM
    assert openset.choose_score(np.ones((4, 1)), np.ones((4, 1)), np.zeros(4, np.int64), 1.0) == ("mcm", {})  # one class
    two = np.repeat([0, 1], 5)
    assert openset.choose_score(RNG.normal(size=(10, 2)), RNG.normal(size=(10, 2)), two, 1.0)[0] == "mcm"


def test_calibrated_thresholds_the_chosen_score() -> None:
    C, per = 6, 20
    y = np.repeat(np.arange(C), per)
    z = 4 * np.eye(C)[y] + RNG.normal(0, 1, (len(y), C))
    cos = 0.5 * np.eye(C)[y] + RNG.normal(0, 1, (len(y), C))
    val = openset.Held(z[::2], cos[::2], y[::2])
    loo = openset.Held(z[1::2], cos[1::2], y[1::2])
    found = openset.calibrated(val, loo, 0.9)
    assert found.score == "max_probability" and found.temperature == openset.fit_temperature(z[::2], y[::2])
    np.testing.assert_array_equal(found.nll_on[0], z[::2])
    all_z = np.concatenate([z[::2], z[1::2]])
    values = openset.abstention_score(openset.probabilities(all_z, found.temperature))
    assert found.threshold == openset.threshold_for(values, 0.9, 1 / C) and found.images == len(y)
    mcm = openset.calibrated(openset.Held(cos, z, y), openset.Held(cos[:0], z[:0], y[:0]), 0.9)  # roles swapped
    assert mcm.score == "mcm" and mcm.threshold == openset.threshold_for(openset.mcm(z), 0.9, 1 / C)
    assert openset.calibrated(None, openset.Held(z[:0], cos[:0], y[:0])) is None


def test_an_evaluation_fold_decides_on_the_model_score() -> None:
    z, cos = RNG.normal(0, 2, (60, 3)), RNG.normal(0, 1, (60, 3))
    labels = RNG.integers(0, 5, 60)  # classes 3 and 4 not kept: unknown
    kept, known = [0, 1, 2], labels < 3
    for score, values in (("mcm", openset.mcm(cos)), ("max_probability", openset.probabilities(z, 0.5).max(1))):
        theta = float(np.median(values[known]))
        fold = evaluation.open_set_fold(z, cos, kept, labels, 0.5, theta, score)
        assert fold["score"] == score and fold["known_accepted"] == pytest.approx((values[known] >= theta).mean())
        assert fold["chosen_auroc"] == pytest.approx(openset.auroc(values[known], values[~known]))
        right = known & (values >= theta) & (z.argmax(1) == labels)
        assert fold["known_accuracy_at_operating_point"] == pytest.approx(right.sum() / known.sum())


def test_decide() -> None:
    z = np.array([[3.0, 1.0, 0.5], [1.0, 1.1, 1.05]], np.float32)
    labels, known, probs = openset.decide(z, 0.5, 0.6)
    np.testing.assert_allclose(probs.sum(1), 1, atol=1e-6)
    ref = np.exp(z / 0.5) / np.exp(z / 0.5).sum(1, keepdims=True)
    np.testing.assert_allclose(probs, ref, atol=1e-6)
    assert known.tolist() == [True, False] and labels.tolist() == [0, -1]
    assert openset.decide(z, 0.5, None)[0].tolist() == [0, 1]


@pytest.fixture(scope="module")
def calibrated(exported_onnx):
    return exported_onnx / "model.onnx"


def test_the_export_carries_the_fit_calibration_and_the_runtime_applies_it(calibrated, tiny_head) -> None:
    meta = tiny_head.info.open_set
    assert meta is not None and meta["score"] == openset.SCORE
    clf = Classifier.load(calibrated, prefer_int8=False)
    assert clf.temperature == pytest.approx(meta["temperature"]) and clf.threshold == pytest.approx(meta["threshold"])
    images = RNG.integers(0, 256, (12, 40, 48, 3), np.uint8)
    p = clf.predict(images, top_k=3)
    z = p.scores.astype(np.float64) / clf.temperature
    ref = np.exp(z - z.max(1, keepdims=True))
    ref /= ref.sum(1, keepdims=True)
    np.testing.assert_allclose(p.probabilities, ref, atol=1e-6)
    np.testing.assert_allclose(p.probabilities.sum(1), 1, atol=1e-6)
    np.testing.assert_array_equal(p.known, ref.max(1) >= clf.threshold)
    np.testing.assert_array_equal(p.labels, np.where(p.known, p.scores.argmax(1), -1))
    assert p.class_names == [clf.class_names[i] if k else None for i, k in zip(p.labels, p.known)]
    np.testing.assert_allclose(p.top_k.probabilities, np.take_along_axis(ref, p.top_k.indices, 1), atol=1e-6)

    off = Classifier.load(calibrated, prefer_int8=False, unknown=None).predict(images)
    assert off.known.all() and (off.labels == off.scores.argmax(1)).all()
    np.testing.assert_array_equal(off.probabilities, p.probabilities)  # calibrated either way
    strict = Classifier.load(calibrated, prefer_int8=False, unknown=1.0).predict(images)
    np.testing.assert_array_equal(strict.known, p.probabilities.max(1) >= 1.0)
    assert Classifier.load(calibrated, prefer_int8=False, unknown=0).predict(images).known.all()


@pytest.mark.parametrize("bad", ["sometimes", "", 1.5, -0.1, float("nan"), True, [0.5], {"t": 1}])
def test_unknown_of_the_wrong_type_or_range_is_refused(calibrated, bad) -> None:
    with pytest.raises(InputError) as err:
        Classifier.load(calibrated, prefer_int8=False, unknown=bad)
    assert err.value.hint and "unknown" in str(err.value)


def test_a_model_exported_before_calibration_runs_closed_set_and_says_so(contract_onnx) -> None:
    with pytest.warns(UserWarning, match="no open-set calibration"):
        clf = Classifier.load(contract_onnx)
    assert clf.threshold is None and clf.temperature == 1.0
    p = clf.predict(np.zeros((2, 16, 16, 3), np.uint8))
    assert p.known.all() and None not in p.class_names
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Classifier.load(contract_onnx, unknown=None)  # asked for off: nothing to say


def test_a_damaged_calibration_is_a_model_error(calibrated) -> None:
    from semobridge_runtime.metadata import parse_metadata

    raw = json.loads((calibrated.with_suffix(".json")).read_text())
    for bad in ({**raw["open_set"], "score": "energy"}, {**raw["open_set"], "threshold": 2.0}, {"temperature": "x"}, [],
                {**raw["open_set"], "ece_after": "low"}):
        with pytest.raises(ModelError, match="open_set"):
            parse_metadata(json.dumps({**raw, "open_set": bad}), "model.json")


def test_semobridge_run_unknown_option(calibrated, tmp_path, capsys) -> None:
    from PIL import Image

    paths = []
    for i in range(3):
        paths.append(str(tmp_path / f"{i}.png"))
        Image.fromarray(RNG.integers(0, 256, (30, 30, 3), np.uint8)).save(paths[-1])
    assert run_main([str(calibrated), "--no-int8", "--json", "--unknown", "1", *paths]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert all(r["label"] is None and r["index"] == -1 and not r["known"] for r in rows)
    assert all(abs(sum(r["probabilities"]) - 1) < 1e-5 and r["top_k"][0]["probability"] == r["probability"] for r in rows)
    assert run_main([str(calibrated), "--no-int8", "--unknown", "1", paths[0]]) == 0
    assert capsys.readouterr().out.splitlines()[0] == f"{paths[0]}  unknown"
    assert run_main([str(calibrated), "--no-int8", "--json", "--unknown", "off", *paths]) == 0
    assert all(r["known"] and r["label"] is not None for r in json.loads(capsys.readouterr().out))
    assert run_main([str(calibrated), "--no-int8", "--unknown", "2", paths[0]]) == 2
    assert "[0, 1]" in capsys.readouterr().err
    assert run_main([str(calibrated), "--unknown", "maybe", paths[0]]) == 2


# ---------------------------------------------------------------- a class from its name alone, text embeddings

def test_a_class_from_its_name_alone(enrol_export, tiny_backbone, tmp_path) -> None:
    """No images: T from the prompts (or the fit's templates), P and I the stand-ins of docs/method.md, computed
    here in torch from the class set as it was."""
    import torch
    import torch.nn.functional as F

    from semobridge.prototypes import text_side

    clf = Classifier.load(enrol_export)
    before = clf.classes
    prompts = ["a photo of an umbrella.", "a black umbrella in the rain"]
    clf.add_class("umbrella", [], prompts=prompts)
    T = text_side(tiny_backbone.encode_text_eos(prompts), torch.zeros(2, dtype=torch.long), tiny_backbone.text_projection,
                  1).classifier[0]
    old = {n: torch.from_numpy(np.array(getattr(before, n))) for n in ("text_classifier", "bridged_prototypes", "image_prototypes")}
    P = F.normalize(T + (old["bridged_prototypes"] - old["text_classifier"]).mean(0), dim=-1)
    I = F.normalize(T + (old["image_prototypes"] - old["text_classifier"]).mean(0), dim=-1)
    got = clf.classes
    for name, expected in (("text_classifier", T), ("bridged_prototypes", P), ("image_prototypes", I)):
        np.testing.assert_allclose(getattr(got, name)[-1], expected.numpy(), rtol=0, atol=1e-5, err_msg=name)
    assert clf.class_names[-1] == "umbrella" and clf.predict(RNG.integers(0, 256, (2, 32, 32, 3), np.uint8)).scores.shape == (2, 4)

    clf.add_class("yellow cab", None)  # the fit's templates filled with the name
    T2 = text_side(tiny_backbone.encode_text_eos(["a photo of a yellow cab.", "art of the yellow cab."]),
                   torch.zeros(2, dtype=torch.long), tiny_backbone.text_projection, 1).classifier[0]
    np.testing.assert_allclose(clf.classes.text_classifier[-1], T2.numpy(), rtol=0, atol=1e-5)
    with pytest.raises(InputError, match="prompts"):
        clf.add_class("rain", [], prompts=[])
    with pytest.raises(InputError, match="empty"):
        clf.add_class("  ", [])
    assert clf.class_names[-2:] == ["umbrella", "yellow cab"]


def test_embed_text_is_n_of_eos_times_w(enrol_export, tiny_backbone) -> None:
    import torch.nn.functional as F

    clf = Classifier.load(enrol_export)
    texts = ["a red mug", "a photo of a dog."]
    expected = F.normalize(tiny_backbone.encode_text_eos(texts) @ tiny_backbone.text_projection, dim=-1)
    got = clf.embed_text(texts)
    assert got.dtype == np.float32 and got.shape == (2, clf.info.embedding_dim)
    np.testing.assert_allclose(got, expected.numpy(), rtol=0, atol=1e-5)
    for bad in ("a red mug", [], [""], [3]):
        with pytest.raises(InputError, match="embed_text"):
            clf.embed_text(bad)


def test_semobridge_classes_add_from_a_prompt(enrol_export, tmp_path, capsys) -> None:
    from semobridge_runtime.classes_cli import main as classes_main

    file = tmp_path / "shop.classes"
    assert classes_main(["add", str(file), "umbrella", "--prompt", "a photo of an umbrella.", "--model", str(enrol_export)]) == 0
    assert "from 1 prompt(s) alone" in capsys.readouterr().out
    assert Classifier.load(enrol_export, classes=file).class_names[-1] == "umbrella"


def test_evaluation_figures_against_a_hand_count() -> None:
    from semobridge_runtime import evaluation

    truth = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2])
    pred = np.array([0, 0, 1, 1, 2, 2, 0, 2, 2])
    r = evaluation.closed_set(truth, pred, ["a", "b", "c"])
    assert r["confusion"] == [[2, 1, 0], [0, 1, 1], [1, 0, 3]]
    assert r["accuracy"] == pytest.approx(6 / 9)
    assert [c["accuracy"] for c in r["per_class"]] == pytest.approx([2 / 3, 1 / 2, 3 / 4])
    precision = [2 / 3, 1 / 2, 3 / 4]
    recall = [2 / 3, 1 / 2, 3 / 4]
    f1 = [2 * p * q / (p + q) for p, q in zip(precision, recall)]
    assert r["macro_f1"] == pytest.approx(sum(f1) / 3)
    assert evaluation.per_class_csv(r).splitlines()[1].startswith("a,3,0.666")


def test_semobridge_eval_on_the_artifact_matches_the_library(enrol_export, enrol_pool, fit_on, tiny_backbone, tmp_path,
                                                             capsys) -> None:
    """The runtime's evaluation (no torch in its path) gives the library's figures on the same images."""
    from semobridge.pipeline import evaluate
    from semobridge_runtime.eval_cli import main as eval_main

    from .conftest import ENROL_CLASSES

    data = tmp_path / "data"
    for split in ("train", "val", "test"):
        for name in ENROL_CLASSES[:3]:
            (data / split).mkdir(parents=True, exist_ok=True)
            (data / split / name.replace(" ", "_")).symlink_to(enrol_pool / split / name.replace(" ", "_"))
    out = tmp_path / "eval.json"
    assert eval_main([str(enrol_export), str(data), "--open-set", "--json", str(out), "--csv", str(tmp_path / "e.csv")]) == 0
    assert "macro-F1" in capsys.readouterr().out
    runtime = json.loads(out.read_text())
    library = evaluate(fit_on(ENROL_CLASSES[:3]), tiny_backbone, data, "test", open_set=True)
    assert runtime["confusion"] == library["confusion"] and np.sum(runtime["confusion"]) == 6
    for key in ("accuracy", "macro_f1"):
        assert runtime[key] == pytest.approx(library[key], abs=1e-9)
    for key in ("auroc", "mcm_auroc", "known_accuracy_at_operating_point"):
        assert runtime["open_set"][key] == pytest.approx(library["open_set"][key], abs=1e-6), key
    for fold in runtime["open_set"]["folds"]:  # each fold's own (recalibrated) score, beside MCM
        assert fold["chosen_auroc"] == fold["auroc" if fold["score"] == "max_probability" else "mcm_auroc"]
    assert eval_main([str(enrol_export), str(enrol_pool)]) == 2  # folders of classes the model lacks
    assert "not one of the model's classes" in capsys.readouterr().err

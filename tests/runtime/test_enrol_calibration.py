"""Enrolment recalibrates the open set: T, the abstention score and θ after add, upgrade and remove equal the fit's
calibration (semobridge.calibrate.calibrate_on, torch) on the same images; class files carry them to Python and C."""

from __future__ import annotations

import ctypes
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from benchmarks.common import info_for, synthetic_features
from semobridge.blend import BlendParams
from semobridge.calibrate import calibrate_on
from semobridge.features import FeatureSet
from semobridge.fit import fit_features
from semobridge.model import SeMoBridge
from semobridge_runtime import Classifier, InputError, ModelError, head, openset, tensorfile
from semobridge_runtime.calibration import TENSORS as CALIBRATION
from semobridge_runtime.calibration import Blend, CalibrationData, recalibrate
from semobridge_runtime.classes import ClassSet
from tests.runtime.conftest import ENROL_CLASSES
from tests.runtime.test_classes import shots

from .test_c_library import lib  # noqa: F401  (fixture)

PARAMS = BlendParams(smoothness=0.3, alpha=2.0, beta=3.0, gamma=1.5, lambda1=0.4, lambda2=0.7, lambda3=0.2)
BACKBONE = {"name": "synthetic", "pretrained": "none", "weights_hash": "0"}
TOL = 1e-6


def reference(classes: ClassSet, fitted: SeMoBridge, data: CalibrationData | None = None) -> tuple[float, float, str]:
    """(T, θ, score) of a from-scratch calibration by the library (torch) of a head with this class set, the fitted bridge
    and blend parameters, on the same images."""
    data = data if data is not None else classes.calibration
    t = [torch.from_numpy(np.array(getattr(classes, n))) for n in ("text_classifier", "bridged_prototypes",
                                                                      "image_prototypes", "class_kl")]
    h = SeMoBridge(fitted.bridge, *t, fitted.info)
    h.params.copy_(fitted.params)
    found = calibrate_on(h, {"calibration_features": torch.from_numpy(np.array(data.features)),
                             "calibration_labels": torch.from_numpy(np.array(data.labels)),
                             "calibration_shot": torch.from_numpy(data.shot.astype(np.uint8))})
    return found.open_set.temperature, found.open_set.threshold, found.open_set.score


def assert_calibrated_as(classes: ClassSet, expected: tuple[float, float, str]) -> None:
    assert abs(classes.temperature - expected[0]) <= TOL * max(1.0, expected[0]), (classes.temperature, expected)
    assert abs(classes.threshold - expected[1]) <= TOL, (classes.threshold, expected)
    assert classes.score == expected[2], (classes.score, expected)


# ---------------------------------------------------------------- synthetic: exactness and acceptance

@pytest.fixture(scope="module")
def synthetic():
    """11 classes of synthetic CLIP-like embeddings: a head fitted on the first 10 (8 shots, 8 validation images
    each), the 11th class's shots, and 80 held-out images per class for the acceptance."""
    f = synthetic_features(11, 8, 88, 32, 32, seed=5)
    rank = torch.arange(len(f.val_label)) % 88
    C = 10
    on = f.shot_label < C
    val, test = (rank < 8) & (f.val_label < C), rank >= 8
    fit = FeatureSet(f.text_projection, f.text_eos[f.text_class < C], f.text_class[f.text_class < C], f.shot_image[on],
                     f.shot_label[on], f.val_image[val], f.val_label[val], f.logit_scale, f.class_names[:C])
    fitted = fit_features(fit, info_for(fit, BACKBONE), params=PARAMS)
    return f, fitted, f.val_image[test], f.val_label[test].numpy()


def runtime_set(fitted: SeMoBridge) -> tuple[ClassSet, Blend]:
    """The fitted head as the runtime holds it: its class set with the calibration data, and its blend."""
    o = fitted.info.open_set
    arrays = {n: fitted.calibration[n].numpy() for n in fitted.calibration}
    data = CalibrationData.of(arrays, fitted.num_classes, fitted.image_prototypes.shape[1], "test")
    classes = ClassSet(tuple(fitted.info.class_names), fitted.text_classifier.numpy(), fitted.bridged_prototypes.numpy(),
                       fitted.image_prototypes.numpy(), fitted.class_kl.numpy(), None, o["temperature"], o["threshold"], data,
                       o["score"])
    return classes, Blend(tuple(PARAMS.to_dict().values()))


def recalibrated(classes: ClassSet, blend: Blend) -> ClassSet:
    from dataclasses import replace

    found = recalibrate(classes, classes.calibration, blend)
    return replace(classes, temperature=found.temperature, threshold=found.threshold, score=found.score)


def acceptance(classes: ClassSet, fitted: SeMoBridge, blend: Blend, images: torch.Tensor, labels: np.ndarray,
               names: list[str]) -> float:
    """The share of held-out images of the set's classes whose abstention score reaches θ."""
    keep = torch.from_numpy(np.isin(np.array(names)[labels], classes.names))
    q = head.normalize(images[keep].numpy())
    qb = head.normalize(fitted.bridge(images[keep]).detach().numpy())
    z = blend.scores(q, qb, classes.text_classifier, classes.bridged_prototypes, classes.image_prototypes, classes.class_kl)
    score = openset.open_set_score(openset.probabilities(z, classes.temperature), q @ classes.text_classifier.T, classes.score)
    return float((score >= classes.threshold).mean())


def test_recalibration_after_add_and_remove_equals_the_fit_calibration_and_accepts_its_share(synthetic) -> None:
    f, fitted, test_images, test_labels = synthetic
    classes, blend = runtime_set(fitted)
    # the fitted set, recalibrated in numpy, has the fit's (torch) T and θ
    assert_calibrated_as(recalibrated(classes, blend), (classes.temperature, classes.threshold, classes.score))
    accepted = [acceptance(classes, fitted, blend, test_images, test_labels, f.class_names)]
    # add class 10 from its shots and prompts
    new = f.shot_label == 10
    F = f.shot_image[new].numpy()
    T = head.prototype(head.normalize(f.text_eos[f.text_class == 10].numpy() @ f.text_projection.numpy()))
    bridged = fitted.bridge(f.shot_image[new]).detach().numpy()  # the graph's bridged_features
    added = recalibrated(classes.added("class 10", T, head.prototype(bridged), head.prototype(F), shots=(F, bridged)), blend)
    assert added.calibration.shots_of(10) == 8 and len(added.calibration.labels) == len(classes.calibration.labels) + 8
    assert_calibrated_as(added, reference(added, fitted))
    assert added.threshold != classes.threshold
    accepted.append(acceptance(added, fitted, blend, test_images, test_labels, f.class_names))
    # remove two classes: their images leave the calibration data
    removed = recalibrated(recalibrated(added.removed("class 3"), blend).removed("class 0"), blend)
    keep = ~np.isin(added.calibration.labels, [0, 3])
    assert len(removed.calibration.labels) == keep.sum()
    np.testing.assert_array_equal(removed.calibration.features, added.calibration.features[keep])
    np.testing.assert_array_equal(np.array(removed.names)[removed.calibration.labels],
                                  np.array(added.names)[added.calibration.labels[keep]])
    assert_calibrated_as(removed, reference(removed, fitted))
    accepted.append(acceptance(removed, fitted, blend, test_images, test_labels, f.class_names))
    # held-out known images (80 a class, never used for calibration) are accepted near the 95 % target: within three
    # standard deviations of one model's acceptance (sqrt(a (1 - a) / (n + 2)) for n calibration images, docs/method.md)
    # and of the test images' binomial share
    a = openset.ACCEPT
    for share, edited in zip(accepted, (classes, added, removed)):
        n, tested = len(edited.calibration.labels), 80 * len(edited)
        assert abs(share - a) <= 3 * np.sqrt(a * (1 - a) / (n + 2) + a * (1 - a) / tested), accepted


# ---------------------------------------------------------------- the exported model: Classifier, class files, C

@pytest.fixture(scope="module")
def library_head(enrol_export) -> SeMoBridge:
    return SeMoBridge.load(enrol_export.parent / "head.safetensors")


def test_the_export_keeps_its_calibration_data_and_the_runtime_reproduces_its_calibration(enrol_export, library_head) -> None:
    clf = Classifier.load(enrol_export)
    fitted = clf.classes
    meta = json.loads(enrol_export.with_suffix(".json").read_text())["open_set"]
    assert (fitted.temperature, fitted.threshold, fitted.score) == (meta["temperature"], meta["threshold"], meta["score"])
    assert (clf.temperature, clf.threshold) == (meta["temperature"], meta["threshold"])
    data = fitted.calibration
    assert len(data.labels) == 3 * 3 + 3 * 3 and data.shot.sum() == 9  # the pool's 3 shots + 3 validation images a class
    assert_calibrated_as(fitted, reference(fitted, library_head))


def test_add_upgrade_and_remove_recalibrate_as_the_fit(enrol_export, enrol_pool, library_head, tmp_path) -> None:
    clf = Classifier.load(enrol_export)
    before = clf.classes
    swan = shots(enrol_pool, "white swan")
    clf.add_class("white swan", swan)
    added = clf.classes
    features, bridged = clf._run(swan, ("features", "bridged_features"), None)  # the graph's own F, bridge(F)
    np.testing.assert_array_equal(added.calibration.features[-3:], features)
    np.testing.assert_array_equal(added.calibration.bridged[-3:], bridged)
    assert added.calibration.shots_of(3) == 3
    assert_calibrated_as(added, reference(added, library_head))
    assert (clf.temperature, clf.threshold) == (added.temperature, added.threshold) != (before.temperature, before.threshold)
    # a class from its name alone adds no calibration image, but its column enters every probability
    clf.add_class("umbrella", [], prompts=["a photo of an umbrella."])
    named = clf.classes
    assert named.is_name_only("umbrella") and not named.is_name_only("white swan")
    assert len(named.calibration.labels) == len(added.calibration.labels)
    assert_calibrated_as(named, reference(named, library_head))
    clf.remove_class(ENROL_CLASSES[0])
    assert_calibrated_as(clf.classes, reference(clf.classes, library_head))
    # the class file carries T, θ and the data; loading it changes nothing
    path = tmp_path / "shop.classes"
    clf.save_classes(path)
    _, meta = tensorfile.read(path, "class file")
    assert float(meta["temperature"]) == clf.temperature and float(meta["threshold"]) == clf.threshold
    assert meta["score"] == clf.classes.score
    again = Classifier.load(enrol_export, classes=path)
    assert (again.temperature, again.threshold, again.classes.score) == (clf.temperature, clf.threshold, clf.classes.score)
    np.testing.assert_array_equal(again.classes.calibration.features, clf.classes.calibration.features)


def test_a_later_add_with_images_upgrades_a_class_from_its_name(enrol_export, enrol_pool, library_head) -> None:
    swan = shots(enrol_pool, "white swan")
    prompts = ["a photo of a white swan."]
    direct = Classifier.load(enrol_export)
    direct.add_class("white swan", swan, prompts=prompts)
    clf = Classifier.load(enrol_export)
    clf.add_class("white swan", [], prompts=prompts)
    clf.add_class(ENROL_CLASSES[4], shots(enrol_pool, ENROL_CLASSES[4]))
    stand_in = clf.classes
    with pytest.raises(InputError, match="already a class from its name alone") as err:
        clf.add_class("white swan", [])
    assert "images" in err.value.hint
    clf.add_class("white swan", swan)  # no prompts: its own text classifier stays
    up = clf.classes
    assert up.names == stand_in.names and up.index("white swan") == 3 and not up.is_name_only("white swan")
    for name in ("text_classifier", "bridged_prototypes", "image_prototypes"):
        np.testing.assert_allclose(getattr(up, name)[3], getattr(direct.classes, name)[3], rtol=0, atol=1e-6, err_msg=name)
        np.testing.assert_array_equal(getattr(up, name)[[0, 1, 2, 4]], getattr(stand_in, name)[[0, 1, 2, 4]])
    np.testing.assert_allclose(up.class_kl, head.class_kl(up.image_prototypes, up.text_classifier), rtol=0, atol=2e-6)
    assert up.calibration.shots_of(3) == 3
    assert_calibrated_as(up, reference(up, library_head))
    with pytest.raises(InputError, match="already a class named 'white swan'"):
        clf.add_class("white swan", swan)


def test_semobridge_classes_add_from_a_prompt_then_images(enrol_export, enrol_pool, tmp_path, capsys) -> None:
    from semobridge_runtime.classes_cli import main

    path, model = tmp_path / "shop.classes", str(enrol_export)
    assert main(["add", model, str(path), "umbrella", "--prompt", "a photo of an umbrella."]) == 0
    assert "from 1 prompt(s) alone" in capsys.readouterr().out
    images = [str(p) for p in shots(enrol_pool, "white swan")]
    assert main(["add", model, str(path), "umbrella", *images]) == 0
    clf = Classifier.load(enrol_export, classes=path)
    assert clf.class_names[-1] == "umbrella" and not clf.classes.is_name_only("umbrella")


def test_a_class_with_no_name_and_no_prompt_is_refused(enrol_export) -> None:
    clf = Classifier.load(enrol_export)
    for name, prompts in [("", None), ("  ", []), (None, None)]:
        with pytest.raises(InputError) as err:
            clf.add_class(name, [], prompts=prompts)
        assert "name" in str(err.value)
    with pytest.raises(InputError, match="non-empty list"):
        clf.add_class("umbrella", [], prompts=[])
    assert clf.class_names == list(ENROL_CLASSES[:3])


# ---------------------------------------------------------------- old and bad class files, Python and C

def rewritten(path: Path, out: Path, meta: dict | None = None, drop: tuple[str, ...] = ()) -> Path:
    tensors, old = tensorfile.read(path, "class file")
    merged = {k: v for k, v in {**old, **(meta or {})}.items() if v is not None}
    out.write_bytes(tensorfile.encode({k: v for k, v in tensors.items() if k not in drop}, merged))
    return out


@pytest.fixture(scope="module")
def shop_file(enrol_export, enrol_pool, tmp_path_factory) -> Path:
    clf = Classifier.load(enrol_export)
    clf.add_class("white swan", shots(enrol_pool, "white swan"))
    path = tmp_path_factory.mktemp("calibrated") / "shop.classes"
    clf.save_classes(path)
    return path


def test_a_class_file_from_before_uses_the_model_calibration_and_keeps_it(enrol_export, enrol_pool, shop_file, tmp_path) -> None:
    old = rewritten(shop_file, tmp_path / "old.classes", {"temperature": None, "threshold": None},
                    drop=CALIBRATION)
    model = Classifier.load(enrol_export)
    with pytest.warns(UserWarning, match="no open-set calibration"):
        clf = Classifier.load(enrol_export, classes=old)
    assert (clf.temperature, clf.threshold) == (model.temperature, model.threshold)
    clf.remove_class("white swan")
    assert (clf.temperature, clf.threshold) == (model.temperature, model.threshold) and clf.classes.calibration is None
    with pytest.raises(InputError, match="already a class named"):  # cannot tell a class from its name: no upgrade
        clf.add_class(ENROL_CLASSES[0], shots(enrol_pool, ENROL_CLASSES[0]))


BAD_OPEN_SETS = {
    "threshold above 1": ({"threshold": "1.5"}, ()),
    "negative threshold": ({"threshold": "-0.01"}, ()),
    "temperature 0": ({"temperature": "0"}, ()),
    "temperature nan": ({"temperature": "nan"}, ()),
    "hexadecimal": ({"threshold": "0x1p-1"}, ()),
    "spaces": ({"threshold": " 0.5"}, ()),
    "underscore": ({"temperature": "1_0"}, ()),
    "threshold alone": ({"temperature": None}, ()),
    "unknown score": ({"score": "energy"}, ()),  # the score: exactly one of openset.SCORES (absent: max_probability)
    "empty score": ({"score": ""}, ()),
    "score in capitals": ({"score": "MCM"}, ()),
}


@pytest.mark.parametrize("case", sorted(BAD_OPEN_SETS))
def test_bad_open_set_in_a_class_file_is_refused_by_python(enrol_export, shop_file, tmp_path, case) -> None:
    meta, drop = BAD_OPEN_SETS[case]
    bad = rewritten(shop_file, tmp_path / "bad.classes", meta, drop)
    with pytest.raises(ModelError, match="open-set calibration") as err:
        Classifier.load(enrol_export, classes=bad)
    assert "write it again" in err.value.hint


def test_a_class_file_carries_its_score(enrol_export, shop_file, tmp_path) -> None:
    """'score' is one of openset.SCORES; absent: max_probability (files written before the choice); else refused."""
    _, meta = tensorfile.read(shop_file, "class file")
    assert meta["score"] == Classifier.load(enrol_export, classes=shop_file).classes.score
    for given, read in (("mcm", "mcm"), ("max_probability", "max_probability"), (None, "max_probability")):
        path = rewritten(shop_file, tmp_path / "score.classes", {"score": given})
        assert Classifier.load(enrol_export, classes=path).classes.score == read
    for bad in ("energy", "MCM", " mcm", ""):
        path = rewritten(shop_file, tmp_path / "bad.classes", {"score": bad})
        with pytest.raises(ModelError, match="open-set calibration") as err:
            Classifier.load(enrol_export, classes=path)
        assert str(path) in str(err.value) and "max_probability, mcm" in str(err.value) and "write it again" in err.value.hint


def test_bad_calibration_data_is_refused(enrol_export, shop_file, tmp_path) -> None:
    tensors, meta = tensorfile.read(shop_file, "class file")
    for change in [{"calibration_labels": np.full_like(tensors["calibration_labels"], 9)},
                   {"calibration_shot": tensors["calibration_shot"][:-1]},
                   {"calibration_features": tensors["calibration_features"][:, :3]},
                   {"calibration_bridged_features": tensors["calibration_bridged_features"][:-1]}]:
        path = tmp_path / "bad.classes"
        path.write_bytes(tensorfile.encode({**tensors, **change}, meta))
        with pytest.raises(ModelError, match="unusable calibration data"):
            Classifier.load(enrol_export, classes=path)
    path.write_bytes(tensorfile.encode({k: v for k, v in tensors.items() if k != "calibration_shot"}, meta))
    with pytest.raises(ModelError, match="unusable calibration data"):
        Classifier.load(enrol_export, classes=path)


def test_c_reads_the_same_temperature_and_threshold_as_python(lib, enrol_export, shop_file, tmp_path) -> None:
    from tests.runtime.test_c_classes import CModel

    lib.sb_get_classes.restype = ctypes.c_void_p
    lib.sb_get_classes.argtypes = [ctypes.c_void_p]
    lib.sb_release_classes.argtypes = [ctypes.c_void_p]
    lib.sb_classes_open_set.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_double), ctypes.POINTER(ctypes.c_double)]
    lib.sb_set_classes.argtypes = [ctypes.c_void_p, ctypes.c_char_p]

    def read(model: CModel) -> tuple[int, float, float]:
        t, h = ctypes.c_double(-1), ctypes.c_double(-1)
        classes = lib.sb_get_classes(model.handle)
        try:
            return lib.sb_classes_open_set(classes, ctypes.byref(t), ctypes.byref(h)), t.value, h.value
        finally:
            lib.sb_release_classes(classes)

    python = Classifier.load(enrol_export, classes=shop_file)
    old = rewritten(shop_file, tmp_path / "old.classes", {"temperature": None, "threshold": None})
    edges = {"edges.classes": {"temperature": "1e-3", "threshold": "1"}, "edges2.classes": {"temperature": "1000", "threshold": "0"}}
    with CModel(lib, enrol_export, shop_file) as c:
        assert read(c) == (1, python.temperature, python.threshold)  # bit for bit
        assert c.set_classes(old)[0] == 0 and read(c)[0] == 0
        assert c.set_classes(None)[0] == 0 and read(c)[0] == 0  # the fitted classes: the model's
        for name, meta in edges.items():
            path = rewritten(shop_file, tmp_path / name, meta)
            py = Classifier.load(enrol_export, classes=path).classes
            assert c.set_classes(path)[0] == 0 and read(c) == (1, py.temperature, py.threshold)
        assert c.set_classes(None)[0] == 0
        for case, (meta, drop) in BAD_OPEN_SETS.items():
            bad = rewritten(shop_file, tmp_path / "bad.classes", meta, drop)
            rc, message = c.set_classes(bad)
            assert rc == -2 and "open-set calibration" in message and "write it again" in message, (case, message)
            assert read(c)[0] == 0  # the set stays the fitted one


@pytest.mark.parametrize("n", [20, 30, 100])
def test_the_threshold_accepts_the_target_of_new_known_images_in_expectation(n) -> None:
    """n held-out scores and one new known score, exchangeable and continuous (uniform on [1/C, 1], the range of both
    scores): the new one is accepted with probability 95 % (the split-conformal order statistic accepted
    30 / 31 at n = 30)."""
    rng = np.random.default_rng(n)
    lowest = 1 / 10
    trials = lowest + (1 - lowest) * rng.random((40000, n + 1))
    thresholds = np.array([openset.threshold_for(t[:n], 0.95, lowest) for t in trials])
    accepted = float((trials[:, n] >= thresholds).mean())
    assert abs(accepted - 0.95) < 0.005, (n, accepted)
    assert (thresholds >= lowest).all() and (thresholds <= trials[:, :n].max(1)).all()


@pytest.mark.parametrize("n", [3, 5, 12])
def test_below_one_rank_the_prediction_bound_accepts_the_target_where_log_scores_are_normal(n) -> None:
    """Fewer than 19 held-out images at 95 %: scores whose log(s - 1/C) is normal (MCM's values sit just above 1/C);
    the new one is accepted 95 % of the time (the interpolation towards 1/C accepted all but a few per thousand)."""
    rng = np.random.default_rng(n)
    lowest = 1 / 10
    trials = lowest + np.exp(rng.normal(np.log(0.3), 0.4, (40000, n + 1)))
    thresholds = np.array([openset.threshold_for(t[:n], 0.95, lowest) for t in trials])
    accepted = float((trials[:, n] >= thresholds).mean())
    assert abs(accepted - 0.95) < 0.005, (n, accepted)


def test_the_prediction_bound_holds_for_saturated_and_equal_scores() -> None:
    """Top probabilities that round to 1.0 (float32) do not drop the bound to 1/C (on logits they did: 0.1000002 for
    these five, every unknown accepted); equal scores give that score; an exact rank takes the order statistic."""
    assert 0.9 < openset.threshold_for(np.array([1, 1, 0.999, 0.99, 0.95], np.float32), 0.95, 0.1) < 0.95
    assert openset.threshold_for(np.full(5, 0.7), 0.95, 0.1) == pytest.approx(0.7)
    assert openset.threshold_for(np.ones(4), 0.95, 1.0) == 1.0  # one class: every score 1 = 1/C (was 1.000001)
    s = np.linspace(0.5, 0.9, 9)  # accept 0.9, n = 9: rank (n + 1)(1 - accept) = 1 exactly (0.99999... in floats)
    assert openset.threshold_for(s, 0.9, 0.1) == pytest.approx(0.5)


def test_student_t_against_tables() -> None:
    """One-sided quantiles from the printed t table (independent of the closed forms)."""
    for (p, df), t in {(0.95, 1): 6.313752, (0.95, 4): 2.131847, (0.95, 10): 1.812461, (0.99, 3): 4.540703,
                       (0.9, 3): 1.637744, (0.95, 17): 1.739607}.items():
        assert openset.student_t_quantile(p, df) == pytest.approx(t, abs=2e-6), (p, df)
    assert openset.student_t_cdf(0.0, 5) == 0.5 and openset.student_t_cdf(-1.0, 1) == pytest.approx(0.25)


def test_the_threshold_interpolates_between_order_statistics() -> None:
    s = np.array([0.9, 0.5, 0.7, 0.3])  # sorted: 0.3 0.5 0.7 0.9; s_0 = 0.2
    u = np.log(s - 0.2)  # rank 5 * 0.1 = 0.5 < 1: the prediction bound on log(s - 0.2), t_0.9(3) = 1.637744
    bound = u.mean() - 1.637744 * u.std(ddof=1) * np.sqrt(1.25)
    assert openset.threshold_for(s, 0.9, 0.2) == pytest.approx(0.2 + np.exp(bound), abs=1e-6)
    assert openset.threshold_for(s, 0.7, 0.2) == pytest.approx(0.3 + 0.5 * 0.2)  # rank 1.5
    assert openset.threshold_for(s, 1.0, 0.2) == 0.2 and openset.threshold_for(s, 0.0, 0.2) == 0.9

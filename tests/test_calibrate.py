"""semobridge.calibrate: leave-one-out shot scores against heads refitted without the shot, and the fit's calibration."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from benchmarks.common import info_for, synthetic_features
from semobridge.blend import BlendParams
from semobridge.calibrate import calibrate, leave_one_out_scores
from semobridge.features import FeatureSet
from semobridge.fit import build_head, fit_features
from semobridge.model import SeMoBridge
from semobridge.modelfile import ModelFileError
from semobridge_runtime import openset

BACKBONE = {"name": "synthetic", "pretrained": "none", "weights_hash": "0"}


def nll(scores: np.ndarray, labels: np.ndarray, temperature: float) -> float:
    """Mean negative log-likelihood of the true labels under softmax(z / T)."""
    return float(-np.log(openset.probabilities(scores, temperature)[np.arange(len(labels)), labels].astype(np.float64)).mean())
PARAMS = BlendParams(smoothness=0.3, alpha=2.0, beta=3.0, gamma=1.5, lambda1=0.4, lambda2=0.7, lambda3=0.2)


def test_leave_one_out_scores_equal_a_head_fitted_without_that_shot() -> None:
    f = synthetic_features(4, 3, 2, 24, 16, seed=3)
    f = FeatureSet(f.text_projection, f.text_eos, f.text_class, f.shot_image[:-2], f.shot_label[:-2],  # class 3: one shot
                   f.val_image, f.val_label, f.logit_scale, f.class_names)
    head = build_head(f, info_for(f, BACKBONE)).with_params(PARAMS)
    z, y = leave_one_out_scores(head, f.shot_image, f.shot_label)
    kept = torch.nonzero(torch.bincount(f.shot_label)[f.shot_label] > 1).flatten()
    assert len(z) == len(kept) == 9 and (y == f.shot_label[kept]).all()
    for row, k in enumerate(kept.tolist()):
        rest = torch.arange(len(f.shot_label)) != k
        g = FeatureSet(f.text_projection, f.text_eos, f.text_class, f.shot_image[rest], f.shot_label[rest],
                       f.val_image, f.val_label, f.logit_scale, f.class_names)
        other = build_head(g, info_for(g, BACKBONE)).with_params(PARAMS)
        other = SeMoBridge(other.bridge, other.text_classifier, other.bridged_prototypes, other.image_prototypes,
                           head.class_kl, other.info).with_params(PARAMS)  # the class weights are kept
        expected = other(f.shot_image[k:k + 1])[0]
        torch.testing.assert_close(z[row], expected, rtol=1e-5, atol=1e-6)


def test_the_fit_records_a_calibration_that_accepts_its_share_and_lowers_the_nll(tmp_path) -> None:
    f = synthetic_features(6, 8, 8, 32, 32, seed=1)
    head = fit_features(f, info_for(f, BACKBONE), params=BlendParams())
    o = head.info.open_set
    assert o["score"] in openset.SCORES and o["accept"] == openset.ACCEPT and 0 < o["threshold"] < 1
    z, y = head(f.val_image).detach().numpy().astype(np.float64), f.val_label.numpy()
    assert nll(z, y, o["temperature"]) <= nll(z, y, 1.0)
    loo_z, _ = leave_one_out_scores(head, f.shot_image, f.shot_label)
    held = np.concatenate([z, loo_z.numpy()])
    cosines = head.zero_shot(torch.cat([f.val_image, f.shot_image])).detach().numpy()
    expected, loco = openset.choose_score(held, cosines, np.concatenate([y, f.shot_label.numpy()]), o["temperature"])
    assert o["score"] == expected and f"mcm {100 * loco['mcm']:.1f} %" in o["source"]
    pool = openset.open_set_score(openset.probabilities(held, o["temperature"]), cosines, o["score"])
    assert o["threshold"] == openset.threshold_for(pool, 0.95, 1 / 6)
    assert "ECE" in head.info.describe() and "unknown" in head.info.describe()
    line = calibrate(head, f).describe()
    assert f"score {o['score']}" in line and "leave-one-class-out AUROC: max_probability" in line
    path = head.save(tmp_path / "m.safetensors")
    assert SeMoBridge.load(path).info.open_set == o


def test_one_shot_and_no_validation_gives_no_calibration() -> None:
    f = synthetic_features(3, 1, 0, 16, 16)
    assert calibrate(build_head(f, info_for(f, BACKBONE)), f) is None
    assert fit_features(f, info_for(f, BACKBONE), params=BlendParams()).info.open_set is None


@pytest.mark.parametrize("bad", [{"score": "energy", "temperature": 1.0, "threshold": 0.5},
                                 {"score": "max_probability", "temperature": 1.0, "threshold": 7},
                                 {"score": "max_probability", "temperature": -1.0, "threshold": 0.5}])
def test_a_model_file_with_a_bad_calibration_is_refused(tmp_path, bad) -> None:
    f = synthetic_features(3, 2, 0, 16, 16)
    head = fit_features(f, info_for(f, BACKBONE), params=BlendParams())
    head.info.open_set = bad
    with pytest.raises(ModelFileError, match="open_set|open-set"):
        SeMoBridge.load(head.save(tmp_path / "m.safetensors"))

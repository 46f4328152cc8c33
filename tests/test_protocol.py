"""The two protocols end to end against an independent float64 trainer (tests/reference.py `train`),
the hand-written gradient against the autograd trainer it replaced, and the protocol's data choices."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from benchmarks.train_time import autograd_trainer
from semobridge.blend import BlendParams
from semobridge.data import few_shot_split, load_dataset
from semobridge.datasets import find_dataset
from semobridge.errors import InputError
from semobridge.fit import fit_features
from semobridge.pipeline import augment_option, description_file, PromptOptions
from semobridge.protocol import CONSISTENT, PAPER, default_protocol, whole_val
from semobridge.train import train_bridge
from tests import reference as R
from tests.helpers import features_info, synthetic_features

STEPS = 300
SELECT = BlendParams()  # the blend that selects the kept step (published defaults)
PARAMS = BlendParams(smoothness=0.3, alpha=2.0, beta=4.0, gamma=3.0, lambda1=0.4, lambda2=0.8, lambda3=0.3)  # test scores


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Hundreds of small steps: one thread (OpenMP threads only wait on each other on a shared CPU)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def problem():
    """More shots than dimensions (every direction of W⁺ gets a gradient), validation and test queries."""
    feats = synthetic_features(classes=8, shots=10, val=12, seed=21)  # seed: the kept step lies inside both runs
    half = len(feats.val_label) // 2
    order = torch.randperm(len(feats.val_label), generator=torch.Generator().manual_seed(0))
    val, test = order[:half], order[half:]
    test_image, test_label = feats.val_image[test], feats.val_label[test]
    feats.val_image, feats.val_label = feats.val_image[val], feats.val_label[val]
    return feats, test_image, test_label


def f64(t: torch.Tensor) -> np.ndarray:
    return t.double().numpy()


@pytest.fixture(scope="module", params=["paper", "consistent"])
def both(problem, request):
    feats, test_image, _ = problem
    order = request.param
    Wp, B, P, kept = R.train(
        f64(feats.shot_image), feats.shot_label.numpy(), f64(feats.text_projection), f64(feats.text_eos),
        feats.text_class.numpy(), feats.num_classes, feats.logit_scale, f64(feats.val_image), feats.val_label.numpy(),
        tuple(SELECT.to_dict().values()), STEPS, order=order,
    )
    head = fit_features(feats, features_info(feats), params=PARAMS, train=True, steps=STEPS, train_params=SELECT, protocol=order)
    return order, (Wp, B, P, kept), head


def test_the_kept_step_and_test_scores_match_the_reference(problem, both):
    """`fit_features(train=True, protocol=...)` end to end against the independent trainer."""
    feats, test_image, test_label = problem
    order, (Wp, B, P, kept), head = both
    assert head.info.kept_step == kept and head.info.protocol == order
    assert head.info.steps == (STEPS if order == "paper" else STEPS - 1)
    assert 0 < kept < head.info.steps  # neither end: the order of operations decides what is kept
    np.testing.assert_allclose(head.bridged_prototypes.double().numpy(), P, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(head.bridge.pinv.double().numpy(), Wp, rtol=1e-4, atol=1e-5)
    text = R.text_side(f64(feats.text_eos), feats.text_class.numpy(), f64(feats.text_projection), feats.num_classes)
    I = R.image_prototypes(f64(feats.shot_image), feats.shot_label.numpy(), feats.num_classes)
    want = R.logits(f64(test_image), text.T, P, I, Wp, f64(feats.text_projection), text.L, R.class_kl(I, text.T),
                    *PARAMS.to_dict().values())
    with torch.no_grad():
        got = head(test_image).double().numpy()
    np.testing.assert_allclose(got, want, rtol=1e-4)
    assert np.array_equal(got.argmax(1), want.argmax(1))


def test_paper_prototypes_come_from_the_last_step(problem, both):
    """M1: P from the last state differs from P of the kept state, which the query side uses."""
    feats, _, _ = problem
    order, (Wp, B, P, kept), head = both
    text = R.text_side(f64(feats.text_eos), feats.text_class.numpy(), f64(feats.text_projection), feats.num_classes)
    P_kept = R.bridged_prototypes(f64(feats.shot_image), feats.shot_label.numpy(), feats.num_classes, Wp,
                                  f64(feats.text_projection), text.L, B)
    gap = np.abs(P_kept - head.bridged_prototypes.double().numpy()).max()
    assert (gap > 1e-3) if order == "paper" else (gap < 1e-5)


def test_keep_last_is_after_every_update():
    feats = synthetic_features(seed=4)
    for protocol, updates in (("paper", 20), ("consistent", 19)):
        result = train_bridge(feats, steps=20, keep_last=True, progress=False, protocol=protocol)
        assert result.kept_step == result.updates == updates


def test_hand_written_gradient_follows_the_autograd_trainer():
    """200 steps of the previous (autograd, evaluate-then-update) trainer: same loss terms, same kept step."""
    feats = synthetic_features(classes=20, shots=8, val=5, seed=1)
    old, kept_old = autograd_trainer(feats, 200)
    new: list[dict] = []
    result = train_bridge(feats, steps=200, log=new.append, progress=False, protocol="consistent")
    assert len(new) == len(old) == 200
    for a, b in zip(old, new):
        for k in ("loss", "img", "txtp", "txte", "cons"):
            assert b[k] == pytest.approx(a[k], rel=1e-4), (a["step"], k)
        assert b["bias"] == pytest.approx(a["bias"], rel=1e-3, abs=1e-9)
        assert b["val_acc"] == a["val_acc"]
    assert result.kept_step == kept_old and 0 < kept_old


def test_fit_records_the_protocol(problem):
    feats, _, _ = problem
    paper = fit_features(feats, features_info(feats), params=PARAMS, train=True, steps=30)
    assert paper.info.protocol == "paper" and paper.info.steps == 30 and 1 <= paper.info.kept_step <= 30
    consistent = fit_features(feats, features_info(feats), params=PARAMS, train=True, steps=30, protocol="consistent")
    assert consistent.info.protocol == "consistent" and consistent.info.steps == 29
    assert fit_features(feats, features_info(feats), params=PARAMS).info.protocol == "consistent"


def test_defaults_and_data_choices(image_folder):
    assert default_protocol(find_dataset("dtd"), train=False) is PAPER
    assert default_protocol(None, train=True) is PAPER
    assert default_protocol(None, train=False) is CONSISTENT
    feats = synthetic_features(classes=3, shots=2, seed=0)
    with pytest.raises(InputError, match="unknown protocol 'papr'") as refused:
        fit_features(feats, features_info(feats), protocol="papr")
    assert "paper, consistent" in refused.value.hint
    assert whole_val(CONSISTENT, None) and whole_val(PAPER, None) and whole_val(PAPER, find_dataset("dtd"))
    assert not whole_val(CONSISTENT, find_dataset("dtd"))  # a paper dataset's val split, sampled as before
    dataset = load_dataset(image_folder)  # 3 classes, 8 train and 4 val images each
    sampled, whole = few_shot_split(dataset, 2, seed=3), few_shot_split(dataset, 2, seed=3, whole_val=True)
    assert sampled.shots == whole.shots  # the protocol does not change the shots of a seed
    assert len(sampled.val) == 6 and sampled.val_source == "val split"
    assert sorted(whole.val) == sorted(dataset.splits["val"]) and whole.val_source == "whole val split"
    held_out = few_shot_split(load_dataset(image_folder / "train"), 2, seed=3, whole_val=True)
    assert held_out.val_source == "held out from train" and len(held_out.val) == 6
    dtd = find_dataset("dtd")
    assert augment_option(None, dtd, 4, PAPER).describe() == "10 rrc+cj (0.8, square)"
    assert augment_option(None, dtd, 4, CONSISTENT).describe() == "10 rrc+cj (0.8)"
    assert augment_option(1, None, 4, PAPER).describe() == "1 flip"


def test_missing_imagenet_cupl_file_is_said(tmp_path):
    with pytest.warns(UserWarning, match="ImageNet's file is not shipped"):
        assert description_file(find_dataset("imagenet"), PromptOptions()) is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert description_file(find_dataset("oxford_pets"), PromptOptions()).name == "oxford_pets.json"
        assert description_file(None, PromptOptions()) is None

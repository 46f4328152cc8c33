"""Fitting: SeMoBridge-T lowers its loss, the search beats the defaults, results are deterministic."""
import torch

from tests.helpers import features_info, synthetic_features
from semobridge.blend import BlendParams
from semobridge.fit import accuracy, build_head, fit_features
from semobridge.model import SeMoBridge
from semobridge.search import search_blend
from semobridge.train import train_bridge


def test_training_lowers_the_loss_and_logs_every_step():
    feats = synthetic_features()
    log = []
    train_bridge(feats, steps=300, seed=0, log=log.append, progress=False)
    assert [r["step"] for r in log] == list(range(300))
    assert set(log[0]) == {"step", "loss", "img", "txtp", "txte", "cons", "bias", "lr", "val_acc"}
    assert log[0]["bias"] == 0.0 and log[0]["lr"] == 1e-5
    assert log[-1]["loss"] < log[0]["loss"] - 0.01


def test_step_zero_is_the_training_free_bridge_only_in_the_consistent_protocol():
    feats = synthetic_features()
    free = build_head(feats, features_info(feats))
    log = []
    result = train_bridge(feats, steps=1, log=log.append, progress=False, protocol="consistent")
    assert len(log) == 1 and log[0]["step"] == 0
    assert result.kept_step == 0 and result.updates == 0
    torch.testing.assert_close(result.bridge.pinv.detach(), free.bridge.pinv)
    assert result.class_bias.abs().max() == 0
    # paper: one update, then the first validation; the training-free state is never a candidate
    result = train_bridge(feats, steps=1, progress=False, protocol="paper")
    assert result.kept_step == 1 and result.updates == 1
    assert (result.bridge.pinv - free.bridge.pinv).abs().max() > 0 and result.class_bias.abs().max() > 0


def test_search_is_at_least_as_good_as_the_defaults_on_val():
    feats = synthetic_features(classes=10, seed=3)
    head = build_head(feats, features_info(feats))
    default_acc = accuracy(head.with_params(BlendParams()), feats.val_image, feats.val_label)
    found = search_blend(head, feats.val_image, feats.val_label, trials=2048, seed=0, progress=False)
    searched_acc = accuracy(head.with_params(found), feats.val_image, feats.val_label)
    assert searched_acc >= default_acc
    assert searched_acc > default_acc  # this synthetic problem leaves room above the defaults


def test_fits_are_deterministic(tmp_path):
    feats = synthetic_features(seed=5)
    a = fit_features(feats, features_info(feats), train=True, steps=40, seed=7, search_trials=512)
    b = fit_features(feats, features_info(feats), train=True, steps=40, seed=7, search_trials=512)
    a.save(tmp_path / "a.safetensors")
    b.save(tmp_path / "b.safetensors")
    assert (tmp_path / "a.safetensors").read_bytes() == (tmp_path / "b.safetensors").read_bytes()
    loaded = SeMoBridge.load(tmp_path / "a.safetensors")
    torch.testing.assert_close(loaded(feats.val_image), a(feats.val_image), rtol=0, atol=0)
    assert loaded.info.variant == "trained" and loaded.info.csb


def test_without_val_the_defaults_are_used():
    feats = synthetic_features(val=0)
    head = fit_features(feats, features_info(feats))
    assert head.info.params == BlendParams().to_dict() and head.info.val_accuracy is None


def test_bf16_training_products_follow_fp32():
    """precision="bf16": the products over the shots in bf16 (fp32 accumulation); the exact fp32 gradient is the
    reference, and the trajectory stays within bf16's rounding of it."""
    import pytest

    from semobridge.prototypes import text_side
    from semobridge.train import Objective

    feats = synthetic_features(classes=8, shots=4, seed=1)
    text = text_side(feats.text_eos, feats.text_class, feats.text_projection, feats.num_classes)
    pinv = torch.linalg.pinv(feats.text_projection)
    bias = torch.randn(feats.num_classes, pinv.shape[1], generator=torch.Generator().manual_seed(0)) * 0.1
    grads = {}
    for precision in ("fp32", "bf16"):
        objective = Objective(feats, text, precision)
        terms, d_pinv, d_bias = objective.loss_and_grad(objective.state(pinv, bias))
        grads[precision] = (terms["loss"], torch.cat([d_pinv.flatten(), d_bias.flatten()]))
    (loss32, g32), (loss16, g16) = grads["fp32"], grads["bf16"]
    assert abs(loss16 - loss32) < 1e-2 * abs(loss32) and loss16 != loss32  # bf16 did run
    assert torch.nn.functional.cosine_similarity(g16, g32, dim=0) > 0.999
    logs = {p: [] for p in ("fp32", "bf16")}
    for p, log in logs.items():
        train_bridge(feats, steps=10, seed=0, log=log.append, progress=False, precision=p)
    assert max(abs(a["loss"] - b["loss"]) / a["loss"] for a, b in zip(*logs.values())) < 1e-2
    with pytest.raises(ValueError, match="precision 'fp16'"):
        Objective(feats, text, "fp16")

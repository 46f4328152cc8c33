"""The library against an independent float64 reference of docs/method.md (tests/reference.py).

Every formula of the method (text side, bridge, prototypes, class weights, the
three-term blend, the SeMoBridge-T losses, their gradients and the learning-rate
schedule) is checked number for number on synthetic CLIP-like features with a
modality gap, unequal prompts and shots per class and singular values of W below
the 0.3 truncation threshold.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from tests import reference as R  # noqa: E402

from semobridge.blend import BlendParams, affinities, blend  # noqa: E402
from semobridge.bridge import Bridge, truncated_pinv  # noqa: E402
from semobridge.features import FeatureSet  # noqa: E402
from semobridge.fit import build_head, fit_features  # noqa: E402
from semobridge.model import ModelInfo  # noqa: E402
from semobridge.prototypes import (  # noqa: E402
    bridged_prototypes,
    class_kl,
    class_weights,
    image_prototypes,
    text_side,
)
from semobridge.train import learning_rate, losses, train_bridge  # noqa: E402

RTOL, ATOL = 1e-4, 1e-5  # float32 library vs float64 reference, O(1) values

PARAM_SETS = [
    BlendParams(),  # published defaults
    BlendParams(smoothness=0.5, alpha=3.0, beta=2.0, gamma=4.0, lambda1=0.3, lambda2=0.6, lambda3=0.2),
    BlendParams(smoothness=1.5, alpha=10.0, beta=0.0, gamma=7.5, lambda1=1.0, lambda2=0.05, lambda3=0.9),
    BlendParams(smoothness=0.0, alpha=0.6, beta=9.0, gamma=0.45, lambda1=0.0, lambda2=1.0, lambda3=0.4),
]


def t32(a) -> torch.Tensor:
    a = np.asarray(a)
    if a.dtype.kind in "iu":
        return torch.from_numpy(a.astype(np.int64))
    return torch.from_numpy(a.astype(np.float32))


def close(got: torch.Tensor, want, rtol=RTOL, atol=ATOL):
    got = got.detach().double().cpu().numpy()
    want = np.asarray(want, dtype=np.float64)
    assert got.shape == want.shape, (got.shape, want.shape)
    np.testing.assert_allclose(got, want, rtol=rtol, atol=atol)


# ----------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def syn():
    return R.synthetic(seed=0)


@pytest.fixture(scope="module")
def ref_text(syn):
    return R.text_side(syn.eos, syn.prompt_class, syn.W, syn.C)


@pytest.fixture(scope="module")
def lib_text(syn):
    return text_side(t32(syn.eos), t32(syn.prompt_class), t32(syn.W), syn.C)


@pytest.fixture(scope="module")
def ref_pinv(syn):
    return R.pinv_truncated(syn.W)


@pytest.fixture(scope="module")
def lib_bridge(syn, lib_text):
    return Bridge(t32(syn.W), lib_text.eos_length)


@pytest.fixture(scope="module")
def class_bias(syn):
    rng = np.random.default_rng(7)
    return (0.8 * rng.standard_normal((syn.C, syn.W.shape[0]))).astype(np.float32).astype(np.float64)


@pytest.fixture(scope="module")
def perturbed_pinv(ref_pinv):
    rng = np.random.default_rng(11)
    Wp = ref_pinv + 0.05 * rng.standard_normal(ref_pinv.shape)
    return Wp.astype(np.float32).astype(np.float64)


def features_of(syn, with_val=False) -> FeatureSet:
    return FeatureSet(
        text_projection=t32(syn.W),
        text_eos=t32(syn.eos),
        text_class=t32(syn.prompt_class),
        shot_image=t32(syn.F),
        shot_label=t32(syn.labels),
        val_image=t32(syn.q) if with_val else None,
        val_label=t32(syn.q_labels) if with_val else None,
        logit_scale=syn.s,
        class_names=[f"class {c}" for c in range(syn.C)],
    )


def info_of(syn) -> ModelInfo:
    return ModelInfo(
        class_names=[f"class {c}" for c in range(syn.C)],
        backbone={"name": "synthetic", "pretrained": "none", "weights_hash": "0"},
        image_size=32, mean=[0.5, 0.5, 0.5], std=[0.25, 0.25, 0.25], params=BlendParams().to_dict(),
    )


# ----------------------------------------------------------------- synthetic data sanity


def test_synthetic_data_is_what_the_tests_need(syn):
    d_t, d = syn.W.shape
    assert d_t != d
    sv = np.linalg.svd(syn.W, compute_uv=False)
    assert (sv < 0.3).sum() >= 5 and (sv > 0.3).sum() >= 5
    assert np.min(np.abs(sv - 0.3)) > 1e-3  # no singular value sits on the threshold
    assert len(set(np.bincount(syn.prompt_class))) > 1  # unequal prompts per class
    assert len(set(np.bincount(syn.labels))) > 1  # unequal shots per class
    norms = np.linalg.norm(syn.F, axis=1)
    assert norms.std() > 0.1 * norms.mean()  # not normalised


# ----------------------------------------------------------------- bridge


def test_truncated_pinv_matches_svd_reference(syn, ref_pinv):
    got = truncated_pinv(t32(syn.W))
    assert got.shape == (syn.W.shape[1], syn.W.shape[0])
    assert got.dtype == torch.float32
    close(got, ref_pinv)
    # the truncation matters for this W: the plain pinv is very different
    full = R.pinv_full(syn.W)
    assert np.abs(full - ref_pinv).max() > 1.0
    assert np.abs(got.double().numpy() - full).max() > 1.0


def test_bridge_pinv_is_truncated(lib_bridge, ref_pinv):
    close(lib_bridge.pinv, ref_pinv)


def test_text_side(lib_text, ref_text):
    close(lib_text.classifier, ref_text.T)
    close(lib_text.eos_target, ref_text.E)
    assert lib_text.eos_length == pytest.approx(ref_text.L, rel=1e-5)


@pytest.mark.parametrize("with_bias", [False, True])
def test_pseudo_eos_and_bridge(syn, lib_bridge, ref_pinv, ref_text, class_bias, with_bias):
    x = syn.F
    b = class_bias[syn.labels] if with_bias else None
    lb = t32(b) if with_bias else None
    e_ref = R.pseudo_eos(x, ref_pinv, ref_text.L, b)
    assert np.allclose(np.linalg.norm(e_ref, axis=1), ref_text.L)
    # ê has length L ~ 45: compare relative to L
    close(lib_bridge.pseudo_eos(t32(x), lb), e_ref, rtol=RTOL, atol=ATOL * ref_text.L)
    g_ref = R.bridge(x, ref_pinv, syn.W, ref_text.L, b)
    scale = np.abs(g_ref).max()
    close(lib_bridge(t32(x), lb), g_ref, rtol=RTOL, atol=ATOL * scale)


def test_bridge_with_perturbed_pinv(syn, lib_text, ref_text, perturbed_pinv, class_bias):
    br = Bridge(t32(syn.W), lib_text.eos_length, trainable=True)
    with torch.no_grad():
        br.pinv.copy_(t32(perturbed_pinv))
    b = class_bias[syn.labels]
    g_ref = R.bridge(syn.F, perturbed_pinv, syn.W, ref_text.L, b)
    close(br(t32(syn.F), t32(b)), g_ref, atol=ATOL * np.abs(g_ref).max())


# ----------------------------------------------------------------- prototypes and class weights


def test_image_prototypes(syn):
    close(image_prototypes(t32(syn.F), t32(syn.labels), syn.C), R.image_prototypes(syn.F, syn.labels, syn.C))


@pytest.mark.parametrize("with_bias", [False, True])
def test_bridged_prototypes(syn, lib_bridge, ref_pinv, ref_text, class_bias, with_bias):
    B = class_bias if with_bias else None
    got = bridged_prototypes(lib_bridge, t32(syn.F), t32(syn.labels), syn.C, t32(B) if with_bias else None)
    want = R.bridged_prototypes(syn.F, syn.labels, syn.C, ref_pinv, syn.W, ref_text.L, B)
    close(got, want)
    if with_bias:  # the bias really changes P (the test has teeth)
        plain = R.bridged_prototypes(syn.F, syn.labels, syn.C, ref_pinv, syn.W, ref_text.L)
        assert np.abs(plain - want).max() > 1e-2


def test_class_kl_and_weights(syn, lib_text, ref_text):
    I = R.image_prototypes(syn.F, syn.labels, syn.C)
    D_ref = R.class_kl(I, ref_text.T)
    D = class_kl(t32(I), lib_text.classifier)
    close(D, D_ref)
    # a hand check of one entry: D_c = log2((1+1e-6)/(p_cc+1e-6)), p = softmax(I T^T) with no scale
    logits = I[2] @ ref_text.T.T
    p = np.exp(logits[2]) / np.exp(logits).sum()
    assert D_ref[2] == pytest.approx(np.log2((1 + 1e-6) / (p + 1e-6)), rel=1e-12)
    for sigma in (0.0, 0.01, 0.37, 1.5):
        close(class_weights(D, sigma), R.class_weights(D_ref, sigma), rtol=2e-5, atol=0)
        close(class_weights(D, torch.tensor(sigma)), R.class_weights(D_ref, sigma), rtol=2e-5, atol=0)


def test_class_kl_sharp_softmax():
    """A case far from uniform (the clip of p by 1e-6 matters)."""
    rng = np.random.default_rng(3)
    T = R.n(rng.standard_normal((4, 8)))
    I = T.copy()
    I[1] = -T[1]
    Ts, Is = 30.0 * T, 30.0 * I  # not unit vectors: exercises the raw dot product, no normalisation
    close(class_kl(t32(Is), t32(Ts)), R.class_kl(Is, Ts), rtol=1e-4, atol=1e-3)


# ----------------------------------------------------------------- logits


def _ref_terms(syn, ref_text, ref_pinv, params: BlendParams, P=None, Wp=None):
    Wp = ref_pinv if Wp is None else Wp
    I = R.image_prototypes(syn.F, syn.labels, syn.C)
    if P is None:
        P = R.bridged_prototypes(syn.F, syn.labels, syn.C, Wp, syn.W, ref_text.L)
    D = R.class_kl(I, ref_text.T)
    z1, z2, z3 = R.logits_terms(syn.q, ref_text.T, P, I, Wp, syn.W, ref_text.L, D,
                                params.smoothness, params.alpha, params.beta, params.gamma)
    z = params.lambda1 * z1 + params.lambda2 * z2 + params.lambda3 * z3
    return I, P, D, (z1, z2, z3), z


def test_affinities(syn, lib_text, lib_bridge, ref_text, ref_pinv):
    I, P, _, _, _ = _ref_terms(syn, ref_text, ref_pinv, BlendParams())
    got = affinities(t32(syn.q), lib_text.classifier, t32(P), t32(I), lib_bridge)
    want = R.affinities(syn.q, ref_text.T, P, I, ref_pinv, syn.W, ref_text.L)
    close(got, want)


@pytest.mark.parametrize("params", PARAM_SETS)
def test_blend_terms_and_sum(syn, lib_text, lib_bridge, ref_text, ref_pinv, params):
    I, P, D, (z1, z2, z3), z = _ref_terms(syn, ref_text, ref_pinv, params)
    aff = affinities(t32(syn.q), lib_text.classifier, t32(P), t32(I), lib_bridge)
    kl = t32(D)
    # each term alone, by switching the other two lambdas off
    for k, zk in enumerate((z1, z2, z3)):
        lam = [0.0, 0.0, 0.0]
        lam[k] = 1.0
        p = BlendParams(params.smoothness, params.alpha, params.beta, params.gamma, *lam)
        close(blend(aff, kl, p.to_tensor()), zk, rtol=2e-4, atol=1e-7)
    close(blend(aff, kl, params.to_tensor()), z, rtol=2e-4, atol=1e-7)


def test_blend_batch_of_params(syn, lib_text, lib_bridge, ref_text, ref_pinv):
    I, P, D, _, _ = _ref_terms(syn, ref_text, ref_pinv, BlendParams())
    aff = affinities(t32(syn.q), lib_text.classifier, t32(P), t32(I), lib_bridge)
    rows = torch.stack([p.to_tensor() for p in PARAM_SETS])
    got = blend(aff, t32(D), rows)
    assert got.shape == (len(PARAM_SETS), len(syn.q), syn.C)
    for i, p in enumerate(PARAM_SETS):
        close(got[i], _ref_terms(syn, ref_text, ref_pinv, p)[4], rtol=2e-4, atol=1e-7)


@pytest.mark.parametrize("params", PARAM_SETS[1:])
def test_full_model_training_free(syn, ref_text, ref_pinv, params):
    head = fit_features(features_of(syn), info_of(syn), params=params)
    I, P, D, _, z = _ref_terms(syn, ref_text, ref_pinv, params)
    close(head.text_classifier, ref_text.T)
    close(head.image_prototypes, I)
    close(head.bridged_prototypes, P)
    close(head.class_kl, D)
    close(head.bridge.pinv, ref_pinv)
    with torch.no_grad():
        got = head(t32(syn.q))
    close(got, z, rtol=2e-4, atol=1e-7)
    assert np.array_equal(got.argmax(-1).numpy(), z.argmax(-1))


def test_full_model_with_trained_bridge_and_bias(syn, lib_text, ref_text, perturbed_pinv, class_bias):
    """build_head with a given W⁺ and CSB: P uses B, the query bridge never does."""
    params = PARAM_SETS[1]
    br = Bridge(t32(syn.W), lib_text.eos_length, trainable=True)
    with torch.no_grad():
        br.pinv.copy_(t32(perturbed_pinv))
    info = info_of(syn)
    info.params = params.to_dict()
    head = build_head(features_of(syn), info, br, t32(class_bias))
    P = R.bridged_prototypes(syn.F, syn.labels, syn.C, perturbed_pinv, syn.W, ref_text.L, class_bias)
    _, _, _, _, z = _ref_terms(syn, ref_text, None, params, P=P, Wp=perturbed_pinv)
    close(head.bridged_prototypes, P)
    with torch.no_grad():
        got = head.with_params(params)(t32(syn.q))
    close(got, z, rtol=2e-4, atol=1e-7)


# ----------------------------------------------------------------- SeMoBridge-T losses


def _lib_losses(syn, lib_text, Wp, B):
    br = Bridge(t32(syn.W), lib_text.eos_length, trainable=True)
    with torch.no_grad():
        br.pinv.copy_(t32(Wp))
    Bt = torch.nn.Parameter(t32(B)) if B is not None else None
    out = losses(br, Bt, t32(syn.F), t32(syn.labels), lib_text, syn.s)
    return br, Bt, out


@pytest.mark.parametrize("with_bias", [False, True])
def test_loss_terms(syn, lib_text, ref_text, perturbed_pinv, class_bias, with_bias):
    B = class_bias if with_bias else None
    _, _, got = _lib_losses(syn, lib_text, perturbed_pinv, B)
    want = R.losses(perturbed_pinv, B, syn.F, syn.labels, syn.W, ref_text.T, ref_text.E, ref_text.L, syn.s, syn.C)
    assert set(got) >= {"img", "txtp", "txte", "cons", "bias", "loss"}
    for k in ("img", "txtp", "txte", "cons", "bias", "loss"):
        # img is a CE at scale s = 100: cosine errors ~1e-7 become ~1e-5 there
        atol = 5e-5 if k == "img" else ATOL
        assert float(got[k].detach()) == pytest.approx(float(want[k]), rel=RTOL, abs=atol), k
    if with_bias:
        assert float(want["bias"]) > 1e-2  # non-trivial
        assert float(want["img"]) > 1e-2
    else:
        assert float(got["bias"]) == 0.0


def test_loss_reference_torch_path_matches_numpy(syn, ref_text, perturbed_pinv, class_bias):
    """The torch-float64 evaluation of the reference (used for gradients) is the same formula."""
    args = (syn.F, syn.labels, syn.W, ref_text.T, ref_text.E, ref_text.L, syn.s, syn.C)
    a = R.losses(perturbed_pinv, class_bias, *args)
    targs = [torch.from_numpy(x) if isinstance(x, np.ndarray) and x.dtype == np.float64 else x for x in args]
    targs[1] = syn.labels
    b = R.losses(torch.from_numpy(perturbed_pinv), torch.from_numpy(class_bias), *targs, xp=torch)
    for k in a:
        assert float(b[k]) == pytest.approx(float(a[k]), rel=1e-12, abs=1e-12), k


def _ref_grads(syn, ref_text, Wp, B, term):
    Wp_t = torch.tensor(Wp, dtype=torch.float64, requires_grad=True)
    B_t = torch.tensor(B, dtype=torch.float64, requires_grad=True) if B is not None else None
    out = R.losses(Wp_t, B_t, torch.from_numpy(syn.F), syn.labels, torch.from_numpy(syn.W),
                   torch.from_numpy(ref_text.T), torch.from_numpy(ref_text.E), ref_text.L, syn.s, syn.C, xp=torch)
    out[term].backward()
    gW = Wp_t.grad.numpy() if Wp_t.grad is not None else np.zeros_like(Wp)
    return gW, (B_t.grad.numpy() if B_t is not None else None)


def _grad_close(got: torch.Tensor, want: np.ndarray, rel=2e-3):
    got = got.detach().double().numpy()
    scale = np.abs(want).max()
    assert scale > 1e-6
    np.testing.assert_allclose(got, want, rtol=0, atol=rel * scale)
    # direction agrees closely as a whole
    cos = (got * want).sum() / np.linalg.norm(got) / np.linalg.norm(want)
    assert cos > 1 - 1e-5


@pytest.mark.parametrize("term", ["img", "txtp", "txte", "cons", "bias", "loss"])
def test_loss_gradients_match_reference(syn, lib_text, ref_text, perturbed_pinv, class_bias, term):
    br, Bt, out = _lib_losses(syn, lib_text, perturbed_pinv, class_bias)
    out[term].backward()
    gW, gB = _ref_grads(syn, ref_text, perturbed_pinv, class_bias, term)
    if term == "bias":  # the bias term does not depend on W⁺
        assert br.pinv.grad is None or float(br.pinv.grad.abs().max()) == 0.0
    else:
        _grad_close(br.pinv.grad, gW)
    _grad_close(Bt.grad, gB)


def test_img_gradient_flows_through_prototypes(syn, lib_text, ref_text, perturbed_pinv, class_bias):
    """P is not detached: the gradient of img w.r.t. W⁺ is not that of a detached-P loss."""
    br, _, out = _lib_losses(syn, lib_text, perturbed_pinv, class_bias)
    out["img"].backward()
    gW, _ = _ref_grads(syn, ref_text, perturbed_pinv, class_bias, "img")
    _grad_close(br.pinv.grad, gW)
    # finite differences of the float64 NumPy reference along a random direction
    rng = np.random.default_rng(5)
    V = rng.standard_normal(perturbed_pinv.shape)
    h = 1e-5
    args = (syn.F, syn.labels, syn.W, ref_text.T, ref_text.E, ref_text.L, syn.s, syn.C)
    fd = (R.losses(perturbed_pinv + h * V, class_bias, *args)["img"]
          - R.losses(perturbed_pinv - h * V, class_bias, *args)["img"]) / (2 * h)
    lib_dir = float((br.pinv.grad.double().numpy() * V).sum())
    assert lib_dir == pytest.approx(fd, rel=2e-3, abs=1e-6 * np.abs(V).sum() * np.abs(gW).max())
    assert abs(fd) > 1e-4


# ----------------------------------------------------------------- schedule and a training step


def test_learning_rate_schedule():
    assert learning_rate(0) == pytest.approx(1e-5, rel=1e-12)
    for e in (1, 2, 100, 250, 499):
        assert learning_rate(e) == pytest.approx(1.5e-4 * e / 500, rel=1e-12)
        assert learning_rate(e) == pytest.approx(R.learning_rate(e), rel=1e-12)
    for e in (500, 501, 1000, 4999):
        assert learning_rate(e) == pytest.approx(1.5e-4, rel=1e-12)


def test_train_bridge_first_steps_match_reference(syn, ref_text, ref_pinv):
    """Step 0 logs the training-free losses; step 1 those after one AdamW step (lr 1e-5, wd 0.01)."""
    records = []
    train_bridge(features_of(syn), steps=2, csb=True, seed=0, log=records.append, progress=False)
    assert [r["step"] for r in records] == [0, 1]
    assert records[0]["lr"] == pytest.approx(1e-5) and records[1]["lr"] == pytest.approx(1.5e-4 / 500)
    B0 = np.zeros((syn.C, syn.W.shape[0]))
    args = (syn.F, syn.labels, syn.W, ref_text.T, ref_text.E, ref_text.L, syn.s, syn.C)
    want0 = R.losses(ref_pinv, B0, *args)
    for k in ("img", "txtp", "txte", "cons", "bias", "loss"):
        assert records[0][k] == pytest.approx(float(want0[k]), rel=RTOL, abs=5e-5), k
    # one AdamW step from W⁺ = pinv, B = 0; the bias term has zero gradient at B = 0
    Wp_t = torch.tensor(ref_pinv, requires_grad=True)
    B_t = torch.zeros(B0.shape, dtype=torch.float64, requires_grad=True)
    out = R.losses(Wp_t, B_t, torch.from_numpy(syn.F), syn.labels, torch.from_numpy(syn.W),
                   torch.from_numpy(ref_text.T), torch.from_numpy(ref_text.E), ref_text.L, syn.s, syn.C, xp=torch)
    # (built without the bias term: its sqrt has a 0/0 derivative at B = 0, where the term's
    # true gradient is 0)
    (R.LAMBDA_IT * out["img"] + (1 - R.LAMBDA_IT) * (out["txtp"] + out["txte"]) / 2
     + R.LAMBDA_C * out["cons"]).backward()
    lr, wd, eps = 1e-5, 0.01, 1e-8

    def adamw(p, g):  # first step: m̂ = g, v̂ = g²
        return p * (1 - lr * wd) - lr * g / (np.abs(g) + eps)

    Wp1 = adamw(ref_pinv, Wp_t.grad.numpy())
    B1 = adamw(B0, B_t.grad.numpy())
    want1 = R.losses(Wp1, B1, *args)
    for k in ("img", "txtp", "txte", "cons", "loss"):
        assert records[1][k] == pytest.approx(float(want1[k]), rel=RTOL, abs=5e-5), k
    assert records[1]["bias"] == pytest.approx(float(want1["bias"]), rel=1e-2, abs=1e-12)
    assert abs(float(want1["loss"]) - float(want0["loss"])) > 1e-4  # the step moved something

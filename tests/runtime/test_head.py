"""The runtime's numpy head maths against semobridge's torch functions (the source of truth)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from semobridge.bridge import Bridge
from semobridge.prototypes import bridged_prototypes, class_kl, image_prototypes, text_side
from semobridge_runtime import head
from semobridge_runtime.classes import ClassSet
from tests.helpers import synthetic_features

TOL = 1e-6


@pytest.fixture(scope="module")
def features():
    return synthetic_features(classes=12, shots=5, val=1, seed=3, d_t=48, d=64)


def per_class(fn, x: torch.Tensor, labels: torch.Tensor, C: int) -> np.ndarray:
    return np.stack([fn(x[labels == c].numpy()) for c in range(C)])


def test_text_classifier(features) -> None:
    C, W = features.num_classes, features.text_projection
    expected = text_side(features.text_eos, features.text_class, W, C).classifier.numpy()
    ours = per_class(lambda e: head.text_classifier(e, W.numpy()), features.text_eos, features.text_class, C)
    np.testing.assert_allclose(ours, expected, rtol=0, atol=TOL)


def test_image_and_bridged_prototypes(features) -> None:
    C, W = features.num_classes, features.text_projection
    L = text_side(features.text_eos, features.text_class, W, C).eos_length
    for trained in (False, True):  # a SeMoBridge-T W+ is used as it is; new classes get no class bias
        bridge = Bridge(W, L, trainable=trained)
        if trained:
            with torch.no_grad():
                bridge.pinv.add_(0.05 * torch.randn(bridge.pinv.shape, generator=torch.Generator().manual_seed(1)))
        with torch.no_grad():
            P = bridged_prototypes(bridge, features.shot_image, features.shot_label, C).numpy()
        pinv = bridge.pinv.detach().numpy()
        ours = per_class(lambda f: head.bridged_prototype(f, pinv, W.numpy(), L), features.shot_image, features.shot_label, C)
        np.testing.assert_allclose(ours, P, rtol=0, atol=TOL)
    I = image_prototypes(features.shot_image, features.shot_label, C).numpy()
    np.testing.assert_allclose(per_class(head.image_prototype, features.shot_image, features.shot_label, C), I, rtol=0, atol=TOL)


def test_class_kl_over_the_whole_set_and_after_edits(features) -> None:
    """Full recomputation and the class set's running denominators agree with class_kl after adds and removes."""
    C, W = features.num_classes, features.text_projection
    T = text_side(features.text_eos, features.text_class, W, C).classifier
    I = image_prototypes(features.shot_image, features.shot_label, C)
    P = torch.nn.functional.normalize(torch.randn(C, T.shape[1], generator=torch.Generator().manual_seed(2)), dim=-1)
    np.testing.assert_allclose(head.class_kl(I.numpy(), T.numpy()), class_kl(I, T).numpy(), rtol=0, atol=1e-5)

    names = [f"class {c}" for c in range(C)]
    classes = ClassSet(tuple(names[:3]), T[:3].numpy(), P[:3].numpy(), I[:3].numpy(), class_kl(I[:3], T[:3]).numpy())
    for c in range(3, C):
        classes = classes.added(names[c], T[c].numpy(), P[c].numpy(), I[c].numpy())
    for gone in ("class 0", "class 7", "class 11"):
        classes = classes.removed(gone)
    classes = classes.renamed("class 5", "five")
    keep = [c for c in range(C) if names[c] not in ("class 0", "class 7", "class 11")]
    assert classes.names == tuple("five" if c == 5 else names[c] for c in keep)
    np.testing.assert_allclose(classes.class_kl, class_kl(I[keep], T[keep]).numpy(), rtol=0, atol=1e-5)
    np.testing.assert_array_equal(classes.image_prototypes, I[keep].numpy())
    np.testing.assert_array_equal(classes.bridged_prototypes, P[keep].numpy())
    assert all(not a.flags.writeable for a in classes.feeds().values())


def test_the_first_edit_recovers_the_softmax_denominators_from_the_kl() -> None:
    """sums_from_kl inverts class_kl in O(C·d) (so no edit needs the C x C product), within float32 rounding."""
    rng = np.random.default_rng(5)
    T = head.normalize(rng.standard_normal((400, 64)).astype(np.float32))
    I = head.normalize(T + 0.7 * rng.standard_normal((400, 64)).astype(np.float32)).astype(np.float32)
    exact = head.affinity_sums(I, T)
    recovered = head.sums_from_kl(I, T, head.class_kl(I, T))
    np.testing.assert_allclose(recovered, exact, rtol=1e-6, atol=0)
    assert head.sums_from_kl(I, T, np.full(400, np.nan, np.float32)) is None
    assert head.sums_from_kl(I, T, np.full(400, 40.0, np.float32)) is None  # p <= 0: not a KL of these prototypes

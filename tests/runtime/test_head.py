"""Enrolment's maths against semobridge's torch functions (the source of truth), and no copy of them in the runtime.

The runtime computes a class's T, P and I as normalised means of rows the exported graphs give (the text
tower's `embedding`, the model's `features` and `bridged_features`, traced from semobridge: tested in
tests/export/test_text.py and test_onnx_graph.py); the class KL's formula is the runtime's, called by
semobridge. End to end (enrolment equals a re-fit): tests/runtime/test_classes.py.
"""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest
import torch

import semobridge.prototypes
from semobridge.bridge import Bridge
from semobridge.prototypes import bridged_prototypes, class_kl, image_prototypes, prompt_embeddings, text_side
from semobridge_runtime import head
from semobridge_runtime.classes import ClassSet
from tests.helpers import synthetic_features

TOL = 1e-6
ROOT = Path(__file__).resolve().parents[2]
RUNTIME = ROOT / "runtime" / "semobridge_runtime"


@pytest.fixture(scope="module")
def features():
    return synthetic_features(classes=12, shots=5, val=1, seed=3, d_t=48, d=64)


def per_class(rows: torch.Tensor, labels: torch.Tensor, C: int) -> np.ndarray:
    """The runtime's prototype of each class's rows."""
    return np.stack([head.prototype(rows[labels == c].numpy()) for c in range(C)])


def test_text_classifier_is_the_mean_of_the_traced_prompt_embeddings(features) -> None:
    C, W = features.num_classes, features.text_projection
    expected = text_side(features.text_eos, features.text_class, W, C).classifier.numpy()
    ours = per_class(prompt_embeddings(features.text_eos, W), features.text_class, C)
    np.testing.assert_allclose(ours, expected, rtol=0, atol=TOL)


def test_image_and_bridged_prototypes_are_means_of_the_traced_outputs(features) -> None:
    C, W = features.num_classes, features.text_projection
    L = text_side(features.text_eos, features.text_class, W, C).eos_length
    for trained in (False, True):  # a SeMoBridge-T W+ is used as it is; new classes get no class bias
        bridge = Bridge(W, L, trainable=trained)
        if trained:
            with torch.no_grad():
                bridge.pinv.add_(0.05 * torch.randn(bridge.pinv.shape, generator=torch.Generator().manual_seed(1)))
        with torch.no_grad():
            P = bridged_prototypes(bridge, features.shot_image, features.shot_label, C).numpy()
            bridged = bridge(features.shot_image)  # what the graph's bridged_features output is traced from
        np.testing.assert_allclose(per_class(bridged, features.shot_label, C), P, rtol=0, atol=TOL)
    I = image_prototypes(features.shot_image, features.shot_label, C).numpy()
    np.testing.assert_allclose(per_class(features.shot_image, features.shot_label, C), I, rtol=0, atol=TOL)


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


# ---------------------------------------------------------------- each formula once


def _sources(folder: Path) -> dict[Path, ast.Module]:
    return {path: ast.parse(path.read_text(encoding="utf-8")) for path in sorted(folder.rglob("*.py"))}


def _words(tree: ast.AST) -> set[str]:
    """Every identifier, attribute, argument name and string constant of a module."""
    words = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            words.add(node.id)
        elif isinstance(node, ast.Attribute):
            words.add(node.attr)
        elif isinstance(node, ast.arg):
            words.add(node.arg)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            words.add(node.value)
    return words


def test_the_runtime_holds_no_bridge_and_no_text_projection() -> None:
    """The bridge needs W⁺, W and L, and T needs W: no module of the runtime names or reads them (head.safetensors
    still holds them, as semobridge's model file; the runtime reads its fitted classes only), so no copy of the
    bridge or of the text classifier's projection can exist there."""
    parts = ("pinv", "text_projection", "eos_length")
    found = {f"{path.relative_to(ROOT)}: {word!r}" for path, tree in _sources(RUNTIME).items()
             for word in _words(tree) if any(part in word for part in parts)}
    assert not found, f"the runtime names the bridge's parts: {sorted(found)}"
    assert not {"text_classifier", "bridge", "bridged_prototype", "image_prototype"} & set(vars(head)), \
        "head.py holds per-quantity formulas again; the graphs give their rows and head.prototype averages them"


def test_the_class_kl_formula_exists_once() -> None:
    """semobridge's class_kl calls the runtime's kl_bits (same function, same ε); log2 and KL_EPS appear nowhere
    else in the library, the exporter or the runtime."""
    assert semobridge.prototypes.kl_bits is head.kl_bits
    probability = torch.tensor([0.0, 0.25, 1.0])
    np.testing.assert_array_equal(semobridge.prototypes.kl_bits(probability, torch.log2).numpy(),
                                  head.kl_bits(probability.numpy()).astype(np.float32))
    uses = []
    for folder in ("semobridge", "export", "runtime/semobridge_runtime"):
        for path, tree in _sources(ROOT / folder).items():
            for node in ast.walk(tree):
                if isinstance(node, ast.FunctionDef):
                    for inner in ast.walk(node):
                        name = (inner.attr if isinstance(inner, ast.Attribute)
                                else inner.id if isinstance(inner, ast.Name) else "")
                        if name in ("log2", "KL_EPS"):
                            uses.append(f"{path.relative_to(ROOT)}:{node.name}:{name}")
                elif isinstance(node, ast.Assign) and any(
                        isinstance(t, ast.Name) and t.id == "KL_EPS" for t in node.targets):
                    uses.append(f"{path.relative_to(ROOT)}:KL_EPS =")
    runtime_head = "runtime/semobridge_runtime/head.py"
    assert sorted(set(uses)) == sorted({f"{runtime_head}:KL_EPS =", f"{runtime_head}:kl_bits:log2",
                                        f"{runtime_head}:kl_bits:KL_EPS", f"{runtime_head}:own_probability:KL_EPS",
                                        "semobridge/prototypes.py:class_kl:log2"}), uses

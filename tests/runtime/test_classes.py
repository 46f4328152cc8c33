"""Class enrolment in the runtime: the same scores as `semobridge fit`, class files, bad input."""

from __future__ import annotations

import numpy as np
import pytest

from semobridge_export import library_scores
from semobridge_runtime import Classifier, InputError, ModelError
from tests.runtime.conftest import ENROL_CLASSES, ENROL_TEMPLATES

TOL = 1e-6


def shots(pool, name: str, split: str = "train") -> list:
    return sorted((pool / split / name.replace(" ", "_")).glob("*.png"))


def query_images(pool) -> np.ndarray:
    from PIL import Image

    return np.stack([np.asarray(Image.open(p).convert("RGB")) for name in ENROL_CLASSES for p in shots(pool, name, "test")])


def assert_same_as_fit(clf: Classifier, head, backbone, pool) -> None:
    """Class set, scores and labels of the runtime equal those of the fitted head."""
    assert clf.class_names == head.info.class_names
    classes = clf.classes
    for name, expected in [("text_classifier", head.text_classifier), ("bridged_prototypes", head.bridged_prototypes),
                           ("image_prototypes", head.image_prototypes), ("class_kl", head.class_kl)]:
        np.testing.assert_allclose(getattr(classes, name), expected.numpy(), rtol=0, atol=TOL, err_msg=name)
    images = query_images(pool)
    result = clf.predict(images)
    library = library_scores(head, backbone, images)  # open_clip preprocessing + torch encoder + the fitted head
    np.testing.assert_allclose(result.scores, library["scores"], rtol=0, atol=TOL)
    np.testing.assert_array_equal(result.labels, np.where(result.known, library["label"], -1))  # -1: unknown


def test_a_fresh_class_set_scores_as_semobridge_fit(enrol_export, enrol_pool, fit_on, tiny_backbone) -> None:
    clf = Classifier.load(enrol_export)
    assert clf.class_names == list(ENROL_CLASSES[:3])
    for name in ENROL_CLASSES[3:]:
        clf.add_class(name, shots(enrol_pool, name))
    for name in ENROL_CLASSES[:3]:
        clf.remove_class(name)
    assert_same_as_fit(clf, fit_on(ENROL_CLASSES[3:]), tiny_backbone, enrol_pool)


def test_add_and_remove_on_the_fitted_classes(enrol_export, enrol_pool, fit_on, tiny_backbone, tmp_path) -> None:
    """Remove 'red fox' (fitted with descriptions), add 'white swan': as fitting blue whale, green tree, white swan."""
    clf = Classifier.load(enrol_export)
    clf.remove_class("red fox")
    clf.add_class("white swan", [str(p) for p in shots(enrol_pool, "white swan")])
    expected = fit_on(("blue whale", "green tree", "white swan"))
    assert_same_as_fit(clf, expected, tiny_backbone, enrol_pool)

    clf.save_classes(tmp_path / "shop.classes")  # a class file gives the same scores, in a new process too
    again = Classifier.load(enrol_export, classes=tmp_path / "shop.classes")
    np.testing.assert_array_equal(again.predict(query_images(enrol_pool)).scores, clf.predict(query_images(enrol_pool)).scores)

    clf.remove_class("white swan")  # back to a subset of the fitted classes; re-adding a fitted class uses its descriptions
    clf.add_class("red fox", shots(enrol_pool, "red fox"))
    clf.remove_class("blue whale")
    assert_same_as_fit(clf, fit_on(("green tree", "red fox")), tiny_backbone, enrol_pool)


def test_the_graph_defaults_are_the_fitted_classes(enrol_export, enrol_pool, fit_on, tiny_backbone) -> None:
    """A plain ONNX Runtime session fed only the image gets the fitted classes; fed a class set, that set."""
    from semobridge_export import session

    head = fit_on(ENROL_CLASSES[:3])
    images = query_images(enrol_pool)
    plain = session(enrol_export).run(["scores"], {"image": images})[0]
    np.testing.assert_allclose(plain, library_scores(head, tiny_backbone, images)["scores"], rtol=0, atol=TOL)
    clf = Classifier.load(enrol_export)
    clf.add_class("white swan", shots(enrol_pool, "white swan"))
    fed = session(enrol_export).run(["scores"], {"image": images, **clf.classes.feeds()})[0]
    np.testing.assert_array_equal(fed, clf.predict(images).scores)


def test_prompts_given_at_enrolment(enrol_export, enrol_pool, tiny_backbone) -> None:
    """prompts= replaces the fit's templates: T is n(mean n(e W)) of exactly those prompts."""
    from semobridge.prototypes import text_side
    import torch

    clf = Classifier.load(enrol_export)
    prompts = ["a photo of a swan, a white bird.", "a swan on a lake"]
    clf.add_class("swan", shots(enrol_pool, "white swan"), prompts=prompts)
    eos = tiny_backbone.encode_text_eos(prompts)
    expected = text_side(eos, torch.zeros(2, dtype=torch.long), tiny_backbone.text_projection, 1).classifier[0]
    np.testing.assert_allclose(clf.classes.text_classifier[-1], expected.numpy(), rtol=0, atol=TOL)
    assert clf._enrolment._text.prompts("white swan") == [t.format("white swan") for t in ENROL_TEMPLATES]


def test_int8_text_tower(enrol_export, enrol_pool) -> None:
    exact = Classifier.load(enrol_export)
    fast = Classifier.load(enrol_export, text_model=enrol_export.with_name("text_int8.onnx"))
    for clf in (exact, fast):
        clf.add_class("white swan", shots(enrol_pool, "white swan"))
    a, b = exact.classes.text_classifier[-1], fast.classes.text_classifier[-1]
    assert 0.99 < float(a @ b) < 1.0


# ---------------------------------------------------------------- bad input


def test_bad_names(enrol_export, enrol_pool) -> None:
    clf = Classifier.load(enrol_export)
    images = shots(enrol_pool, "white swan")
    for name, message in [("", "empty"), ("   ", "empty"), ("x" * 257, "over 256"), ("red\nfox", "control character"),
                          ("a\tb", "control character"), ("bell\x07", "control character"), ("x\u2028y", "line separator"),
                          ("red fox", "already a class named 'red fox'"), ("Red Fox ", "ignoring case"), (3, "string"),
                          ("\ud800", "lone surrogate")]:
        with pytest.raises(InputError, match=message):
            clf.add_class(name, images)
    with pytest.raises(InputError, match="already a class named 'green tree'"):
        clf.rename_class("red fox", "green tree")
    with pytest.raises(InputError, match="no class named 'red cat'"):
        clf.remove_class("red cat")
    with pytest.raises(InputError, match="did you mean 'red fox'"):
        clf.rename_class("Red fox", "fox")
    assert clf.class_names == list(ENROL_CLASSES[:3])


def test_bad_images_change_nothing(enrol_export, enrol_pool, tmp_path) -> None:
    clf = Classifier.load(enrol_export)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    for images, message in [([broken], "cannot decode"),  # no images at all: a class from its name (test_open_set)
                            ([tmp_path / "missing.png"], "no such image file"), (np.zeros((2, 2, 3), np.float32), "dtype")]:
        with pytest.raises(InputError, match=message):
            clf.add_class("white swan", images)
    assert clf.class_names == list(ENROL_CLASSES[:3]) and clf._enrolment.classes is None


def test_the_last_class_cannot_be_removed(enrol_export) -> None:
    clf = Classifier.load(enrol_export)
    clf.remove_class("red fox")
    clf.remove_class("blue whale")
    with pytest.raises(InputError, match="last class"):
        clf.remove_class("green tree")
    assert clf.class_names == ["green tree"]


def test_predictions_during_edits_see_one_class_set(enrol_export, enrol_pool) -> None:
    """Edits swap the class set atomically: every prediction made meanwhile uses one whole set."""
    from concurrent.futures import ThreadPoolExecutor

    clf = Classifier.load(enrol_export)
    images = query_images(enrol_pool)[:4]
    states = {tuple(clf.class_names): clf.predict(images).scores}

    def edit() -> None:
        for name in ENROL_CLASSES[3:]:
            clf.add_class(name, shots(enrol_pool, name))
            states[tuple(clf.class_names)] = clf.predict(images).scores
        clf.remove_class("red fox")
        states[tuple(clf.class_names)] = clf.predict(images).scores

    with ThreadPoolExecutor(max_workers=4) as pool:
        readers = [pool.submit(lambda: [clf.predict(images) for _ in range(15)]) for _ in range(3)]
        edit()
        results = [r for future in readers for r in future.result()]
    assert len(states) == 4
    for result in results:
        match = [names for names, s in states.items() if s.shape == result.scores.shape and np.array_equal(s, result.scores)]
        assert match, "a prediction mixed two class sets"
        assert result.class_names == [match[0][i] if i >= 0 else None for i in result.labels]  # -1: unknown


def test_without_the_text_packages_enrolment_says_how_to_repair(enrol_export, enrol_pool, tmp_path, monkeypatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "ftfy", None)  # as if not installed
    clf = Classifier.load(enrol_export)
    with pytest.raises(InputError, match="needs the text packages ftfy and regex") as caught:
        clf.add_class("white swan", shots(enrol_pool, "white swan"))
    assert "reinstall semobridge-runtime" in caught.value.hint
    clf.remove_class("red fox")  # everything but enrolment works without them
    clf.save_classes(tmp_path / "x.classes")
    assert Classifier.load(enrol_export, classes=tmp_path / "x.classes").class_names == ["blue whale", "green tree"]


def test_semobridge_t_keeps_its_trained_bridge_and_gives_new_classes_no_bias(enrol_export, fit_on, enrol_pool, tiny_backbone,
                                                                           tmp_path) -> None:
    """A SeMoBridge-T model (a trained W+ and class biases): a new class is bridged with the trained W+ and
    no bias (semobridge's bridged_prototypes with b = 0); the fitted classes keep their prototypes; class
    files of the training-free model (bridged with pinv(W)) are refused."""
    import torch

    from semobridge.prototypes import bridged_prototypes, class_kl
    from semobridge_export import export

    trained = fit_on(ENROL_CLASSES[:3])
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():  # as if trained: W+ moved, class biases learnt
        trained.bridge.pinv.add_(0.05 * torch.randn(trained.bridge.pinv.shape, generator=g))
        trained.class_bias = 0.3 * torch.randn(3, trained.bridge.pinv.shape[1], generator=g)
    trained.info.variant = "trained"
    model = export(trained, tiny_backbone, tmp_path / "t", log=lambda _: None)["onnx"]
    clf = Classifier.load(model)
    clf.add_class("white swan", shots(enrol_pool, "white swan"))
    F = torch.from_numpy(clf._run(shots(enrol_pool, "white swan"), ("features",), None)[0])
    with torch.no_grad():
        expected = bridged_prototypes(trained.bridge, F, torch.zeros(len(F), dtype=torch.long), 1,
                                      torch.zeros(1, trained.bridge.pinv.shape[1]))[0]
    classes = clf.classes
    np.testing.assert_allclose(classes.bridged_prototypes[-1], expected.numpy(), rtol=0, atol=TOL)
    np.testing.assert_array_equal(classes.bridged_prototypes[:3], trained.bridged_prototypes.numpy())
    kl = class_kl(torch.from_numpy(np.array(classes.image_prototypes)), torch.from_numpy(np.array(classes.text_classifier)))
    np.testing.assert_allclose(classes.class_kl, kl.numpy(), rtol=0, atol=TOL)

    Classifier.load(enrol_export).save_classes(tmp_path / "free.classes")
    with pytest.raises(ModelError, match="another W\\+"):
        clf.load_classes(tmp_path / "free.classes")


def test_an_export_from_before_the_traced_head_refuses_enrolment_with_a_re_export_hint(enrol_export, enrol_pool,
                                                                                       tmp_path) -> None:
    """A model without the `bridged_features` output, or a text tower without `text_embedding` (it gave the pooled
    token before W), cannot enrol: the runtime holds no copy of the bridge or the projection to fall back on. The
    error says to re-export; removing, renaming, class files and classes from their name (with a new text
    tower) still work."""
    import shutil

    import onnx

    old = tmp_path / "old"
    shutil.copytree(enrol_export.parent, old)
    model = onnx.load(str(old / "model.onnx"))
    outputs = [o for o in model.graph.output if o.name != "bridged_features"]
    del model.graph.output[:]
    model.graph.output.extend(outputs)
    onnx.save(model, str(old / "model.onnx"))
    clf = Classifier.load(old / "model.onnx")
    with pytest.raises(ModelError, match="no 'bridged_features' output") as caught:
        clf.add_class("white swan", shots(enrol_pool, "white swan"))
    assert "re-export" in caught.value.hint and clf.class_names == list(ENROL_CLASSES[:3])
    clf.add_class("white swan", [])  # from its name: the graph's outputs are not needed
    clf.remove_class("red fox")
    clf.rename_class("white swan", "swan")
    clf.save_classes(tmp_path / "x.classes")
    again = Classifier.load(old / "model.onnx", classes=tmp_path / "x.classes")
    assert again.class_names == ["blue whale", "green tree", "swan"]

    text = onnx.load(str(old / "text.onnx"))
    for node in text.graph.node:
        node.output[:] = ["eos" if o == "text_embedding" else o for o in node.output]
    text.graph.output[0].name = "eos"
    onnx.save(text, str(old / "text.onnx"))
    for enrol in (lambda c: c.add_class("white swan", shots(enrol_pool, "white swan")),
                  lambda c: c.embed_text(["a swan"])):
        with pytest.raises(ModelError, match="older export.*no 'text_embedding' output") as caught:
            enrol(Classifier.load(enrol_export, text_model=old / "text.onnx"))
        assert "re-export" in caught.value.hint


def test_a_model_without_recorded_templates_needs_prompts(onnx_model, images) -> None:
    """The tiny test model was fitted from embeddings: no templates, so enrolment asks for prompts."""
    clf = Classifier.load(onnx_model)
    with pytest.raises(InputError, match="records no prompt templates.*prompts="):
        clf.add_class("black cat", images[:2])
    for bad in ("a photo of a cat.", [], [""], [3]):
        with pytest.raises(InputError, match="non-empty list of non-empty strings"):
            clf.add_class("black cat", images[:2], prompts=bad)
    clf.add_class("black cat", images[:2], prompts=["a photo of a black cat."])
    assert clf.class_names[-1] == "black cat" and clf.predict(images[0]).scores.shape == (1, 6)

"""The text tower (text.onnx): open_clip's normalised text embedding n(e W), its metadata and companions."""
from __future__ import annotations

import gzip
import json

import numpy as np
import onnx
import onnx_ir
import pytest

from semobridge.prompts import ENSEMBLE_TEMPLATES
from semobridge_export import session
from semobridge_export.metadata import TEXT_METADATA_KEY
from semobridge_export.onnx_graph import module_scope
from semobridge_export.reference import text_drift
from semobridge_export.text import TextExportError, TextTower, tokenizer_spec

PROMPTS = [t.format(n) for n in ("red fox", "crème brûlée", "a very " * 40 + "long name") for t in ENSEMBLE_TEMPLATES]


def test_matches_open_clips_text_encoder(exported_onnx, tiny_backbone):
    """The output is open_clip's own normalised text embedding, and semobridge's prompt_embeddings (the function
    traced, which text_side averages into T) of the pooled EOS token."""
    import torch

    from semobridge.prototypes import prompt_embeddings

    sess = session(exported_onnx / "text.onnx")
    assert [o.name for o in sess.get_outputs()] == ["text_embedding"]
    for batch in (PROMPTS[:1], PROMPTS[:5], PROMPTS):
        tokens = tiny_backbone.tokenizer(batch)
        embedding = sess.run(None, {"tokens": tokens.numpy()})[0]
        with torch.no_grad():
            open_clip = tiny_backbone.model.encode_text(tokens, normalize=True).numpy()
            library = prompt_embeddings(tiny_backbone.encode_text_eos(batch), tiny_backbone.text_projection).numpy()
        assert embedding.shape == (len(batch), 64) and embedding.dtype == np.float32
        assert np.abs(embedding - open_clip).max() <= 1e-5 and np.abs(embedding - library).max() <= 1e-5


@pytest.mark.parametrize("model", ["semobridge-tiny-rn"])
def test_other_backbones_text_tower(model):
    """The ResNet CLIP's text side traces as well (eager tower against open_clip)."""
    import torch

    from semobridge.backbones import load_backbone

    backbone = load_backbone(model, "none", device="cpu")
    tower = TextTower(backbone)
    assert getattr(tower.model, "visual", None) is None  # the image tower is not copied
    tokens = backbone.tokenizer(PROMPTS[:4])
    with torch.no_grad():
        assert torch.allclose(tower(tokens), backbone.model.encode_text(tokens, normalize=True), atol=1e-6)
        assert backbone.model.text_projection is not None  # the caller's model is untouched


def test_metadata_vocabulary_and_licence(exported_onnx, tiny_backbone):
    model = onnx.load(str(exported_onnx / "text.onnx"))
    meta = json.loads({p.key: p.value for p in model.metadata_props}[TEXT_METADATA_KEY])
    assert meta["tokenizer"] == {"kind": "clip-bpe", "vocabulary": "bpe_simple_vocab_16e6.txt.gz", "context_length": 77,
                                 "clean": "lower", "start_token": 49406, "end_token": 49407}
    assert meta["backbone"] == tiny_backbone.identity() and meta["precision"] == "fp32"
    assert [d.dim_param or d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim] == ["M", 77]
    lines = gzip.open(exported_onnx / "bpe_simple_vocab_16e6.txt.gz").read().decode().split("\n")
    assert len(lines) > 49152 - 256 - 2
    licence = (exported_onnx / "bpe_simple_vocab_16e6.txt.gz.LICENSE.txt").read_text()
    assert "MIT License" in licence and "Copyright (c) 2021 OpenAI" in licence


def test_int8_text_tower(exported_onnx):
    """The transformer's matrix products run int8; the projection W stays fp32 (a float MatMul on the pooled
    token)."""
    model = onnx.load(str(exported_onnx / "text_int8.onnx"))
    assert any(n.op_type == "MatMulInteger" for n in model.graph.node)
    fp32 = onnx_ir.load(str(exported_onnx / "text.onnx")).graph
    projection = [n.name for n in fp32
                  if n.op_type == "MatMul" and not module_scope(n.metadata_props).startswith("model")]
    assert len(projection) == 1 and {n.name: n.op_type for n in model.graph.node}[projection[0]] == "MatMul"
    assert json.loads({p.key: p.value for p in model.metadata_props}[TEXT_METADATA_KEY])["precision"] == "int8"
    assert 0.99 < text_drift(exported_onnx / "text.onnx", exported_onnx / "text_int8.onnx") <= 1.0


def test_unsupported_tokenizer_is_refused(tiny_backbone, monkeypatch):
    monkeypatch.setattr(tiny_backbone, "tokenizer", object())
    with pytest.raises(TextExportError, match="--formats onnx"):
        tokenizer_spec(tiny_backbone)

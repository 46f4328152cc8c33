"""The text tower for class enrolment on the device: token ids -> each prompt's text embedding n(e W).

The runtime tokenizes prompts itself (open_clip's SimpleTokenizer, reproduced without torch)
with the vocabulary file copied beside the export, runs this graph, and averages and normalises
its rows into the class's text classifier T_c (runtime/semobridge_runtime/head.py: prototype).
"""
from __future__ import annotations

import copy
from pathlib import Path

import torch
from semobridge_runtime.contract import TEXT_EMBEDDING
from torch import nn
from torch.export import Dim, ExportedProgram

from semobridge.backbones import Backbone, without_text_projection
from semobridge.prototypes import prompt_embeddings

VOCABULARY = "bpe_simple_vocab_16e6.txt.gz"  # open_clip's (and OpenAI CLIP's) BPE merges
VOCABULARY_LICENSE = Path(__file__).parent / "licenses" / "clip-bpe-vocabulary.txt"
PROMPT_MAX = 1 << 16
TEXT_OUTPUTS = (TEXT_EMBEDDING,)  # not "embedding": the name of a value inside open_clip's tower
TOWER_SCOPE = "model"  # the TextTower attribute holding open_clip's text side (the projection is outside it)
#: open_clip's text cleaning functions -> the names the runtime's tokenizer knows
CLEAN_KINDS = {"_clean_lower": "lower", "_clean_whitespace": "whitespace", "_clean_canonicalize": "canonicalize"}
VOCAB_SIZE = 49408


class TextExportError(ValueError):
    """The backbone's text side cannot be exported for enrolment on the device."""


def tokenizer_spec(backbone: Backbone) -> dict:
    """How the runtime reproduces the backbone's tokenizer: open_clip's SimpleTokenizer with the
    default vocabulary and start/end tokens only; anything else is refused."""
    from open_clip.tokenizer import SimpleTokenizer

    tok = backbone.tokenizer
    clean = CLEAN_KINDS.get(getattr(getattr(tok, "clean_fn", None), "__name__", ""))
    if type(tok) is not SimpleTokenizer or tok.reduction_fn is not None or clean is None or tok.vocab_size != VOCAB_SIZE:
        raise TextExportError(
            f"{backbone.name} uses a tokenizer ({type(tok).__name__}) the runtime does not reproduce (it knows "
            "open_clip's SimpleTokenizer, as CLIP's ViT and ResNet models use); export without class enrolment: "
            "--formats onnx"
        )
    return {
        "kind": "clip-bpe",
        "vocabulary": VOCABULARY,
        "context_length": int(tok.context_length),
        "clean": clean,
        "start_token": int(tok.sot_token_id),
        "end_token": int(tok.eot_token_id),
    }


def vocabulary_file() -> Path:
    """open_clip's copy of CLIP's BPE vocabulary."""
    from open_clip.tokenizer import default_bpe

    return Path(default_bpe())


class TextTower(nn.Module):
    """Token ids int64 [M, context] -> text embeddings n(e W) [M, d] (semobridge.prototypes.prompt_embeddings of
    the pooled EOS token e after ln_final).

    open_clip's own encode_text (its pooling rule included) with the projection left out, then the
    library's projection and normalisation; a CPU float32 copy of the text side only (the image tower
    is not copied).
    """

    def __init__(self, backbone: Backbone):
        super().__init__()
        model = backbone.model
        text_side = copy.deepcopy(model, memo={id(model.visual): None}).float().cpu().eval().requires_grad_(False)
        self.model = without_text_projection(text_side)
        self.register_buffer("text_projection", backbone.text_projection.detach().float().cpu().clone())
        self.tokenizer = backbone.tokenizer
        self.context_length = int(backbone.tokenizer.context_length)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return prompt_embeddings(self.model.encode_text(tokens).float(), self.text_projection)

    def trace(self) -> ExportedProgram:
        """torch.export program with a dynamic prompt count M."""
        example = self.tokenizer(["a photo of a dog.", "a bad photo of the large red fox.", "itap of a cab."])
        with torch.no_grad():
            return torch.export.export(
                self, (example,), dynamic_shapes={"tokens": {0: Dim("M", min=1, max=PROMPT_MAX)}}, strict=False
            )

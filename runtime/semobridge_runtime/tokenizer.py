"""CLIP's byte-level BPE tokenizer, as open_clip's SimpleTokenizer, without torch.

Text cleaning is open_clip's: ftfy.fix_text, HTML unescaped twice, whitespace collapsed, then
lower-cased ("lower", CLIP's default), kept ("whitespace") or stripped of punctuation
("canonicalize"). The words are split with open_clip's pattern, each word's UTF-8 bytes are
mapped to printable characters and merged by the BPE merge ranks of the vocabulary file;
prompts are wrapped in start/end tokens, zero-padded to the context length, and text that is
too long is cut with the end token kept last. Exactness needs `ftfy` (its text fixes cannot be
reproduced otherwise) and `regex` (Unicode letter and number classes as open_clip's pattern
uses them); both are dependencies of semobridge-runtime, imported on first use.
"""

from __future__ import annotations

import gzip
import html
import string
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from . import files
from .errors import InputError, ModelError

MERGES = 49152 - 256 - 2  # merge rules used: the vocabulary has 49,408 entries with the 256 bytes twice and 2 specials
SPECIAL = ("<start_of_text>", "<end_of_text>")
CLEAN_KINDS = ("lower", "whitespace", "canonicalize")


def _text_packages() -> tuple[Any, Any]:
    try:
        import ftfy
        import regex
    except ImportError as exc:
        raise InputError(
            f"enrolling classes needs the text packages ftfy and regex ({exc.name} is missing)",
            hint="reinstall semobridge-runtime (pip install semobridge-runtime), which depends on both",
        ) from None
    return ftfy, regex


def byte_characters() -> list[str]:
    """The printable character standing for each byte 0..255: printable Latin-1 bytes stand for
    themselves, the others for 256, 257, ... in byte order (CLIP's reversible byte encoding)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    others = iter(range(256, 512))
    return [chr(b) if b in printable else chr(next(others)) for b in range(256)]


class Tokenizer:
    """Prompts -> token ids int64 [M, context_length], as open_clip's SimpleTokenizer."""

    def __init__(self, vocabulary: str | Path, context_length: int = 77, clean: str = "lower"):
        ftfy, regex = _text_packages()
        if clean not in CLEAN_KINDS:
            raise ModelError(f"unknown text cleaning {clean!r} in the text model's metadata; upgrade semobridge-runtime")
        try:
            with files.open_regular(vocabulary, "the tokenizer vocabulary", files.TEXT_BYTES, ModelError) as f:
                lines = gzip.GzipFile(fileobj=f).read(files.TEXT_BYTES).decode("utf-8").split("\n")
        except (OSError, EOFError, UnicodeDecodeError) as exc:
            raise ModelError(f"cannot read the tokenizer vocabulary {vocabulary}: {exc}; re-export the model") from exc
        merges = [tuple(line.split()) for line in lines[1 : MERGES + 1]]
        if len(merges) != MERGES or any(len(m) != 2 for m in merges):
            raise ModelError(f"{vocabulary} is not CLIP's BPE vocabulary (expected {MERGES} merge rules); re-export the model")
        chars = byte_characters()
        base = sorted(chars)  # ids: printable bytes first, then the others (code point order)
        vocab = base + [c + "</w>" for c in base] + ["".join(m) for m in merges] + list(SPECIAL)
        self._ids = {token: i for i, token in enumerate(vocab)}
        self._ranks = {pair: i for i, pair in enumerate(merges)}
        self._bytes = chars
        self._fix_text = ftfy.fix_text
        self._pattern = regex.compile(
            "|".join(SPECIAL) + r"""|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""", regex.IGNORECASE
        )
        self._words: dict[str, list[int]] = {s: [self._ids[s]] for s in SPECIAL}
        self.context_length = int(context_length)
        self.clean = clean
        self.start, self.end = self._ids[SPECIAL[0]], self._ids[SPECIAL[1]]

    def clean_text(self, text: str) -> str:
        """open_clip's cleaning: ftfy, HTML entities (twice), whitespace; then lower-case or canonicalise."""
        text = html.unescape(html.unescape(self._fix_text(text))).strip()
        if self.clean == "canonicalize":
            text = text.replace("_", " ").translate(str.maketrans("", "", string.punctuation)).lower()
        text = " ".join(text.split())
        return text.lower() if self.clean == "lower" else text

    def _merge(self, word: str) -> list[int]:
        """BPE: repeatedly merge every occurrence (left to right) of the best-ranked adjacent pair."""
        if word in self._words:
            return self._words[word]
        parts = [*word[:-1], word[-1] + "</w>"]
        while len(parts) > 1:
            pairs = {(a, b) for a, b in zip(parts, parts[1:])}
            best = min(pairs, key=lambda pair: self._ranks.get(pair, MERGES))
            if best not in self._ranks:
                break
            merged, i = [], 0
            while i < len(parts):
                if i + 1 < len(parts) and (parts[i], parts[i + 1]) == best:
                    merged.append(parts[i] + parts[i + 1])
                    i += 2
                else:
                    merged.append(parts[i])
                    i += 1
            parts = merged
        ids = [self._ids[p] for p in parts]
        self._words[word] = ids
        return ids

    def encode(self, text: str) -> list[int]:
        """Token ids of one text, without start and end tokens."""
        ids: list[int] = []
        for word in self._pattern.findall(self.clean_text(text)):
            ids += self._merge("".join(self._bytes[b] for b in word.encode("utf-8")))
        return ids

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        """Token ids int64 [len(texts), context_length]: start, text, end, zeros; cut to fit with the end token last."""
        out = np.zeros((len(texts), self.context_length), np.int64)
        for row, text in zip(out, texts):
            ids = [self.start, *self.encode(text), self.end][: self.context_length]
            ids[-1] = self.end
            row[: len(ids)] = ids
        return out

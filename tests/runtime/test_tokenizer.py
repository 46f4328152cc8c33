"""The runtime's tokenizer against open_clip's SimpleTokenizer, token for token, on 1,022 strings."""

from __future__ import annotations

import string
from pathlib import Path

import numpy as np
import pytest

from semobridge_runtime.tokenizer import Tokenizer

open_clip = pytest.importorskip("open_clip")

NAMES = ["red fox", "café", "jalapeño", "crème brûlée", "naïve art", "Müller-Thurgau", "東京タワー", "Ελληνικό σαλάτα",
         "русский чай", "قهوة عربية", "हिन्दी किताब", "김치찌개", "señor's hat", "rock'n'roll", "T-shirt/top",
         "ankle_boot", "Boeing 747-400", "42", "U.S. Route 66", "O'Brien", "it's", "we're", "They'LL", "Ñandú"]
TEMPLATES = ["a photo of a {}.", "itap of a {}.", "a bad photo of the {}.", "a origami {}.", "a photo of the large {}.",
             "a {} in a video game.", "art of the {}.", "a photo of the small {}.", "a photo of a {}, a type of pet.",
             "{}", "  {}\t\n", "A PHOTO OF A {}!!!"]
POOLS = [
    string.ascii_letters + string.digits + string.punctuation + "     ",
    "àáâãäåæçèéêëìíîïðñòóôõöøùúûüýþÿ ÀÉÎÕÜ ßœŒĳŁł",
    "αβγδεζηθικλμνξοπρστυφχψω ΑΒΓΔ абвгдеёжзийклмнопрстуфхцчшщъыьэюя АБВ",
    "的一是不了人我在有他这为之大来以个中上们到说国和地也子时道出而要于就下得可你年生自会",
    "한국어텍스트토큰화 ひらがなカタカナ ｱｲｳ",
    "مرحبابالعالم हिन्दीदेवनागरी ไทย",
    "\u0301\u0300\u0308\u0327 e\u0301 a\u0308",  # combining marks
    "😀😃🐶🐱🦊🍕🎉❤️👍🏽👨‍👩‍👧🇫🇷🇯🇵 ✨🔥",
    "“”‘’«»–—…•·€£¥©®™°±×÷ ﬁﬂ ＡＢＣ１２３！？　",  # curly quotes, dashes, ligatures, full-width
    "\t\n\r\x0b\x0c\u00a0\u2028\u200b\u200d\x00\x07\x1b",  # white space, zero-width and control characters
]
SNIPPETS = ["&amp;", "&lt;b&gt;", "&#39;", "&quot;", "&nbsp;", "&amp;amp;", "cafÃ©", "â€™", "Ã©tÃ©", "<start_of_text>",
            "<end_of_text>", "<START_OF_TEXT>", "'s", "'t", "'re", "'ve", "'m", "'ll", "'d", "’s", "don't", "1,000,000",
            "3.14159", "x²", "½", "Ⅻ", "٣", "https://example.com/a?b=c&d=e", "e-mail@example.org", "#hashtag", "@user"]


def corpus(seed: int = 0) -> list[str]:
    """Prompts, unicode, punctuation, emoji, HTML entities, mojibake and over-long texts."""
    rng = np.random.default_rng(seed)
    texts = [t.format(n) for t in TEMPLATES for n in NAMES]
    for _ in range(600):
        pool = POOLS[rng.integers(len(POOLS))] + (POOLS[0] if rng.random() < 0.5 else "")
        words = ["".join(rng.choice(list(pool), rng.integers(1, 12))) for _ in range(rng.integers(1, 8))]
        if rng.random() < 0.5:
            words.insert(rng.integers(len(words) + 1), SNIPPETS[rng.integers(len(SNIPPETS))])
        texts.append(" ".join(words))
    for _ in range(120):  # over-long: cut to 77 tokens with the end token kept
        texts.append(" ".join(rng.choice(NAMES + SNIPPETS + ["the", "a", "of", "photo"], rng.integers(40, 300))))
    texts += ["", " ", "\n\t", "a", "A", ".", "...", "'", "''", "<", "&", "\u200b", "😀" * 100, "x" * 500]
    return texts


@pytest.fixture(scope="module")
def vocabulary(exported_onnx: Path) -> Path:
    return exported_onnx / "bpe_simple_vocab_16e6.txt.gz"


def test_identical_to_open_clip_on_1000_strings(vocabulary: Path) -> None:
    texts = corpus()
    assert len(texts) >= 1000
    reference = open_clip.get_tokenizer("semobridge-tiny")(texts).numpy()
    ours = Tokenizer(vocabulary)(texts)
    assert ours.dtype == np.int64 and ours.shape == (len(texts), 77)
    mismatched = [t for t, a, b in zip(texts, ours, reference) if not np.array_equal(a, b)]
    assert not mismatched, f"{len(mismatched)} strings differ, e.g. {mismatched[:3]!r}"
    assert (reference[:, -1] == 49407).sum() >= 120  # the over-long ones were cut, keeping the end token


@pytest.mark.parametrize("clean", ["whitespace", "canonicalize"])
def test_other_cleaning_kinds(vocabulary: Path, clean: str) -> None:
    from open_clip.tokenizer import SimpleTokenizer

    texts = corpus(seed=1)[::3]
    reference = SimpleTokenizer(clean=clean)(texts).numpy()
    np.testing.assert_array_equal(Tokenizer(vocabulary, clean=clean)(texts), reference)


def test_shorter_context(vocabulary: Path) -> None:
    from open_clip.tokenizer import SimpleTokenizer

    texts = corpus(seed=2)[::7]
    np.testing.assert_array_equal(Tokenizer(vocabulary, context_length=16)(texts), SimpleTokenizer(context_length=16)(texts).numpy())


def test_a_vocabulary_that_is_not_clips_is_refused(tmp_path: Path) -> None:
    import gzip

    from semobridge_runtime import ModelError

    bad = tmp_path / "vocab.txt.gz"
    bad.write_bytes(gzip.compress(b"#version\na b\n"))
    with pytest.raises(ModelError, match="not CLIP's BPE vocabulary"):
        Tokenizer(bad)
    with pytest.raises(ModelError, match="cannot read the tokenizer vocabulary"):
        Tokenizer(tmp_path / "missing.txt.gz")

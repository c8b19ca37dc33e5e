"""The runtime CLIP tokenizer against open_clip's SimpleTokenizer (the reference), id for id."""

from __future__ import annotations

import gzip

import numpy as np
import pytest

from relidar.core.text.tokenizer import ClipTokenizer, TokenizerError, split_words
from relidar.core.vocabulary import DEFAULT_TEMPLATES, NUSCENES_CLASSES, SEMANTIC_KITTI_CLASSES, class_prompts

open_clip_tokenizer = pytest.importorskip("open_clip.tokenizer")

ODD_PROMPTS = [
    "A  PHOTO of the Traffic-Cone!!", "person's bike isn't here; they'LL come", "x² ⅻ 3.14 ça va? naïve café",
    "&amp;lt;b&amp;gt; html entities", "日本語のテキスト", "emoji 🚗🚲 ok", "<start_of_text>hello<end_of_text>",
    "don'T 'll ''s '' 'd", "   ", "", "tab\tnew\nline", "ﬁ ligature", "Ǆ title case", "١٢٣ arabic digits",
    "semi-trailer / cargo-trailer", "mojibake: Ã©tÃ©", "under_score and dash-word", "1234567890",
    "a" * 300, "word " * 100,
]


@pytest.fixture(scope="module")
def tokenizers():
    bpe = open_clip_tokenizer.default_bpe()
    return ClipTokenizer(bpe), open_clip_tokenizer.SimpleTokenizer(bpe)


def test_ids_equal_open_clip(tokenizers) -> None:
    ours, ref = tokenizers
    prompts = ODD_PROMPTS[:]
    for spec in NUSCENES_CLASSES + SEMANTIC_KITTI_CLASSES:
        prompts += class_prompts(spec.synonyms, DEFAULT_TEMPLATES[:4])
    got = ours(prompts)
    want = ref(prompts).numpy()
    assert got.shape == want.shape == (len(prompts), 77)
    assert got.dtype == np.int64
    bad = [p for p, g, w in zip(prompts, got, want) if not np.array_equal(g, w)]
    assert not bad, f"token ids differ from open_clip for {bad[:5]}"


def test_framing_and_truncation(tokenizers) -> None:
    ours, _ = tokenizers
    ids = ours(["a photo of a car.", "word " * 100])
    assert ids[0, 0] == ours.sot_id == 49406
    end = int(np.flatnonzero(ids[0] == ours.eot_id)[0])
    assert np.all(ids[0, end + 1:] == 0)
    assert ids[1, -1] == ours.eot_id and np.count_nonzero(ids[1]) == 77  # truncated, last forced to EOT
    assert ours.vocab_size == 49408


def test_word_splitter_rules() -> None:
    assert split_words("it's a car's 12 wheels!!") == ["it", "'s", "a", "car", "'s", "1", "2", "wheels", "!!"]


def test_bad_vocabulary_file(tmp_path) -> None:
    with pytest.raises(TokenizerError) as err:
        ClipTokenizer(tmp_path / "missing.txt.gz")
    assert err.value.path == tmp_path / "missing.txt.gz"
    short = tmp_path / "short.txt.gz"
    short.write_bytes(gzip.compress(b"#version\na b\n"))
    with pytest.raises(TokenizerError) as err:
        ClipTokenizer(short)
    assert err.value.path == short and "merge lines" in err.value.message

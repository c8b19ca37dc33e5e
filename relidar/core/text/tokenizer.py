"""CLIP's byte-level BPE tokenizer, written for the runtime: pure Python + numpy, no PyTorch.

Behaves as open_clip's ``SimpleTokenizer`` with its default ``clean="lower"``: text is repaired with
ftfy (when installed), HTML entities are unescaped twice, whitespace runs collapse to one space,
everything is lower-cased; the text is split into words (letter runs, single digits, runs of other
non-space characters, English contractions), each word's UTF-8 bytes are mapped to printable
characters, merged by the ranked BPE merges from ``bpe_simple_vocab_16e6.txt.gz`` (the file a
bundle ships), and ids are framed by ``<start_of_text>`` / ``<end_of_text>``, truncated (last id
forced to ``<end_of_text>``) or zero-padded to the context length (77).

The word splitter is a hand-written scanner over Unicode categories rather than a regular
expression, because Python's ``re`` has no ``\\p{L}`` / ``\\p{N}`` classes.
"""

from __future__ import annotations

import gzip
import html
import unicodedata
from functools import lru_cache
from pathlib import Path
from typing import Sequence

import numpy as np

from relidar.core.errors import RelidarError

SOT = "<start_of_text>"
EOT = "<end_of_text>"
DEFAULT_CONTEXT_LENGTH = 77
NUM_MERGES = 49152 - 256 - 2  # the merges CLIP's vocabulary of 49408 ids uses
CONTRACTIONS = ("'s", "'t", "'re", "'ve", "'m", "'ll", "'d")
BPE_FILE_NAME = "bpe_simple_vocab_16e6.txt.gz"


class TokenizerError(RelidarError, ValueError):
    """A BPE vocabulary file that cannot be read; the message names the file."""


@lru_cache(maxsize=1)
def byte_to_char() -> dict[int, str]:
    """Each of the 256 byte values -> a printable character: printable Latin-1 bytes map to themselves,
    the others (controls, space, soft hyphen...) to code points from 256 up. The dict's order (the
    printable bytes first, then the others) is the order of the first 256 vocabulary ids."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    table = {b: chr(b) for b in keep}
    extra = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def _category(ch: str) -> str:
    return unicodedata.category(ch)[0]


def split_words(text: str) -> list[str]:
    """The pre-tokenizer: at each position the first matching rule wins, in this order -- a special
    token, a contraction, a run of letters, one number character, a run of characters that are
    neither space, letter nor number; spaces are skipped."""
    out: list[str] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if text.startswith(SOT, i) or text.startswith(EOT, i):
            tok = SOT if text.startswith(SOT, i) else EOT
            out.append(tok)
            i += len(tok)
            continue
        if ch == "'":
            hit = next((c for c in CONTRACTIONS if text.startswith(c, i)), None)
            if hit is not None:
                out.append(hit)
                i += len(hit)
                continue
        cat = _category(ch)
        if ch.isspace():
            i += 1
        elif cat == "L":
            j = i + 1
            while j < n and _category(text[j]) == "L":
                j += 1
            out.append(text[i:j])
            i = j
        elif cat == "N":
            out.append(ch)
            i += 1
        else:
            j = i + 1
            while j < n and not text[j].isspace() and _category(text[j]) not in ("L", "N"):
                j += 1
            out.append(text[i:j])
            i = j
    return out


def clean_text(text: str) -> str:
    """ftfy repair (if installed), double HTML unescape, whitespace collapse, lower case."""
    try:
        import ftfy
    except ImportError:  # ftfy only repairs mojibake; without it text is NFC-normalised like ftfy does
        text = unicodedata.normalize("NFC", text)
    else:
        text = ftfy.fix_text(text)
    text = html.unescape(html.unescape(text)).strip()
    return " ".join(text.split()).strip().lower()


class ClipTokenizer:
    """Prompts -> [P, context_length] int64 token ids, identical to open_clip's tokenizer."""

    def __init__(self, bpe_path: str | Path, context_length: int = DEFAULT_CONTEXT_LENGTH) -> None:
        path = Path(bpe_path)
        try:
            lines = gzip.decompress(path.read_bytes()).decode("utf-8").split("\n")
        except FileNotFoundError as exc:
            raise TokenizerError("BPE vocabulary file not found", path=path) from exc
        except (OSError, EOFError, UnicodeDecodeError) as exc:
            raise TokenizerError(f"not a gzipped UTF-8 BPE merges file ({exc})", path=path) from exc
        merges = [tuple(line.split()) for line in lines[1 : NUM_MERGES + 1]]
        if len(merges) != NUM_MERGES or any(len(m) != 2 for m in merges):
            raise TokenizerError(f"expected {NUM_MERGES} merge lines of two symbols after the header", path=path)
        chars = list(byte_to_char().values())
        vocab = chars + [c + "</w>" for c in chars] + ["".join(m) for m in merges] + [SOT, EOT]
        self.encoder = {tok: i for i, tok in enumerate(vocab)}
        self.ranks = {m: r for r, m in enumerate(merges)}
        self.sot_id = self.encoder[SOT]
        self.eot_id = self.encoder[EOT]
        self.context_length = int(context_length)
        self._cache: dict[str, list[str]] = {SOT: [SOT], EOT: [EOT]}

    @property
    def vocab_size(self) -> int:
        return len(self.encoder)

    def _bpe(self, word: str) -> list[str]:
        cached = self._cache.get(word)
        if cached is not None:
            return cached
        parts = list(word[:-1]) + [word[-1] + "</w>"]
        while len(parts) > 1:
            ranked = [(self.ranks.get((a, b)), k) for k, (a, b) in enumerate(zip(parts, parts[1:]))]
            ranked = [(r, k) for r, k in ranked if r is not None]
            if not ranked:
                break
            first, second = self._merge_of(min(ranked)[0], parts)
            merged: list[str] = []
            k = 0
            while k < len(parts):
                if k < len(parts) - 1 and parts[k] == first and parts[k + 1] == second:
                    merged.append(first + second)
                    k += 2
                else:
                    merged.append(parts[k])
                    k += 1
            parts = merged
        self._cache[word] = parts
        return parts

    def _merge_of(self, rank: int, parts: list[str]) -> tuple[str, str]:
        for a, b in zip(parts, parts[1:]):
            if self.ranks.get((a, b)) == rank:
                return a, b
        raise AssertionError("rank chosen from the current pairs")  # unreachable by construction

    def encode(self, text: str) -> list[int]:
        """Token ids of one text, without the start/end tokens."""
        table = byte_to_char()
        ids: list[int] = []
        for word in split_words(clean_text(text)):
            mapped = "".join(table[b] for b in word.encode("utf-8"))
            ids.extend(self.encoder[piece] for piece in self._bpe(mapped))
        return ids

    def __call__(self, texts: Sequence[str] | str) -> np.ndarray:
        """[P, context_length] int64 ids: <start_of_text> ids <end_of_text>, zero-padded or truncated."""
        if isinstance(texts, str):
            texts = [texts]
        out = np.zeros((len(texts), self.context_length), dtype=np.int64)
        for row, text in enumerate(texts):
            ids = [self.sot_id] + list(self.encode(text)) + [self.eot_id]
            if len(ids) > self.context_length:
                ids = ids[: self.context_length]
                ids[-1] = self.eot_id
            out[row, : len(ids)] = ids
        return out

"""Byte-level BPE ids of many texts through a word cache: the HF tokenizer's ids, found faster.

HF `tokenizers` spends most of its time per token around the BPE merges, not in them: the
pre-tokenizer's regex, the byte-to-character mapping, a token string and offsets per token, an
`Encoding` per text, a Python int per id. Instruction data repeats its words (templates, labels,
common words), so `WordCacheEncoder` splits each text into the GPT-2 pre-tokenizer's words with
Python's `re` (the same alternatives), looks each word up in a dict of word -> its ids as uint16
`bytes`, and joins them: `b"".join(map(cache.__getitem__, words))`. Words not seen yet go to the
HF tokenizer itself, all of a batch's in one pre-tokenized call.

The ids are the tokenizer's, not an approximation. GPT-2's pattern
``'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+``
matches depending only on each character's class (letter, number, whitespace, other) and on the
literal space, apostrophe and contraction letters. Our pattern spells the classes out as the
characters seen so far, each put in the class the tokenizer's own pre-tokenizer gives it (probed
once per distinct character: does "a" + c stay one piece, "0" + c, "!" + c, c + c), so Unicode
tables never have to agree. Texts holding a special token's text (``</s>``) or a character the
probes cannot place, and tokenizers that are not byte-level BPE over that pattern without a
normalizer, go to the HF tokenizer whole. Tested against it on the bundled data and edge cases.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable, Sequence

import numpy as np

# Words whose ids a process keeps (a few hundred bytes each); the cache is emptied when full.
MAX_WORDS = 500_000
CLASSES = ("L", "N", "S")  # letter, number, whitespace; anything else is "O"
_NON_ASCII = re.compile(r"[^\x00-\x7f]")


def probe_class(pre_tokenizer, char: str) -> str | None:
    """`char`'s class in the GPT-2 pattern, from how `pre_tokenizer` splits probe strings."""

    def pieces(text: str) -> int:
        return len(pre_tokenizer.pre_tokenize_str(text))

    try:
        if pieces("a" + char) == 1:  # " ?\p{L}+" goes on
            return "L"
        if pieces("0" + char) == 1:
            return "N"
        if pieces("!" + char) == 1:
            return "O"
        if pieces(char + char) == 1:  # none of the above: whitespace runs are one piece
            return "S"
    except Exception:  # e.g. a lone surrogate: leave such text to the tokenizer
        return None
    return None


def _char_class(chars: Iterable[str]) -> str:
    """A regex character-class body for `chars`: runs of code points as ranges."""
    points = sorted(map(ord, chars))
    parts = []
    for _, run in itertools.groupby(enumerate(points), lambda ip: ip[1] - ip[0]):
        run = [p for _, p in run]
        lo, hi = f"\\U{run[0]:08x}", f"\\U{run[-1]:08x}"
        parts.append(lo if len(run) == 1 else f"{lo}-{hi}")
    return "".join(parts)


def gpt2_pattern(members: dict[str, Iterable[str]]) -> re.Pattern:
    """GPT-2's pattern with each class spelled out as its member characters."""
    cls = {name: _char_class(chars) for name, chars in members.items()}
    letter, number, space = cls["L"], cls["N"], cls["S"]
    return re.compile(
        rf"'s|'t|'re|'ve|'m|'ll|'d| ?[{letter}]+| ?[{number}]+| ?[^{space}{letter}{number}]+"
        rf"|[{space}]+(?![^{space}])|[{space}]+"
    )


def _supported(tokenizer) -> bool:
    """Byte-level BPE over GPT-2's pattern, nothing before it: what the split here reproduces."""
    from tokenizers import pre_tokenizers
    from tokenizers.models import BPE

    pre = tokenizer.pre_tokenizer
    return (
        tokenizer.normalizer is None
        and isinstance(pre, pre_tokenizers.ByteLevel)
        and pre.use_regex
        and not pre.add_prefix_space
        and isinstance(tokenizer.model, BPE)
        and not tokenizer.model.dropout
        and tokenizer.get_vocab_size(with_added_tokens=True) <= 1 << 16
    )


class WordCacheEncoder:
    """Token ids of texts as uint16 `bytes`, equal to `tokenizer.encode(text).ids`."""

    def __init__(self, tokenizer, max_words: int = MAX_WORDS) -> None:
        self.tokenizer = tokenizer
        self.max_words = max_words
        self._cache: dict[str, bytes] = {}
        self._fast = _supported(tokenizer)
        self._class: dict[str, str | None] = {}  # char -> its class (None: text to HF)
        self._unplaced: set[str] = set()  # chars of class None
        self._members: dict[str, set[str]] = {name: set() for name in CLASSES}
        specials = [t.content for t in tokenizer.get_added_tokens_decoder().values()]
        self._specials = re.compile("|".join(map(re.escape, specials))) if specials else None
        # A cheap test first when they all start alike (OPT's all start with "<").
        leads = {t[0] for t in specials}
        self._special_lead = leads.pop() if len(leads) == 1 else ""
        if self._fast:
            self._add_chars(map(chr, range(128)))

    def encode(self, texts: Sequence[str]) -> list[bytes]:
        """Ids of each text as native-endian uint16 bytes (b"" for an empty text)."""
        out: list[bytes] = [b""] * len(texts)
        hf: list[int] = []  # texts the tokenizer encodes whole
        pending: list[tuple[int, list[str]]] = []  # words not all cached yet
        get, join = self._cache.__getitem__, b"".join
        if self._fast:  # place new characters first: one pattern per batch
            new = set(_NON_ASCII.findall("".join(t for t in texts if not t.isascii())))
            new.difference_update(self._class)
            if new:
                self._add_chars(new)
        for k, text in enumerate(texts):
            if not text:
                continue
            words = self._words(text) if self._fast else None
            if words is None:
                hf.append(k)
                continue
            try:
                out[k] = join(map(get, words))
            except KeyError:
                pending.append((k, words))
        if pending:
            self._learn([words for _, words in pending])
            get = self._cache.__getitem__
            for k, words in pending:
                out[k] = join(map(get, words))
        if hf:
            encode = getattr(self.tokenizer, "encode_batch_fast", self.tokenizer.encode_batch)
            for k, enc in zip(hf, encode([texts[k] for k in hf])):
                out[k] = np.asarray(enc.ids, dtype=np.uint16).tobytes()
        return out

    def _words(self, text: str) -> list[str] | None:
        """The pre-tokenizer's words of `text`, or None when the tokenizer must take it."""
        if (
            self._specials is not None
            and self._special_lead in text
            and self._specials.search(text)
        ):
            return None
        if self._unplaced and not self._unplaced.isdisjoint(text):
            return None
        return self._pattern.findall(text)

    def _add_chars(self, chars: Iterable[str]) -> None:
        pre = self.tokenizer.pre_tokenizer
        for char in chars:
            self._class[char] = cls = probe_class(pre, char)
            if cls in self._members:
                self._members[cls].add(char)
            elif cls is None:
                self._unplaced.add(char)
        self._pattern = gpt2_pattern(self._members)

    def _learn(self, texts: list[list[str]]) -> None:
        """Cache every word of `texts`: the new ones in one call (each is one pre-tokenizer word)."""
        cache = self._cache
        new = set().union(*texts).difference(cache)
        if len(cache) + len(new) > self.max_words:
            cache.clear()
            new = set().union(*texts)
        words = list(new)
        enc = self.tokenizer.encode(words, is_pretokenized=True, add_special_tokens=False)
        ids = np.asarray(enc.ids, dtype=np.uint16).tobytes()
        counts = np.bincount(np.asarray(enc.word_ids, dtype=np.int64), minlength=len(words))
        ends = (2 * np.cumsum(counts)).tolist()
        begin = 0
        for word, end in zip(words, ends, strict=True):
            cache[word] = ids[begin:end]
            begin = end

"""WordCacheEncoder gives exactly the HF tokenizer's ids (it only finds them faster)."""

from __future__ import annotations

import random

import numpy as np
import pytest
from tokenizers import normalizers, pre_tokenizers

from data_prep.mapping import load_task_map
from data_prep.readers import read_sources
from data_prep.render import render_sampled
from data_prep.tokenize import EOS_ID, encode_examples, truncate_left
from data_prep.word_cache import WordCacheEncoder, probe_class
from megatron_optiml.tokenizer import load_opt_tokenizer

EDGE_CASES = [
    "Hello world",
    "don't  stop\n\n\nAnswer:",
    "'s 'S 'll 'LL ''s x's '",
    "  leading",
    "trailing  ",
    "\t\t x\r\n\r\ny",
    "a</s>b <s> <pad><unk>",  # special tokens stay whole in the tokenizer
    "</ s> <s",  # no special token
    "Caf\u00e9 na\u00efve \u00b2 \u00bd \u2167 \u0661\u0662 \U0001f600 \u65e5\u672c\u8a9e",
    "a\u2028b\u00a0c\u3000d\u0085e\u200bf",
    "x\x1cy\x1f z\x00\x01\x7f",
    "1,000.50% -3e10 $5",
    "_under_score_ __init__",
    "   ",
    "\n",
]


def bundled_texts(bench_config) -> list[str]:
    tasks, _ = read_sources(bench_config.sources, load_task_map(bench_config.task_map))
    texts = []
    for task in tasks:
        for i, inst in enumerate(task.instances):
            ex = render_sampled(task, inst, random.Random(i))
            texts += [ex.prompt, ex.target]
    return texts


def ids(encoder: WordCacheEncoder, texts: list[str]) -> list[list[int]]:
    return [np.frombuffer(b, np.uint16).tolist() for b in encoder.encode(texts)]


@pytest.mark.parametrize("max_words", [500_000, 50])  # 50: the cache empties again and again
def test_same_ids_as_tokenizer(bench_config, max_words):
    tok = load_opt_tokenizer()
    texts = bundled_texts(bench_config) + EDGE_CASES
    enc = WordCacheEncoder(tok, max_words=max_words)
    expected = [e.ids for e in tok.encode_batch(texts)]
    for start in range(0, len(texts), 97):  # batches, so later ones meet a warm cache
        assert ids(enc, texts[start : start + 97]) == expected[start : start + 97]
    assert ids(enc, EDGE_CASES) == [tok.encode(t).ids for t in EDGE_CASES]
    assert enc.encode(["", "a", ""]) == [b"", enc.encode(["a"])[0], b""]


def test_character_classes_come_from_the_tokenizer():
    pre = load_opt_tokenizer().pre_tokenizer
    got = {c: probe_class(pre, c) for c in "aZ\u00e90\u00b2\u2167 \n\u3000!'_\U0001f600"}
    assert got == {
        **dict.fromkeys("aZ\u00e9", "L"),
        **dict.fromkeys("0\u00b2\u2167", "N"),
        **dict.fromkeys(" \n\u3000", "S"),
        **dict.fromkeys("!'_\U0001f600", "O"),
    }


def test_other_tokenizers_are_left_to_hf():
    tok = load_opt_tokenizer()
    tok.normalizer = normalizers.Lowercase()
    enc = WordCacheEncoder(tok)
    assert ids(enc, ["Hello World"]) == [tok.encode("Hello World").ids]
    assert not enc._cache  # nothing split here
    tok = load_opt_tokenizer()
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    assert ids(WordCacheEncoder(tok), ["Hello"]) == [tok.encode("Hello").ids]


def test_encode_examples_truncates_as_truncate_left():
    tok = load_opt_tokenizer()
    pairs = [("one two three four five", " six seven"), ("", " eight"), ("a b", " c d e f g h")]
    for max_len in (1, 3, 5, 8, 100):
        res = encode_examples(WordCacheEncoder(tok), pairs, max_len)
        flat, lengths, trunc, ttrunc = [], [], 0, 0
        for p, t in pairs:
            p_ids = tok.encode(p).ids if p else []
            p_ids, t_ids, level = truncate_left(p_ids, tok.encode(t).ids + [EOS_ID], max_len)
            flat += p_ids + t_ids
            lengths += [len(p_ids), len(t_ids)]
            trunc += level >= 1
            ttrunc += level == 2
        assert res.tokens.tolist() == flat and res.lengths.tolist() == lengths
        assert (res.truncated, res.target_truncated) == (trunc, ttrunc)
    # A plain `tokenizers.Tokenizer` is accepted too (evaluation's scoring test passes one).
    assert encode_examples(tok, pairs, 100).tokens.tolist() == res.tokens.tolist()

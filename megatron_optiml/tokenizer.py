"""OPT's own tokenizer (GPT-2 byte-level BPE with OPT's ids), loaded from files the repo ships.

`load_opt_tokenizer()` gives a fast `tokenizers.Tokenizer` (what data prep uses in its worker
processes); `load_hf_tokenizer()` gives the `transformers` tokenizer over the same files, for
evaluation and HF export. Neither adds a BOS: metaseq's fine-tuning encodes ``src + " " + tgt``
and appends ``</s>`` (id 2) only at the end.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

OPT_TOKENIZER_DIR = Path(__file__).resolve().parent / "assets" / "opt_tokenizer"
BOS_ID = 0
PAD_ID = 1
EOS_ID = 2
UNK_ID = 3
VOCAB_SIZE = 50265  # entries of vocab.json; checkpoints pad the embedding to 50272


def load_opt_tokenizer(
    directory: str | os.PathLike | None = None, *, cache_capacity: int | None = None
):
    """A `tokenizers.Tokenizer` with OPT's ids ("Hello world" -> [31414, 232], no BOS/EOS added).

    `cache_capacity`: words whose BPE merges are remembered (the library's default, 10,000,
    fills up early on large corpora; the ids never depend on it).
    """
    from tokenizers import AddedToken, Tokenizer, decoders, pre_tokenizers
    from tokenizers.models import BPE

    directory = Path(directory) if directory is not None else OPT_TOKENIZER_DIR
    extra = {} if cache_capacity is None else {"cache_capacity": cache_capacity}
    model = BPE.from_file(str(directory / "vocab.json"), str(directory / "merges.txt"), **extra)
    tok = Tokenizer(model)
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    # The special tokens are whole vocabulary entries; registering them keeps "</s>" in text
    # from being split into bytes and lets decode(skip_special_tokens=True) drop them.
    tok.add_special_tokens([AddedToken(t, special=True) for t in ("<s>", "<pad>", "</s>", "<unk>")])
    return tok


@functools.cache
def cached_opt_tokenizer():
    """One `load_opt_tokenizer()` per process (worker processes call this once)."""
    return load_opt_tokenizer()


def load_hf_tokenizer(directory: str | os.PathLike | None = None):
    """The `transformers` tokenizer over the same files (`AutoTokenizer.from_pretrained(dir)`).

    Built from a directory with `tokenizer_config.json`, not from `GPT2TokenizerFast(vocab_file=,
    merges_file=)`, which has been seen to give a wrong vocabulary in transformers 5.x.
    """
    from transformers import AutoTokenizer

    directory = Path(directory) if directory is not None else OPT_TOKENIZER_DIR
    return AutoTokenizer.from_pretrained(str(directory))

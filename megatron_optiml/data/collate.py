"""Packed samples -> the micro-batch dict that ``training.step.forward_step`` reads.

Two ways to keep attention inside each example:

- ``"local"``: a block-diagonal causal ``attention_mask`` (bool ``[b, 1, s, s]``, True = masked
  out), which Megatron-Core's local attention uses in place of its causal mask;
- ``"thd"``: ``PackedSeqParams(qkv_format="thd")`` with ``cu_seqlens`` for Transformer Engine's
  flash/cuDNN path. Megatron-Core's THD format has a dummy batch dimension of 1, so the ``b``
  sequences are laid end to end as one row ``[1, b * s]`` with their boundaries offset.

Position ids restart at each example in both, as metaseq's document attention did.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch
from megatron.core.packed_seq_params import PackedSeqParams

AttentionFormat = Literal["local", "thd"]

_FIXED_KEYS = ("tokens", "labels", "loss_mask", "position_ids")


def block_causal_mask(segment_ids: torch.Tensor) -> torch.Tensor:
    """Bool ``[b, 1, s, s]``: True where query ``i`` may NOT attend key ``j`` (``j > i`` or
    another segment)."""
    s = segment_ids.shape[-1]
    future = torch.ones(s, s, dtype=torch.bool).triu(1)
    other = segment_ids.unsqueeze(-1) != segment_ids.unsqueeze(-2)
    return (other | future).unsqueeze(1)


def collate_packed(
    samples: Sequence[dict[str, np.ndarray]], *, attention: AttentionFormat = "local"
) -> dict[str, object]:
    """Stack packed samples into ``{tokens, labels, loss_mask, position_ids}`` ``[b, s]`` plus
    ``attention_mask`` (local) or ``packed_seq_params`` (thd)."""
    if not samples:
        raise ValueError("empty batch")
    batch: dict[str, object] = {
        k: torch.from_numpy(np.stack([np.asarray(x[k]) for x in samples])) for k in _FIXED_KEYS
    }
    if attention == "local":
        segment_ids = torch.from_numpy(np.stack([np.asarray(x["segment_ids"]) for x in samples]))
        batch["attention_mask"] = block_causal_mask(segment_ids)
    elif attention == "thd":
        s = int(np.asarray(samples[0]["tokens"]).shape[0])
        for k in _FIXED_KEYS:
            batch[k] = batch[k].reshape(1, -1)  # type: ignore[union-attr]
        bounds = [np.asarray(samples[0]["cu_seqlens"], dtype=np.int64)]
        for i, x in enumerate(samples[1:], start=1):
            bounds.append(np.asarray(x["cu_seqlens"], dtype=np.int64)[1:] + i * s)
        cu = torch.from_numpy(np.concatenate(bounds).astype(np.int32))
        max_seqlen = int((cu[1:] - cu[:-1]).max())
        batch["attention_mask"] = None
        batch["packed_seq_params"] = PackedSeqParams(
            qkv_format="thd",
            cu_seqlens_q=cu,
            cu_seqlens_kv=cu,
            max_seqlen_q=max_seqlen,
            max_seqlen_kv=max_seqlen,
        )
    else:
        raise ValueError(f"attention must be 'local' or 'thd', got {attention!r}")
    return batch

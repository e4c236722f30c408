"""GPU check of the packed-sequence path the trainer uses with Transformer Engine (THD).

opt-debug with the same canonical weights in the TE spec and the local spec, BF16. Packed rows
(several examples each, positions restarting) go through TE's attention as one THD sequence
with ``cu_seqlens``; their logits must equal each example run alone (TE, no packing) and the
local spec's block-diagonal-mask logits, within BF16 noise, while a causal-only run of the same
packed tokens (no ``cu_seqlens``) must differ clearly. Prints one JSON object.

    python3 benchmarks/gpu_thd_check.py          (on a GPU with TE; see benchmarks/gpu_te/)
"""

from __future__ import annotations

import numpy as np
import torch
from gpu_check import (  # the other GPU checks' opt-debug
    _debug_model,
    init_single_rank,
    record,
    save_results,
)


def packed_samples(num_rows: int, seq: int, seed: int = 0) -> list[dict[str, np.ndarray]]:
    """Rows of ``seq`` tokens holding random-length examples end to end (the last one padded
    out), in the packed dataset's sample format."""
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(num_rows):
        lengths = []
        while sum(lengths) < seq:
            lengths.append(int(min(rng.integers(8, seq // 2), seq - sum(lengths))))
        tokens = rng.integers(3, 50000, seq)
        cu = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        positions = np.concatenate([np.arange(n) for n in lengths])
        segments = np.concatenate([np.full(n, i) for i, n in enumerate(lengths)])
        rows.append(
            {
                "tokens": tokens.astype(np.int64),
                "labels": np.roll(tokens, -1).astype(np.int64),
                "loss_mask": np.ones(seq, dtype=np.float32),
                "position_ids": positions.astype(np.int64),
                "segment_ids": segments.astype(np.int64),
                "cu_seqlens": cu,
            }
        )
    return rows


def main() -> None:
    from megatron_optiml.data.collate import collate_packed

    init_single_rank()
    samples = packed_samples(num_rows=3, seq=128)
    b, s = len(samples), 128
    te = _debug_model("transformer_engine", bf16=True).eval()
    local = _debug_model("local", bf16=True).eval()
    thd = collate_packed(samples, attention="thd")
    psp = thd["packed_seq_params"]
    for name in ("cu_seqlens_q", "cu_seqlens_kv"):
        setattr(psp, name, getattr(psp, name).cuda())
    blk = collate_packed(samples, attention="local")
    with torch.no_grad():
        out_thd = te(
            thd["tokens"].cuda(), thd["position_ids"].cuda(), None, packed_seq_params=psp
        ).float()
        out_thd = out_thd.reshape(b, s, -1)
        out_causal = te(blk["tokens"].cuda(), blk["position_ids"].cuda(), None).float()
        out_local = local(
            blk["tokens"].cuda(), blk["position_ids"].cuda(), blk["attention_mask"].cuda()
        ).float()
        alone_diff = causal_diff = 0.0
        examples = 0
        for row, x in enumerate(samples):
            cu = x["cu_seqlens"].tolist()
            for lo, hi in zip(cu[:-1], cu[1:], strict=True):
                ids = torch.from_numpy(x["tokens"][None, lo:hi]).cuda()
                alone = te(ids, torch.arange(hi - lo, device="cuda")[None], None).float()[0]
                alone_diff = max(alone_diff, float((out_thd[row, lo:hi] - alone).abs().max()))
                causal_diff = max(causal_diff, float((out_causal[row, lo:hi] - alone).abs().max()))
                examples += 1
    result = {
        "examples": examples,
        "logit_std": float(out_thd.std()),
        "thd_vs_alone_max_abs": alone_diff,
        "thd_vs_local_block_mask_max_abs": float((out_thd - out_local).abs().max()),
        "causal_only_vs_alone_max_abs": causal_diff,
    }
    record("te_thd_packed_logits", result)
    save_results("gpu_thd_check.json")


if __name__ == "__main__":
    main()

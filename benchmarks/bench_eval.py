"""Rank-classification speed: shared-prompt option scoring vs one forward per option.

A random OPT (4 layers, hidden 256, OPT's 50,272-token vocabulary) on CPU scores instances
with a ~200-token prompt and 4 options of 2-8 tokens, as BIG-bench / PromptSource multiple
choice looks after rendering. `score_options` runs the prompt and all its options as one row
(each option masked to see the prompt and itself); `score_options_naive` runs prompt + option
once per option.
A third peer does what lm-evaluation-harness's HF backend does per `loglikelihood` request
(`HFLM._loglikelihood_tokens`, batch 8): prompt + option as one row per option, rows sorted
longest first and right-padded, full logits and a `log_softmax` over every position; it is an
emulation of its compute (no lm-eval install needed), not lm-eval itself. Where lm-eval 0.4.13
is installed (`pip install lm-eval==0.4.13 accelerate`), its own `HFLM` is timed as well, on
the same model and token ids (`_loglikelihood_tokens`: no re-tokenization, no BOS).
All must agree; the median time per instance over several rounds is reported, with ours/peer
ratios from the same run. Other jobs share these CPU cores, so absolute times are indicative;
the ratio is what matters. `--hidden 768 --layers 12` is opt-125m's vocabulary/hidden ratio.

    .venv/bin/python benchmarks/bench_eval.py [--instances 24] [--batch 8] [--rounds 3]
        [--layers 4] [--hidden 256] [--threads N] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
from transformers import OPTConfig, OPTForCausalLM

from megatron_optiml.eval.scoring import (
    OptionScore,
    score_options,
    score_options_batch,
    score_options_naive,
)


def build_model(layers: int, hidden: int) -> OPTForCausalLM:
    torch.manual_seed(0)
    cfg = OPTConfig(
        vocab_size=50272,
        hidden_size=hidden,
        num_hidden_layers=layers,
        ffn_dim=4 * hidden,
        num_attention_heads=max(hidden // 64, 1),
        max_position_embeddings=2048,
        word_embed_proj_dim=hidden,
    )
    return OPTForCausalLM(cfg).eval()


def make_instances(n: int, prompt_len: int, num_options: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        plen = int(prompt_len * (0.8 + 0.4 * torch.rand((), generator=g)))
        prompt = torch.randint(4, 50000, (plen,), generator=g).tolist()
        options = [
            torch.randint(
                4, 50000, (int(torch.randint(2, 9, (), generator=g)),), generator=g
            ).tolist()
            for _ in range(num_options)
        ]
        out.append((prompt, options))
    return out


def time_per_instance(fn, model, instances) -> tuple[float, list]:
    t0 = time.perf_counter()
    scores = [fn(model, p, o) for p, o in instances]
    return (time.perf_counter() - t0) / len(instances), scores


def time_batched(model, instances, batch: int) -> tuple[float, list]:
    """As the runner does it: instances sorted by prompt length, `batch` per call."""
    order = sorted(range(len(instances)), key=lambda i: len(instances[i][0]))
    scores: list = [None] * len(instances)
    t0 = time.perf_counter()
    for s in range(0, len(order), batch):
        idx = order[s : s + batch]
        for i, sc in zip(idx, score_options_batch(model, [instances[i] for i in idx])):
            scores[i] = sc
    return (time.perf_counter() - t0) / len(instances), scores


@torch.inference_mode()
def lm_eval_style(model, instances, batch: int = 8) -> list:
    """lm-eval HF backend's compute: one padded row per (prompt, option), full-vocabulary
    log-softmax at every position, continuation log-probs gathered and summed."""
    reqs = [(i, j, p, o) for i, (p, opts) in enumerate(instances) for j, o in enumerate(opts)]
    reqs.sort(key=lambda r: -(len(r[2]) + len(r[3])))  # lm-eval's Collator: longest first
    scores: list[list] = [[None] * len(opts) for _, opts in instances]
    for s in range(0, len(reqs), batch):
        chunk = reqs[s : s + batch]
        rows = [(p + o)[:-1] for _, _, p, o in chunk]
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), 1, dtype=torch.long)  # OPT pad id
        for b, r in enumerate(rows):
            ids[b, : len(r)] = torch.tensor(r)
        logp = torch.log_softmax(model(input_ids=ids).logits, dim=-1)
        for b, (i, j, p, o) in enumerate(chunk):
            pos = torch.arange(len(p) - 1, len(p) - 1 + len(o))
            total = float(logp[b, pos, torch.tensor(o)].sum())
            scores[i][j] = OptionScore(total, len(o))
    return scores


def time_lm_eval_style(model, instances, batch: int) -> tuple[float, list]:
    t0 = time.perf_counter()
    scores = lm_eval_style(model, instances, batch)
    return (time.perf_counter() - t0) / len(instances), scores


def make_lm_eval(model, batch: int):
    """lm-evaluation-harness's own HF backend around the same model (None if not installed:
    `pip install lm-eval==0.4.13 accelerate`, the version measured in FACTS.md)."""
    try:
        from lm_eval.models.huggingface import HFLM
    except ImportError:
        return None
    from megatron_optiml.tokenizer import load_hf_tokenizer

    return HFLM(pretrained=model, tokenizer=load_hf_tokenizer(), batch_size=batch, device="cpu")


def time_lm_eval(lm, instances) -> tuple[float, list]:
    """lm-eval's `_loglikelihood_tokens` on the same token ids (its `loglikelihood` would
    re-tokenize text and add BOS; the ids here are the ones both sides score)."""
    reqs = [(("", ""), p, o) for p, opts in instances for o in opts]
    t0 = time.perf_counter()
    out = lm._loglikelihood_tokens(reqs, disable_tqdm=True)
    elapsed = (time.perf_counter() - t0) / len(instances)
    it = iter(out)
    scores = [[OptionScore(float(next(it)[0]), len(o)) for o in opts] for _, opts in instances]
    return elapsed, scores


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--prompt-len", type=int, default=200)
    ap.add_argument("--options", type=int, default=4)
    ap.add_argument("--instances", type=int, default=24)
    ap.add_argument("--batch", type=int, default=8, help="instances per batch (runner default)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--json", help="also write the numbers here")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    model = build_model(args.layers, args.hidden)
    instances = make_instances(args.instances, args.prompt_len, args.options)
    time_per_instance(score_options, model, instances[:2])  # warm-up
    time_per_instance(score_options_naive, model, instances[:2])
    time_batched(model, instances[: args.batch], args.batch)
    time_lm_eval_style(model, instances[:2], args.batch)
    lm = make_lm_eval(model, args.batch)
    if lm is not None:
        time_lm_eval(lm, instances[:2])
    shared, batched, naive, lmeval, real = [], [], [], [], []
    s_real = None
    for _ in range(args.rounds):
        t_shared, s_shared = time_per_instance(score_options, model, instances)
        t_batched, s_batched = time_batched(model, instances, args.batch)
        t_naive, s_naive = time_per_instance(score_options_naive, model, instances)
        t_lmeval, s_lmeval = time_lm_eval_style(model, instances, args.batch)
        lmeval.append(t_lmeval)
        if lm is not None:
            t_real, s_real = time_lm_eval(lm, instances)
            real.append(t_real)
        shared.append(t_shared)
        batched.append(t_batched)
        naive.append(t_naive)
    diff = max(
        abs(a.logprob - b.logprob)
        for s_fast in (s_shared, s_batched, s_lmeval, *([s_real] if s_real else []))
        for xs, ys in zip(s_fast, s_naive)
        for a, b in zip(xs, ys)
    )
    res = {
        "model": f"OPT {args.layers} layers, hidden {args.hidden}, vocab 50272",
        "prompt_tokens": args.prompt_len,
        "options": args.options,
        "instances": args.instances,
        "torch_threads": torch.get_num_threads(),
        "naive_ms_per_instance": 1e3 * statistics.median(naive),
        "shared_ms_per_instance": 1e3 * statistics.median(shared),
        "batched_ms_per_instance": 1e3 * statistics.median(batched),
        "batch": args.batch,
        "speedup_shared": statistics.median(naive) / statistics.median(shared),
        "speedup_batched": statistics.median(naive) / statistics.median(batched),
        "lm_eval_style_ms_per_instance": 1e3 * statistics.median(lmeval),
        "speedup_vs_lm_eval_style": statistics.median(lmeval) / statistics.median(batched),
        "max_abs_logprob_diff": diff,
    }
    if real:
        res["lm_eval_ms_per_instance"] = 1e3 * statistics.median(real)
        res["speedup_vs_lm_eval"] = statistics.median(real) / statistics.median(batched)
    print(
        f"{res['model']}, ~{args.prompt_len}-token prompts, {args.options} options, "
        f"{args.instances} instances x {args.rounds} rounds, {res['torch_threads']} threads\n"
        f"  one forward per option  : {res['naive_ms_per_instance']:8.1f} ms/instance\n"
        f"  shared prompt (1 row)   : {res['shared_ms_per_instance']:8.1f} ms/instance"
        f"   {res['speedup_shared']:5.2f}x\n"
        f"  + {args.batch:>2} instances per batch: {res['batched_ms_per_instance']:8.1f} ms/instance"
        f"   {res['speedup_batched']:5.2f}x   (max |logprob diff| {diff:.2e})\n"
        f"  lm-eval-style, batch {args.batch:>2} : {res['lm_eval_style_ms_per_instance']:8.1f} ms/instance"
        f"   ours (batched) is {res['speedup_vs_lm_eval_style']:5.2f}x faster"
    )
    if real:
        print(
            f"  lm-eval 0.4.13 (HFLM), batch {args.batch:>2}: "
            f"{res['lm_eval_ms_per_instance']:8.1f} ms/instance"
            f"   ours (batched) is {res['speedup_vs_lm_eval']:5.2f}x faster"
        )
    else:
        print("  lm-eval not installed: pip install lm-eval==0.4.13 accelerate for the real peer")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(res, f, indent=2)
    return res


if __name__ == "__main__":
    main()

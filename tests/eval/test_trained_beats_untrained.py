"""A model fine-tuned on the bundled bench's training instances scores above its untrained start
on held-out instances of the same (seen) tasks: the evaluation sees learning.

The lead's CPU demo trains with the Megatron trainer; this test trains the tiny HF model with
plain torch on the same rendered text (data_prep's renderer and tokenization) to stay fast,
with the LM head run on target positions only (~10 s on 2 CPU cores).
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch
from eval_fixtures import tiny_opt

from data_prep.config import load_config
from data_prep.mapping import load_task_map
from data_prep.readers import read_sources
from data_prep.render import render_example
from data_prep.splits import HELDOUT_INSTANCE, TRAIN, split_tasks
from megatron_optiml.eval.config import EvalConfig
from megatron_optiml.eval.runner import evaluate_model
from megatron_optiml.eval.tokens import EOS_ID, encode

CONFIG = Path(__file__).resolve().parents[2] / "examples" / "data_prep" / "bench_config.yaml"
# Seen tasks with short answers (labels), so a few dozen steps can show learning.
TASKS = ("ag_news", "amazon_polarity", "glue_mrpc", "paws_labeled_final")
SEQ = 96
STEPS = 300
LR = 5e-3


def training_batches(tasks, steps: int, batch: int, delimiter: str):
    examples = []
    for task in tasks:
        for inst in task.instances:
            ex = render_example(task, inst, delimiter=delimiter)
            prompt, target = encode(ex.prompt), encode(ex.target) + [EOS_ID]
            ids = (prompt + target)[-SEQ:]
            n_target = min(len(target), len(ids))
            examples.append((ids, n_target))
    rng = random.Random(0)
    for _ in range(steps):
        picks = rng.sample(examples, batch)
        width = max(len(ids) for ids, _ in picks)
        x = torch.full((batch, width), 1, dtype=torch.long)
        labels = torch.full((batch, width), -100, dtype=torch.long)
        mask = torch.zeros((batch, width), dtype=torch.long)
        for r, (ids, n_target) in enumerate(picks):
            x[r, : len(ids)] = torch.tensor(ids)
            mask[r, : len(ids)] = 1
            labels[r, len(ids) - n_target : len(ids)] = torch.tensor(ids[-n_target:])
        yield x, mask, labels


def target_loss(model, x, mask, labels):
    """Next-token loss on target positions only; the 50k-way LM head runs on those alone."""
    hidden = model.model(input_ids=x, attention_mask=mask).last_hidden_state[:, :-1]
    shifted = labels[:, 1:]
    keep = shifted != -100
    logits = model.lm_head(hidden[keep])
    return torch.nn.functional.cross_entropy(logits.float(), shifted[keep])


@pytest.mark.slow
def test_training_raises_heldout_instance_scores():
    cfg = load_config(CONFIG)
    tasks, train_only = read_sources(cfg.sources, load_task_map(cfg.task_map))
    splits = split_tasks(tasks, cfg.splits, train_only=train_only)
    train = [t for t in splits[TRAIN] if t.name in TASKS]
    heldout = [t for t in splits[HELDOUT_INSTANCE] if t.name in TASKS]
    assert len(train) == len(heldout) == len(TASKS)

    eval_cfg = EvalConfig(splits=[HELDOUT_INSTANCE], shots=[0], max_new_tokens=4, progress=False)
    model = tiny_opt(0, hidden_size=64, ffn_dim=128, word_embed_proj_dim=64)

    def score() -> float:
        model.eval()
        results, _ = evaluate_model(model, {HELDOUT_INSTANCE: heldout}, eval_cfg)
        assert len(results) == sum(len(t.instances) for t in heldout)
        return sum(r.score for r in results) / len(results)

    before = score()
    torch.manual_seed(0)
    opt = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=0.0)
    model.train()
    for x, mask, labels in training_batches(
        train, steps=STEPS, batch=8, delimiter=eval_cfg.delimiter
    ):
        loss = target_loss(model, x, mask, labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = score()
    # Random weights: chance on the rank-classified label templates (2-5 options), nothing on
    # the generated ones (paws' paraphrase template).
    instances = [i for t in heldout for i in t.instances]
    chance = sum(1 / len(i.options) if i.options else 0.0 for i in instances) / len(instances)
    assert abs(before - chance) < 0.2, (before, chance)
    # Measured: 0.458 -> 0.606 (chance 0.469). Before these templates were rank-classified
    # they were generated, from 0.0, and the margin was 0.15.
    assert after > before + 0.1, (before, after)

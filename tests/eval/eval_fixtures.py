"""Helpers of the evaluation tests: tiny random HF OPT models and hand-made eval tasks."""

from __future__ import annotations

import torch
from transformers import OPTConfig, OPTForCausalLM

from data_prep.schema import Instance, Task

# OPT's real vocabulary (padded as checkpoints pad it), so real tokenizer ids fit.
TINY = dict(
    vocab_size=50272,
    hidden_size=32,
    num_hidden_layers=2,
    ffn_dim=64,
    num_attention_heads=4,
    max_position_embeddings=256,
    word_embed_proj_dim=32,
)


def tiny_opt(seed: int = 0, **overrides) -> OPTForCausalLM:
    torch.manual_seed(seed)
    return OPTForCausalLM(OPTConfig(**{**TINY, **overrides})).eval()


def bench_tasks() -> dict[str, list[Task]]:
    """Two splits: a multiple-choice task and a generation task with template subtasks."""
    mc = Task(
        name="odd_word",
        benchmark="bigbench",
        category="analogical reasoning",
        instruction_level="task",
        definition="Pick the odd word out.",
        instances=[
            Instance(
                input=f"Words: red, blue, green, apple{i}",
                outputs=[f"apple{i}"],
                options=["red", "blue", "green", f"apple{i}"],
                id=str(i),
            )
            for i in range(4)
        ],
    )
    gen = Task(
        name="polarity",
        benchmark="promptsource",
        category="sentiment analysis",
        instruction_level="instance",
        instances=[
            Instance(
                input=f"Review {i}: the food was {'great' if i % 2 else 'awful'}. Is it positive?",
                outputs=["Positive" if i % 2 else "Negative"],
                id=f"{'tmplA' if i < 3 else 'tmplB'}:{i}",
            )
            for i in range(6)
        ],
    )
    copied = Task(
        name="copied",
        benchmark="niv2",
        category="summarization",
        instruction_level="task",
        definition="Summarize.",
        instances=[
            Instance(
                input="one two three four five six seven eight nine ten eleven twelve thirteen fourteen",
                outputs=["numbers"],
                id="0",
            )
        ],
    )
    return {"heldout_category": [mc], "heldout_instance": [gen, copied]}


def train_tasks() -> list[Task]:
    return [
        Task(
            name="polarity",
            benchmark="promptsource",
            category="sentiment analysis",
            instruction_level="instance",
            instances=[
                Instance(
                    input=f"Train review {i}: okay. Is it positive?",
                    outputs=["Positive"],
                    id=f"tmplA:{100 + i}",
                )
                for i in range(8)
            ],
        ),
        Task(
            name="other",
            benchmark="niv2",
            category="summarization",
            instruction_level="task",
            instances=[
                Instance(
                    input="zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen",
                    outputs=["x"],
                    id="0",
                )
            ],
        ),
    ]

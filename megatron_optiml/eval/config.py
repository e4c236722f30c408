"""Typed configuration of an evaluation run (what to score and how), validated in one place."""

from __future__ import annotations

from dataclasses import dataclass, field

from data_prep.render import DEFAULT_DELIMITER

LENGTH_NORMS: tuple[str, ...] = ("sum", "token", "char")
GENERATION_METRICS: tuple[str, ...] = ("rougeL", "exact_match")
DEMO_SOURCES: tuple[str, ...] = ("auto", "demonstrations", "train", "task")
DTYPES: tuple[str, ...] = ("auto", "float32", "bfloat16", "float16")


@dataclass(kw_only=True)
class EvalConfig:
    """How models are evaluated on the bench's evaluation splits (paper §4.1)."""

    splits: list[str] = field(
        default_factory=lambda: ["heldout_category", "heldout_task", "heldout_instance"]
    )
    """Evaluation splits to read (`<bench>/bench/<split>.jsonl`)."""
    shots: list[int] = field(default_factory=lambda: [0, 5])
    """Numbers of demonstrations; each gets its own scores, and their mean is reported too."""
    max_new_tokens: int = 256
    """Greedy generation stops at `</s>` or after this many new tokens (paper: 256)."""
    length_norm: str = "sum"
    """Rank-classification score: `sum` of target log-likelihood (metaseq), or divided by
    the option's `token` count or `char` length. All three accuracies are recorded."""
    score_eos: bool = False
    """Also score the `</s>` that closes each option (training targets end in it)."""
    prepend_bos: bool = False
    """Put OPT's BOS (`</s>`, id 2) before every prompt, as HF's OPT tokenizer and so
    lm-evaluation-harness do. Off by default: OPT-IML was fine-tuned without it (metaseq),
    and data_prep's training examples have none."""
    generation_metric: str = "rougeL"
    """Headline metric of generation tasks: `rougeL` (F1) or `exact_match`; both are recorded."""
    delimiter: str = DEFAULT_DELIMITER
    """The one fixed delimiter of evaluation prompts (training samples it among others)."""
    demo_source: str = "auto"
    """Where k-shot demonstrations come from: `demonstrations` (the task's own few-shot
    examples), `train` (the same task's training instances, needs `bench/train.jsonl`),
    `task` (the task's other evaluation instances), or `auto` (the first with k examples)."""
    seed: int = 1234
    """Seed of the demonstration draw (per split, task and instance: models see equal prompts)."""
    limit: int | None = None
    """Evaluate at most this many instances per task (the first ones; None = all)."""
    batch_size: int = 8
    """Instances per forward batch: generation prompts, or rank-classification instances
    (all options of each join the batch; memory ~ options x longest prompt)."""
    max_positions: int | None = None
    """Context length; prompts are cut from the left to fit (default: the model's)."""
    dtype: str = "auto"
    """Weights dtype: `auto` = float32 on CPU, the checkpoint's dtype on GPU."""
    device: str | None = None
    """torch device (default: cuda if available, else cpu)."""
    predictions: bool = False
    """Also write every instance's prompt, prediction and score (error analysis)."""
    contamination_ngram: int = 13
    """n of the train/eval n-gram overlap report (paper §2.3: 13)."""
    contamination_threshold: float = 0.01
    """Flag an eval task when more than this fraction of its instances overlap training."""
    progress: bool = True
    """Show a progress bar."""

    def validate(self) -> None:
        if not self.splits:
            raise ValueError("splits: at least one split is needed")
        if not self.shots or any(k < 0 for k in self.shots):
            raise ValueError(f"shots={self.shots!r}: need one or more numbers >= 0")
        if len(set(self.shots)) != len(self.shots):
            raise ValueError(f"shots={self.shots!r}: repeated value")
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens={self.max_new_tokens!r} must be >= 1")
        if self.length_norm not in LENGTH_NORMS:
            raise ValueError(f"length_norm={self.length_norm!r} is not one of {LENGTH_NORMS}")
        if self.generation_metric not in GENERATION_METRICS:
            raise ValueError(
                f"generation_metric={self.generation_metric!r} is not one of {GENERATION_METRICS}"
            )
        if self.demo_source not in DEMO_SOURCES:
            raise ValueError(f"demo_source={self.demo_source!r} is not one of {DEMO_SOURCES}")
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"limit={self.limit!r} must be >= 1 (or None for all)")
        if self.batch_size < 1:
            raise ValueError(f"batch_size={self.batch_size!r} must be >= 1")
        if self.max_positions is not None and self.max_positions <= self.max_new_tokens:
            raise ValueError(
                f"max_positions={self.max_positions!r} must exceed max_new_tokens={self.max_new_tokens}"
            )
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype={self.dtype!r} is not one of {DTYPES}")
        if self.contamination_ngram < 1:
            raise ValueError(f"contamination_ngram={self.contamination_ngram!r} must be >= 1")
        if not 0 <= self.contamination_threshold < 1:
            raise ValueError(
                f"contamination_threshold={self.contamination_threshold!r} must be in [0, 1)"
            )

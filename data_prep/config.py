"""Typed configuration of a bench build, loaded strictly from YAML by the run recipe's loader
(``megatron_optiml/config/yaml_loader.py``: unknown keys are errors, with "did you mean").

Relative paths in the YAML are resolved against the YAML file's folder.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from data_prep.render import DEMO_SEPARATOR, PAPER_DELIMITERS
from megatron_optiml.config.yaml_loader import build_typed, load_typed

SOURCE_TYPES = ("niv2", "bigbench", "promptsource", "jinja", "flan", "jsonl", "text")
DEFAULT_SEED = 1234
# Sources whose tasks merge several templates; `sources[].template_sampling` (paper §4.1).
TEMPLATE_SOURCES = ("promptsource", "jinja", "flan")
TEMPLATE_SAMPLING = ("paper", "all")
SPLITS_EVAL = ("heldout_category", "heldout_task", "heldout_instance")
# Paper §4.3 / §5 (Table 5 "4/2/20/25/45/2/2" in the order CrossFit/ExMix/FLAN/NIV2/PS/T5/USKG).
PAPER_BENCHMARK_SHARES = {
    "promptsource": 0.45,
    "niv2": 0.25,
    "flan": 0.20,
    "crossfit": 0.04,
    "exmix": 0.02,
    "t5": 0.02,
    "unifiedskg": 0.02,
}


@dataclass(kw_only=True)
class SourceConfig:
    """One input collection."""

    type: str
    """Reader: one of SOURCE_TYPES."""
    path: str
    """File or folder of the collection (relative to the config file)."""
    benchmark: str
    """Benchmark name the tasks belong to (lower case; keys of blend.benchmark_shares)."""
    templates: str | None = None
    """Template YAML for `jinja` / `flan` sources."""
    task: str | None = None
    """Task name for single-task sources (`jinja`, `flan`, `text`; optional for `jsonl`)."""
    task_field: str = "task"
    """`jsonl`: the record field holding the task name when `task` is not set."""
    category: str | None = None
    """Fallback category for tasks of this source the reader finds none for (the mapping
    file overrides per task)."""
    instruction: str = ""
    """`jsonl`: a hand-written instance-level instruction put before every input."""
    datasets: list[str] | None = None
    """`promptsource`: dataset names (default: the mapping file's tasks of this benchmark)."""
    train_only: bool = False
    """Never hold out these tasks or instances (pre-training text, reasoning data)."""
    skip_empty_outputs: bool = False
    """`niv2` / `promptsource` / `bigbench`: skip instances with an empty output (and BIG-bench
    examples whose `target_scores` mark no option correct) instead of stopping, with one warning
    per file giving the count (real T0 data has some, e.g. trec_fine_grained_open)."""
    template_sampling: str = "paper"
    """`promptsource` / `jinja` / `flan`: `paper` (§4.1): a training task keeps N of its prompted
    instances, drawn at random from all its templates merged, N = its largest per-template
    count, so a task does not grow with its number of templates (evaluation splits keep every
    template); `all` keeps every template application. Seeded by the config's `seed`."""

    def validate(self) -> None:
        if self.type not in SOURCE_TYPES:
            raise ValueError(f"sources[].type={self.type!r} is not one of {SOURCE_TYPES}")
        if self.type in ("jinja", "flan") and (self.templates is None or self.task is None):
            raise ValueError(f"sources[].type={self.type!r} needs 'templates' and 'task'")
        if self.type == "text" and self.task is None:
            raise ValueError("sources[].type='text' needs 'task'")
        if not self.benchmark or self.benchmark != self.benchmark.lower():
            raise ValueError(f"sources[].benchmark={self.benchmark!r} must be non-empty lower case")
        if self.template_sampling not in TEMPLATE_SAMPLING:
            raise ValueError(
                f"sources[].template_sampling={self.template_sampling!r} is not one of "
                f"{TEMPLATE_SAMPLING}"
            )


@dataclass(kw_only=True)
class SplitConfig:
    """The three generalization splits (paper §2.3) and the validation split."""

    seed: int = DEFAULT_SEED
    """Seed for every random choice of the split."""
    heldout_categories: list[str] = field(default_factory=list)
    """Fully held-out categories: all their tasks go to `heldout_category`."""
    heldout_tasks: list[str] = field(default_factory=list)
    """Tasks of seen categories held out to `heldout_task` (partially supervised)."""
    heldout_task_fraction: float = 0.0
    """Also hold out this fraction of each seen category's tasks (at least one task stays)."""
    heldout_instance_fraction: float = 0.1
    """Fraction of each training task's instances held out to `heldout_instance`."""
    validation_fraction: float = 0.05
    """Fraction of each training task's instances held out to `validation` (trainer's loss)."""
    max_eval_instances: int | None = None
    """Cap on instances per task in the evaluation splits (paper: 250 for validation eval)."""

    def validate(self) -> None:
        for name in ("heldout_task_fraction", "heldout_instance_fraction", "validation_fraction"):
            v = getattr(self, name)
            if not 0.0 <= v < 1.0:
                raise ValueError(f"splits.{name}={v!r} must be in [0, 1)")
        if self.heldout_instance_fraction + self.validation_fraction >= 1.0:
            raise ValueError(
                "splits.heldout_instance_fraction + splits.validation_fraction="
                f"{self.heldout_instance_fraction + self.validation_fraction!r} must be < 1"
            )
        if self.max_eval_instances is not None and self.max_eval_instances < 1:
            raise ValueError(f"splits.max_eval_instances={self.max_eval_instances!r} must be >= 1")


@dataclass(kw_only=True)
class LeakConfig:
    """Train/eval leakage checks (paper §2.3)."""

    policy: str = "error"
    """Exact input duplicates between train and an eval split: `error`, `report` or `drop`
    (drop removes them from train)."""
    ngram: int = 13
    """n of the task-pair n-gram overlap check (paper: 13)."""
    pair_threshold: float = 0.01
    """Report (train task, eval task) pairs whose overlap fraction is above this (paper: 1%)."""

    def validate(self) -> None:
        if self.policy not in ("error", "report", "drop"):
            raise ValueError(f"leak.policy={self.policy!r} is not one of error, report, drop")
        if self.ngram < 1:
            raise ValueError(f"leak.ngram={self.ngram!r} must be >= 1")
        if not 0.0 <= self.pair_threshold <= 1.0:
            raise ValueError(f"leak.pair_threshold={self.pair_threshold!r} must be in [0, 1]")


@dataclass(kw_only=True)
class RenderConfig:
    """Templating of training examples (paper §2.4)."""

    delimiters: list[str] = field(default_factory=lambda: list(PAPER_DELIMITERS))
    """Delimiters sampled per example when the prompt does not end in ':'."""
    shots: int = 0
    """Fixed number of demonstrations per example; 0 = zero-shot (the final OPT-IML recipe)."""
    zipf_a: float | None = None
    """If set, k ~ Zipf(zipf_a) truncated to 0..max_shots per example (MetaICL ablation, §4.8)."""
    max_shots: int = 5
    """Cap on k for Zipf sampling."""
    demo_separator: str = DEMO_SEPARATOR
    """Text between demonstrations (paper: three newlines)."""
    max_seq_length: int = 2048
    """Tokens (prompt + target + </s>); longer examples are truncated from the left."""

    def validate(self) -> None:
        if not self.delimiters:
            raise ValueError("render.delimiters must not be empty")
        if self.shots < 0:
            raise ValueError(f"render.shots={self.shots!r} must be >= 0")
        if self.zipf_a is not None and self.zipf_a <= 0:
            raise ValueError(f"render.zipf_a={self.zipf_a!r} must be > 0")
        if self.max_shots < 0:
            raise ValueError(f"render.max_shots={self.max_shots!r} must be >= 0")
        if self.max_seq_length < 2:
            raise ValueError(f"render.max_seq_length={self.max_seq_length!r} must be >= 2")


@dataclass(kw_only=True)
class BlendConfig:
    """Sampling weights (paper §4.2-4.3; metaseq PR #488 algorithm)."""

    eps_cap: int = 4096
    """Examples-proportional sampling maximum per task within its benchmark (EPS)."""
    benchmark_caps: dict[str, int] = field(default_factory=dict)
    """Per-benchmark EPS override (metaseq `--caps`)."""
    benchmark_shares: dict[str, float] = field(default_factory=lambda: dict(PAPER_BENCHMARK_SHARES))
    """Fixed share per benchmark; unlisted benchmarks share the rest by their capped size;
    final weights are renormalized over benchmarks present in the data."""

    def validate(self) -> None:
        if self.eps_cap < 1:
            raise ValueError(f"blend.eps_cap={self.eps_cap!r} must be >= 1")
        for k, v in self.benchmark_caps.items():
            if v < 1:
                raise ValueError(f"blend.benchmark_caps.{k}={v!r} must be >= 1")
        for k, v in self.benchmark_shares.items():
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"blend.benchmark_shares.{k}={v!r} must be in [0, 1]")


@dataclass(kw_only=True)
class TokenizeConfig:
    """Worker processes of the build (not only tokenization: see data_prep.pipeline)."""

    workers: int = 1
    """Worker processes for input hashing, text and n-gram checks, and tokenization (one pool,
    forked after reading); 1 = everything in the main process."""
    chunk_size: int = 256
    """Examples per work item sent to a worker (tokenization and the n-gram check)."""

    def validate(self) -> None:
        if self.workers < 1:
            raise ValueError(f"tokenize.workers={self.workers!r} must be >= 1")
        if self.chunk_size < 1:
            raise ValueError(f"tokenize.chunk_size={self.chunk_size!r} must be >= 1")


@dataclass(kw_only=True)
class BenchConfig:
    """A whole bench build: sources, mapping, splits, leak check, rendering, tokenization, blend."""

    sources: list[SourceConfig]
    """Input collections."""
    task_map: str | None = None
    """Task -> category/benchmark mapping YAML (see data_prep.mapping)."""
    seed: int = DEFAULT_SEED
    """Seed for rendering (delimiters, demonstrations) and template down-sampling."""
    splits: SplitConfig = field(default_factory=SplitConfig)
    leak: LeakConfig = field(default_factory=LeakConfig)
    render: RenderConfig = field(default_factory=RenderConfig)
    blend: BlendConfig = field(default_factory=BlendConfig)
    tokenize: TokenizeConfig = field(default_factory=TokenizeConfig)
    write_train_text: bool = False
    """Also write the train split as task JSONL (bench/train.jsonl)."""

    def validate(self) -> None:
        if not self.sources:
            raise ValueError("sources must list at least one collection")
        for s in self.sources:
            s.validate()
        for sub in (self.splits, self.leak, self.render, self.blend, self.tokenize):
            sub.validate()


def _resolve(path: str | None, base: Path) -> str | None:
    if path is None:
        return None
    p = Path(os.path.expanduser(path))
    return str(p if p.is_absolute() else (base / p).resolve())


def _resolve_paths(cfg: BenchConfig, base: Path) -> None:
    cfg.task_map = _resolve(cfg.task_map, base)
    for s in cfg.sources:
        s.path = _resolve(s.path, base)
        s.templates = _resolve(s.templates, base)


def config_from_dict(
    data: dict[str, Any], *, base_dir: str | os.PathLike = ".", source: str = "<dict>"
) -> BenchConfig:
    """Build and validate a `BenchConfig`; relative paths resolve against `base_dir`."""
    return build_typed(
        BenchConfig, data, source, finish=partial(_resolve_paths, base=Path(base_dir))
    )


def load_config(path: str | os.PathLike, overrides: Sequence[str] = ()) -> BenchConfig:
    """Load a bench config YAML strictly (the run recipe's loader), with ``a.b=value``
    overrides."""
    path = Path(path)
    return load_typed(
        BenchConfig, path, overrides, finish=partial(_resolve_paths, base=path.parent)
    )

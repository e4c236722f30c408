"""The one rendering function: Task + Instance (+ demonstrations, delimiter) -> prompt and target.

Training (data_prep) and evaluation (megatron_optiml.eval) both build prompts with
`render_example`, so what the model is trained on and evaluated on is the same text.

Layout (paper §2.4, with the separators of §4.8):

- task-level instruction (``task.instruction_level == "task"``, e.g. NI)::

      <definition>\\n\\n<demo 1><SEP><demo 2><SEP><input><delimiter>

- instance-level instruction (PromptSource, FLAN; the template is already in the input)::

      <demo 1><SEP><demo 2><SEP>[<definition>\\n]<input><delimiter>

  i.e. demonstrations go before the example. ``definition`` is only set for instance-level
  tasks when a hand-written instruction applies to every instance (CrossFit/ExMix/T5 style).

Each demonstration is rendered like the example itself followed by ``" " + output``.
The delimiter is appended only when the text does not already end in ":" (paper fn. 5).
The target is the first output with one leading space, as metaseq's
`streaming_finetune_language_modeling` builds ``src.rstrip(" ") + " " + tgt.rstrip()``; an
empty prompt (plain pre-training text) gets no delimiter and no added space.
"""

from __future__ import annotations

import math
import random
from collections.abc import Collection, Sequence
from dataclasses import dataclass

from data_prep.schema import Instance, Task

# Paper §2.4, footnote 5. The paper prints the last one as "\output:", an evident typo for
# "\noutput:" (every other entry comes in a "\n" and a " " form); we use "\noutput:".
PAPER_DELIMITERS: tuple[str, ...] = (
    "\nAnswer:",
    " Answer:",
    "\nA:",
    " A:",
    "\nOutput:",
    " Output:",
    "\nanswer:",
    "\noutput:",
)
DEFAULT_DELIMITER = "\nAnswer:"
# Paper §4.8 (MetaICL ablation): demonstrations are joined by "[SEP]" = three newlines,
# i.e. two blank lines.
DEMO_SEPARATOR = "\n\n\n"
# Between a task-level definition and what follows (NI's own prompts use a blank line).
DEFINITION_SEPARATOR = "\n\n"


@dataclass(frozen=True)
class RenderedExample:
    """A rendered example: the model reads `prompt`, loss goes on `target` (+ `</s>`)."""

    prompt: str
    target: str


def add_delimiter(text: str, delimiter: str) -> str:
    """`text` right-stripped, plus `delimiter` unless it already ends in ":" (or is empty)."""
    text = text.rstrip()
    if not text or text.endswith(":"):
        return text
    return text + delimiter


def render_target(prompt: str, output: str) -> str:
    """The target text for `output` after `prompt`: a leading space, unless the prompt is empty.

    Use this for every answer option in rank classification, so options are scored exactly as
    training targets look.
    """
    output = output.rstrip()
    if not prompt:
        return output
    return " " + output.lstrip(" ")


def _example_text(task: Task, instance: Instance) -> str:
    if task.instruction_level == "instance" and task.definition:
        return task.definition.rstrip() + "\n" + instance.input
    return instance.input


def render_example(
    task: Task,
    instance: Instance,
    *,
    demonstrations: Sequence[Instance] = (),
    delimiter: str = DEFAULT_DELIMITER,
    demo_separator: str = DEMO_SEPARATOR,
    output: str | None = None,
) -> RenderedExample:
    """Render one example of `task` as the model sees it.

    Args:
        task: the task (its instruction level and definition decide the layout).
        instance: the example to render.
        demonstrations: k solved examples shown before the input (0-shot when empty); the
            caller guarantees `instance` is not among them (`sample_demonstrations` does).
        delimiter: put between prompt and output when the prompt does not end in ":".
        demo_separator: text between demonstrations and between the last one and the input.
        output: the target text; defaults to `instance.outputs[0]`.
    """
    if output is None:
        if not instance.outputs:
            raise ValueError(f"task {task.name!r}, instance {instance.id!r}: no outputs")
        output = instance.outputs[0]
    blocks = []
    for demo in demonstrations:
        demo_prompt = add_delimiter(_example_text(task, demo), delimiter)
        blocks.append(demo_prompt + render_target(demo_prompt, demo.outputs[0]))
    blocks.append(add_delimiter(_example_text(task, instance), delimiter))
    body = demo_separator.join(blocks)
    if task.instruction_level == "task" and task.definition.strip():
        prompt = task.definition.strip() + DEFINITION_SEPARATOR + body
    else:
        prompt = body
    return RenderedExample(prompt=prompt, target=render_target(prompt, output))


def zipf_probabilities(a: float, max_k: int) -> list[float]:
    """P(k demonstrations) for k = 0..max_k: a Zipf(a) over ranks 1..max_k+1, truncated.

    k = rank - 1. This reproduces the paper's reported zero-shot fractions (§4.8): a=4 gives
    92.5% and a=2 gives 67.1% zero-shot examples with K=5, which a Zipf capped *after*
    sampling would not (it gives 60.8% for a=2). The paper does not spell the formula out.
    """
    if a <= 0:
        raise ValueError(f"zipf_a={a!r} must be > 0")
    if max_k < 0:
        raise ValueError(f"max_k={max_k!r} must be >= 0")
    weights = [1.0 / (rank**a) for rank in range(1, max_k + 2)]
    total = math.fsum(weights)  # the same on every Python (sum() changed in 3.12)
    return [w / total for w in weights]


def sample_num_demonstrations(rng: random.Random, *, zipf_a: float, max_k: int = 5) -> int:
    """Sample k ~ truncated Zipf (see `zipf_probabilities`)."""
    probs = zipf_probabilities(zipf_a, max_k)
    return rng.choices(range(max_k + 1), weights=probs, k=1)[0]


def sample_demonstrations(
    pool: Sequence[Instance],
    k: int,
    rng: random.Random,
    *,
    exclude: Instance | None = None,
    avoid: Collection[int] = (),
) -> list[Instance]:
    """Up to `k` distinct instances from `pool`, never `exclude` (by identity, id or input) and
    never the pool positions in `avoid` (e.g. `exclude`'s record under other templates,
    `data_prep.records.record_links`).

    Returns fewer than `k` when the pool is too small. O(k) draws, so large pools are cheap;
    the draw is the same as without `avoid` when it picks nothing in `avoid`.
    """
    if k <= 0 or not pool:
        return []

    def excluded(i: int) -> bool:
        cand = pool[i]
        if i in avoid:
            return True
        if exclude is None:
            return False
        return (
            cand is exclude
            or (bool(exclude.id) and cand.id == exclude.id)
            or cand.input == exclude.input
        )

    picks = rng.sample(range(len(pool)), min(len(pool), k + 1))
    chosen = [i for i in picks if not excluded(i)][:k]
    if len(chosen) < k and len(pool) > k + 1:
        # Several pool entries are excluded: fall back to a filtered draw.
        rest = [i for i in range(len(pool)) if not excluded(i) and i not in chosen]
        chosen += rng.sample(rest, min(len(rest), k - len(chosen)))
    return [pool[i] for i in chosen]


def sample_delimiter(rng: random.Random, delimiters: Sequence[str] = PAPER_DELIMITERS) -> str:
    """One delimiter drawn uniformly from `delimiters` (the paper samples one per example)."""
    return delimiters[rng.randrange(len(delimiters))]


@dataclass(frozen=True, kw_only=True)
class ShotPolicy:
    """How many demonstrations each example gets."""

    k: int = 0
    """Fixed number of demonstrations (used when `zipf_a` is None). 0 = zero-shot (OPT-IML)."""
    zipf_a: float | None = None
    """If set, k ~ truncated Zipf(zipf_a) over 0..max_k per example (paper §4.8)."""
    max_k: int = 5
    """Cap on k for Zipf sampling."""

    def __post_init__(self) -> None:
        if self.k < 0:
            raise ValueError(f"k={self.k!r} must be >= 0")
        if self.max_k < 0:
            raise ValueError(f"max_k={self.max_k!r} must be >= 0")
        if self.zipf_a is not None and self.zipf_a <= 0:
            raise ValueError(f"zipf_a={self.zipf_a!r} must be > 0")

    def draw(self, rng: random.Random) -> int:
        if self.zipf_a is None:
            return self.k
        return sample_num_demonstrations(rng, zipf_a=self.zipf_a, max_k=self.max_k)


def render_sampled(
    task: Task,
    instance: Instance,
    rng: random.Random,
    *,
    pool: Sequence[Instance] = (),
    shots: ShotPolicy = ShotPolicy(),
    delimiters: Sequence[str] = PAPER_DELIMITERS,
    demo_separator: str = DEMO_SEPARATOR,
) -> RenderedExample:
    """Render with a sampled delimiter and sampled demonstrations from `pool` (training)."""
    delimiter = sample_delimiter(rng, delimiters)
    k = shots.draw(rng)
    demos = sample_demonstrations(pool, k, rng, exclude=instance) if k else []
    return render_example(
        task, instance, demonstrations=demos, delimiter=delimiter, demo_separator=demo_separator
    )

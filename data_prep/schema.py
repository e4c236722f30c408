"""The one task schema every collection is read into, shared by data prep and evaluation.

A `Task` is a named set of `Instance`s with the instruction that goes with them. Where the
instruction lives says how a prompt is built (see `data_prep.render`):

- ``instruction_level="task"``: one instruction for the whole task (Super-NaturalInstructions'
  Definition, BIG-bench's task prefix, a reasoning prompt); each instance input is bare.
- ``instruction_level="instance"``: the instruction is already part of every instance input
  (PromptSource, FLAN: a template was applied to a raw record). ``definition`` may still hold a
  short hand-written instruction (the paper's choice for keyword-only collections such as
  CrossFit, ExMix, T5), which is then written in front of every instance.

Tasks are written and read as JSON lines (one task per line) with `write_tasks_jsonl` /
`read_tasks_jsonl`; that is the evaluation splits' on-disk form (``<out>/bench/<split>.jsonl``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

InstructionLevel = Literal["task", "instance"]
INSTRUCTION_LEVELS: tuple[str, ...] = ("task", "instance")


def normalize_category(name: str) -> str:
    """Categories compare in lower case with single spaces ("Sentiment_Analysis" -> "sentiment analysis")."""
    return " ".join(name.replace("_", " ").lower().split())


@dataclass
class Instance:
    """One example of a task."""

    input: str
    """The input text (for instance-level tasks: the input with its template applied)."""
    outputs: list[str]
    """Acceptable outputs; the first is the training target. Never empty."""
    options: list[str] | None = None
    """Answer options for rank classification (multiple choice), in the source's order."""
    id: str = ""
    """A stable id within the task (source id, or `<file>:<line>` when the source has none)."""

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"id": self.id, "input": self.input, "outputs": list(self.outputs)}
        if self.options is not None:
            d["options"] = list(self.options)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Instance:
        return cls(
            input=d["input"],
            outputs=list(d["outputs"]),
            options=None if d.get("options") is None else list(d["options"]),
            id=d.get("id", ""),
        )


@dataclass
class Task:
    """A task: name, where it comes from, its instruction and its instances."""

    name: str
    """Unique task name across the whole bench (e.g. `task1290_xsum_summarization`)."""
    benchmark: str
    """Source collection, lower case (`niv2`, `promptsource`, `flan`, `bigbench`, ...)."""
    category: str
    """Task category (the NI taxonomy where one exists); splits hold out whole categories."""
    instruction_level: InstructionLevel
    """`task`: `definition` is the task instruction; `instance`: inputs carry their template."""
    definition: str = ""
    """Task-level instruction (NI Definition), or a hand-written instance-level instruction."""
    demonstrations: list[Instance] = field(default_factory=list)
    """Examples the source ships for few-shot prompting (NI Positive Examples)."""
    instances: list[Instance] = field(default_factory=list)
    """The task's instances."""
    source: str = ""
    """File (or folder) the task was read from, for error messages."""

    def __post_init__(self) -> None:
        if self.instruction_level not in INSTRUCTION_LEVELS:
            raise ValueError(
                f"task {self.name!r}: instruction_level={self.instruction_level!r} "
                f"is not one of {INSTRUCTION_LEVELS}"
            )

    def with_instances(self, instances: list[Instance]) -> Task:
        """A copy of this task holding `instances` instead of its own."""
        return Task(
            name=self.name,
            benchmark=self.benchmark,
            category=self.category,
            instruction_level=self.instruction_level,
            definition=self.definition,
            demonstrations=list(self.demonstrations),
            instances=list(instances),
            source=self.source,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "benchmark": self.benchmark,
            "category": self.category,
            "instruction_level": self.instruction_level,
            "definition": self.definition,
            "demonstrations": [d.to_dict() for d in self.demonstrations],
            "instances": [i.to_dict() for i in self.instances],
            "source": self.source,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Task:
        return cls(
            name=d["name"],
            benchmark=d["benchmark"],
            category=d["category"],
            instruction_level=d["instruction_level"],
            definition=d.get("definition", ""),
            demonstrations=[Instance.from_dict(x) for x in d.get("demonstrations", [])],
            instances=[Instance.from_dict(x) for x in d.get("instances", [])],
            source=d.get("source", ""),
        )


def task_jsonl_line(task: Task) -> str:
    """One task as its JSON line (without the newline)."""
    return json.dumps(task.to_dict(), ensure_ascii=False, sort_keys=True)


def write_jsonl_lines(lines: Iterable[str], path: str | os.PathLike) -> None:
    """Write `task_jsonl_line`s, one per line, atomically (temp name, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8", newline="\n") as f:
        for line in lines:
            f.write(line)
            f.write("\n")
    os.replace(tmp, path)


def write_tasks_jsonl(tasks: Iterable[Task], path: str | os.PathLike) -> None:
    """Write tasks, one JSON object per line, atomically (temp name, then rename)."""
    write_jsonl_lines(map(task_jsonl_line, tasks), path)


def iter_tasks_jsonl(path: str | os.PathLike) -> Iterator[Task]:
    """Read tasks written by `write_tasks_jsonl` (split on "\\n" only: texts hold U+2028)."""
    with open(path, encoding="utf-8", newline="") as f:
        data = f.read()
    for lineno, line in enumerate(data.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            yield Task.from_dict(json.loads(line))
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise ValueError(f"{path}:{lineno}: not a task record ({e})") from e


def read_tasks_jsonl(path: str | os.PathLike) -> list[Task]:
    """All tasks of a task JSONL file."""
    return list(iter_tasks_jsonl(path))

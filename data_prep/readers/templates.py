"""Templates over raw JSONL records: PromptSource-style Jinja and FLAN-style template lists.

Every template is applied to every record, and all applications of one task's templates form
one task (as in the applied PromptSource collection and FLAN's "all instantiations").

PromptSource-style YAML::

    templates:
      - name: classify
        jinja: "{{text}}\\nWhat label best describes this article? ||| {{answer_choices[label]}}"
        answer_choices: "World ||| Sports ||| Business ||| Science"   # optional, may use Jinja

FLAN-style YAML (Python `str.format` fields; `{options_}` expands to FLAN's OPTIONS block)::

    options_field: choices          # optional: record field with the answer options
    templates:
      - ["{premise}\\nDoes this mean that \\"{hypothesis}\\"?\\n{options_}", "{answer}"]
"""

from __future__ import annotations

import string
from pathlib import Path
from typing import Any

import yaml

from data_prep.errors import DataError, where
from data_prep.readers._io import iter_jsonl, outputs_list
from data_prep.schema import Instance, Task


def _load_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as e:
        raise DataError(f"{path}: unreadable template file ({e})") from e
    if not isinstance(data, dict) or not isinstance(data.get("templates"), list):
        raise DataError(f"{path}: expected a mapping with a 'templates' list")
    return data


def read_jinja(records: Path, templates: Path, *, task: str, benchmark: str) -> Task:
    import jinja2
    from jinja2.sandbox import SandboxedEnvironment

    env = SandboxedEnvironment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    spec = _load_yaml(templates)
    compiled = []
    for i, t in enumerate(spec["templates"]):
        name = t.get("name", str(i)) if isinstance(t, dict) else str(i)
        loc = f"{templates}: template {name!r}"
        if not isinstance(t, dict) or not isinstance(t.get("jinja"), str):
            raise DataError(f"{loc}: missing field 'jinja'")
        try:
            body = env.from_string(t["jinja"])
            choices = env.from_string(t["answer_choices"]) if t.get("answer_choices") else None
        except jinja2.TemplateSyntaxError as e:
            raise DataError(f"{loc}: unreadable template (line {e.lineno}: {e.message})") from e
        compiled.append((name, body, choices))
    instances = []
    for lineno, rec in iter_jsonl(records):
        for name, body, choices_t in compiled:
            loc = f"{where(records, lineno)}: template {name!r}"
            try:
                options = None
                if choices_t is not None:
                    options = [c.strip() for c in choices_t.render(**rec).split("|||")]
                    rec_ctx = {**rec, "answer_choices": options}
                else:
                    rec_ctx = rec
                text = body.render(**rec_ctx)
            except jinja2.UndefinedError as e:
                raise DataError(f"{loc}: {e.message} (missing field in the record)") from e
            except Exception as e:  # a template is user code; say which one failed
                raise DataError(f"{loc}: template failed ({type(e).__name__}: {e})") from e
            if "|||" not in text:
                raise DataError(f"{loc}: rendered text has no '|||' between input and target")
            src, tgt = text.split("|||", 1)
            instances.append(_templated_instance(src, tgt, loc, options, f"{name}:{lineno}"))
    return _instance_level_task(task, benchmark, instances, records)


def _templated_instance(
    src: str, tgt: str, loc: str, options: list[str] | None, instance_id: str
) -> Instance:
    """One rendered (input, target) pair; an empty target is an error naming ``loc``."""
    return Instance(
        input=src.strip(), outputs=outputs_list(tgt, loc, "target"), options=options, id=instance_id
    )


def _instance_level_task(task: str, benchmark: str, instances: list, records: Path) -> Task:
    """A task whose instructions live in per-instance templates (PromptSource/FLAN style)."""
    return Task(
        name=task,
        benchmark=benchmark,
        category="",
        instruction_level="instance",
        instances=instances,
        source=str(records),
    )


def _format_fields(template: str) -> set[str]:
    return {f for _, f, _, _ in string.Formatter().parse(template) if f}


def flan_options_block(options: list[str]) -> str:
    """FLAN's way of listing answer options in the input."""
    return "OPTIONS:\n- " + "\n- ".join(options)


def read_flan(records: Path, templates: Path, *, task: str, benchmark: str) -> Task:
    spec = _load_yaml(templates)
    options_field = spec.get("options_field")
    pairs = []
    for i, t in enumerate(spec["templates"]):
        if not (isinstance(t, list) and len(t) == 2 and all(isinstance(x, str) for x in t)):
            raise DataError(
                f"{templates}: templates[{i}] must be [input_template, target_template]"
            )
        pairs.append(tuple(t))
    instances = []
    for lineno, rec in iter_jsonl(records):
        options = None
        ctx = dict(rec)
        if options_field is not None:
            if not isinstance(rec.get(options_field), list):
                raise DataError(f"{where(records, lineno)}: field {options_field!r} must be a list")
            options = [str(o) for o in rec[options_field]]
            ctx["options_"] = flan_options_block(options)
        for i, (src_t, tgt_t) in enumerate(pairs):
            loc = f"{where(records, lineno)}: template {i}"
            missing = (_format_fields(src_t) | _format_fields(tgt_t)) - set(ctx)
            if missing:
                raise DataError(f"{loc}: missing field {sorted(missing)[0]!r} in the record")
            try:
                src, tgt = src_t.format(**ctx), tgt_t.format(**ctx)
            except (ValueError, IndexError, KeyError) as e:
                raise DataError(f"{templates}: templates[{i}] unreadable ({e})") from e
            instances.append(_templated_instance(src, tgt, loc, options, f"t{i}:{lineno}"))
    return _instance_level_task(task, benchmark, instances, records)

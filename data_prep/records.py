"""Which instances of a task show the same underlying record under different templates.

PromptSource-style tasks apply several templates to one dataset's records, and the same review
or passage often appears under two templates (the applied T0 files draw each template's records
from the same start of the dataset). A demonstration showing the query's record under another
template with its label gives the answer away, so evaluation never uses one (paper §4.1 scores
unseen examples).

The applied files carry no record ids, so a record is recognised by its text: two instances of
different templates share a record when they share a word n-gram that is *content* in both
templates, i.e. occurs in only one distinct input of its template. Template wording repeats
across a template's inputs and so never counts; a passage shared by several questions of one
template (adversarial_qa, duorc) does not count either, the question text still does.
Instances whose id has no template (`<template>:<line>`, as NI and BIG-bench ids) are never
linked.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from data_prep.schema import Instance

RECORD_NGRAM = 8
"""Words per n-gram: long enough that two templates' wording rarely shares one."""
_WORD = re.compile(r"\w+")


def template_key(inst: Instance) -> str | None:
    """`ag_news_classify` for id `ag_news_classify:4`; None for ids without a template."""
    head, sep, tail = inst.id.rpartition(":")
    return head if sep and head and tail.isdigit() else None


def _ngrams(text: str, n: int) -> set[int]:
    words = _WORD.findall(text.lower())
    return {hash(tuple(words[i : i + n])) for i in range(len(words) - n + 1)}


def record_links(
    queries: Sequence[Instance], pool: Sequence[Instance], *, n: int = RECORD_NGRAM
) -> list[frozenset[int]]:
    """For each query, the positions in `pool` of instances of *other* templates that share
    its record (see the module docstring). `pool` may be `queries` itself.

    Template wording is found over queries and pool together, so pass the whole task.
    """
    items: list[Instance] = list(queries)
    index = {id(inst): k for k, inst in enumerate(items)}
    pool_items = []
    for inst in pool:
        if id(inst) not in index:
            index[id(inst)] = len(items)
            items.append(inst)
        pool_items.append(index[id(inst)])
    templates = [template_key(inst) for inst in items]
    grams: list[set[int]] = [set() for _ in items]
    inputs_with: dict[str, dict[int, set[str]]] = {}  # template -> n-gram -> distinct inputs
    by_input: dict[tuple[str, str], set[int]] = {}
    for k, inst in enumerate(items):
        t = templates[k]
        if t is None:
            continue
        key = (t, inst.input)
        if key not in by_input:
            by_input[key] = _ngrams(inst.input, n)
            counts = inputs_with.setdefault(t, {})
            for g in by_input[key]:
                counts.setdefault(g, set()).add(inst.input)
        grams[k] = by_input[key]
    owners: dict[int, list[int]] = {}  # content n-gram -> pool positions holding it
    content: list[set[int]] = []
    for k, t in enumerate(templates):
        own = {g for g in grams[k] if len(inputs_with[t][g]) == 1} if t is not None else set()
        content.append(own)
    for pos, k in enumerate(pool_items):
        for g in content[k]:
            owners.setdefault(g, []).append(pos)
    links = []
    for k in range(len(queries)):
        found = {p for g in content[k] for p in owners.get(g, ())}
        links.append(frozenset(p for p in found if templates[pool_items[p]] != templates[k]))
    return links

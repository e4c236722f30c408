"""Held-out PromptSource/T0 tasks on the bundled real data: classification templates are
rank-classified, and k-shot demonstrations never show the query's record under another template."""

from __future__ import annotations

from pathlib import Path

import pytest

from data_prep.readers.promptsource import read_promptsource
from data_prep.records import record_links, template_key
from megatron_optiml.eval.config import EvalConfig
from megatron_optiml.eval.prompts import render_eval_example
from megatron_optiml.eval.runner import evaluate_model

PS = Path(__file__).resolve().parents[2] / "examples" / "data" / "promptsource_t0"
DATASETS = ["ag_news", "amazon_polarity", "yelp_review_full", "glue_mrpc", "xsum", "samsum"]
DATASETS += ["paws_labeled_final", "sciq", "commonsense_qa"]


@pytest.fixture(scope="module")
def ps_tasks():
    return {t.name: t for t in read_promptsource(PS, datasets=DATASETS)}


def same_passage(a: str, b: str) -> bool:
    """Independent of `record_links`: the inputs share a run of 80 characters (any such run
    holds one of `a`'s 60-character windows starting at a multiple of 20)."""
    return any(a[i : i + 60] in b for i in range(0, len(a) - 59, 20))


def test_classification_tasks_are_rank_classified(ps_tasks, tiny_model):
    """They were generated and scored with ROUGE-L (the applied files carry no choices)."""
    tasks = [ps_tasks["amazon_polarity"], ps_tasks["xsum"]]
    cfg = EvalConfig(splits=["heldout_task"], shots=[0], limit=4, max_new_tokens=2, progress=False)
    results, _ = evaluate_model(tiny_model, {"heldout_task": tasks}, cfg)
    metric = {r.task: r.metric for r in results}
    assert metric == {"amazon_polarity": "accuracy", "xsum": "rougeL"}


def test_demonstrations_never_show_the_query_record_under_another_template(ps_tasks):
    """A held-out task's pool is its own evaluation instances; the same review under another
    template, with its label, was drawn as a demonstration (about 1 prompt in 40 at 5-shot)."""
    leaks = 0
    for name in ("ag_news", "amazon_polarity", "yelp_review_full", "glue_mrpc"):
        task = ps_tasks[name]
        links = record_links(task.instances, task.instances)
        assert sum(1 for linked in links if linked) > 30  # the bundled files share records
        for index, query in enumerate(task.instances):
            _, demos = render_eval_example(
                task,
                index,
                split="heldout_task",
                k=5,
                pool=task.instances,
                delimiter="\nAnswer:",
                seed=1234,
                same_record=links,
            )
            assert len(demos) == 5
            leaks += any(
                template_key(d) != template_key(query) and same_passage(d.input, query.input)
                for d in demos
            )
    assert leaks == 0


def test_runner_k_shot_demonstrations_skip_the_query_record(ps_tasks, tiny_model):
    task = ps_tasks["ag_news"]
    by_id = {i.id: i for i in task.instances}
    cfg = EvalConfig(
        splits=["heldout_task"], shots=[5], max_new_tokens=2, predictions=True, progress=False
    )
    _, records = evaluate_model(tiny_model, {"heldout_task": [task]}, cfg)
    assert len(records) == len(task.instances)
    for rec in records:
        query = by_id[rec["id"]]
        assert len(rec["demonstrations"]) == 5
        for demo in map(by_id.get, rec["demonstrations"]):
            assert template_key(demo) == template_key(query) or not same_passage(
                demo.input, query.input
            ), rec["id"]
    # the prompt built without a precomputed `same_record` is the same
    ex, demos = render_eval_example(
        task, 7, split="heldout_task", k=5, pool=task.instances, delimiter=cfg.delimiter, seed=1234
    )
    assert [d.id for d in demos] == next(r for r in records if r["id"] == task.instances[7].id)[
        "demonstrations"
    ]


def test_a_task_mixing_ranked_and_generated_templates_says_so(ps_tasks, tiny_model):
    """paws: two yes/no templates (rank classification) and a paraphrase template (ROUGE-L)."""
    from megatron_optiml.eval.aggregate import aggregate

    task = ps_tasks["paws_labeled_final"]
    cfg = EvalConfig(splits=["heldout_task"], shots=[0], max_new_tokens=2, progress=False)
    results, _ = evaluate_model(tiny_model, {"heldout_task": [task]}, cfg)
    by_template = {(r.subtask, r.metric) for r in results}
    assert by_template == {
        ("paws_labeled_final_Meaning", "accuracy"),
        ("paws_labeled_final_Rewrite", "accuracy"),
        ("paws_labeled_final_paraphrase_task", "rougeL"),
    }
    entry = aggregate(results)["heldout_task"]["shots"]["0"]["tasks"]["paws_labeled_final"]
    assert entry["metric"] == "accuracy+rougeL"

"""Template down-sampling of training tasks (paper §4.1): counts, determinism, scope."""

import copy
import json
from pathlib import Path

from data_prep.readers.promptsource import read_promptsource
from data_prep.readers.templates import read_flan, read_jinja
from data_prep.sampling import examples_per_template, sample_templates
from data_prep.schema import read_tasks_jsonl

DATA = Path(__file__).resolve().parents[2] / "examples" / "data"
NAMES = ["ag_news", "amazon_polarity", "yelp_review_full", "xsum", "samsum", "glue_mrpc"]
NAMES += ["paws_labeled_final", "sciq", "commonsense_qa"]


def test_n_prompted_instances_from_the_merged_templates():
    for task in read_promptsource(DATA / "promptsource_t0", datasets=NAMES):
        sizes = examples_per_template(task)
        assert len(sizes) == 3 and set(sizes.values()) == {40}  # 3 templates x 40 records
        kept = sample_templates(task, seed=1234)
        counts = examples_per_template(kept)
        # N = 40 of the 120 merged prompted instances; every template is drawn from
        assert sum(counts.values()) == 40 and set(counts) == set(sizes)
        assert all(0 < counts[t] <= sizes[t] for t in counts)
        ids = [i.id for i in task.instances]
        assert [i.id for i in kept.instances] == [
            i for i in ids if i in {k.id for k in kept.instances}
        ]
        assert kept.name == task.name and kept.definition == task.definition


def test_draw_is_deterministic_per_seed_and_task():
    (task,) = [
        t for t in read_promptsource(DATA / "promptsource_t0", datasets=NAMES) if t.name == "sciq"
    ]

    def ids(seed):
        return [i.id for i in sample_templates(task, seed=seed).instances]

    assert ids(1234) == ids(1234) != ids(7)
    renamed = copy.copy(task)
    renamed.name = "sciq_copy"
    assert [i.id for i in sample_templates(renamed, seed=1234).instances] != ids(1234)


def test_one_template_or_n_already_small_is_untouched():
    (task,) = [
        t for t in read_promptsource(DATA / "promptsource_t0", datasets=NAMES) if t.name == "xsum"
    ]
    one = task.with_instances(
        [i for i in task.instances if i.id.startswith(task.instances[0].id.rsplit(":", 1)[0])]
    )
    assert sample_templates(one, seed=1) is one


def test_jinja_and_flan_keep_one_instance_per_record(tmp_path):
    recs = tmp_path / "r.jsonl"
    recs.write_text("".join(json.dumps({"x": f"r{i}", "y": f"y{i}"}) + "\n" for i in range(30)))
    jinja = tmp_path / "j.yaml"
    jinja.write_text(
        "templates:\n"
        + "".join(f'  - {{name: t{k}, jinja: "T{k} {{{{x}}}} ||| {{{{y}}}}"}}\n' for k in range(4))
    )
    flan = tmp_path / "f.yaml"
    flan.write_text("templates:\n" + "".join(f'  - ["F{k} {{x}}", "{{y}}"]\n' for k in range(4)))
    for read, tpl in ((read_jinja, jinja), (read_flan, flan)):
        task = read(recs, tpl, task="t", benchmark="b")
        assert len(task.instances) == 120
        counts = examples_per_template(sample_templates(task, seed=3))
        assert len(counts) == 4 and sum(counts.values()) == 30


def test_build_samples_training_only(built_bench):
    """Train tasks of the bundled PromptSource data shrink to N; evaluation keeps every template."""
    cfg, res = built_bench
    assert all(s.template_sampling == "paper" for s in cfg.sources)
    bench = res.out_dir / "bench"
    evals = [
        t
        for s in ("validation", "heldout_instance")
        for t in read_tasks_jsonl(bench / f"{s}.jsonl")
    ]
    full = {t.name: t for t in read_promptsource(DATA / "promptsource_t0", datasets=NAMES)}
    train = {t.name: t for t in res.splits["train"]}
    for name in ("ag_news", "glue_mrpc", "sciq"):
        held_out = {i.id for t in evals if t.name == name for i in t.instances}
        before = full[name].with_instances(
            [i for i in full[name].instances if i.id not in held_out]
        )
        n = max(examples_per_template(before).values())
        assert len(train[name].instances) == n < len(before.instances) // 2
        assert {i.id for i in train[name].instances} <= {i.id for i in before.instances}
        assert len(examples_per_template(train[name])) == 3
    assert len(train["task1290_xsum_summarization"].instances) > 50  # NI: untouched
    held = {t.name: t for t in read_tasks_jsonl(bench / "heldout_task.jsonl")}
    assert len(held["samsum"].instances) == 120  # a held-out task: all 3 templates x 40
    inst = {t.name: t for t in read_tasks_jsonl(bench / "heldout_instance.jsonl")}
    assert len(examples_per_template(inst["ag_news"])) == 3

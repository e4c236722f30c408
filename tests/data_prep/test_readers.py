import json
from pathlib import Path

import pytest

from data_prep.config import SourceConfig
from data_prep.errors import DataError
from data_prep.mapping import TaskMap, load_task_map
from data_prep.readers import read_sources
from data_prep.readers.bigbench import read_bigbench
from data_prep.readers.jsonl import read_jsonl, read_text
from data_prep.readers.niv2 import read_niv2
from data_prep.readers.promptsource import read_promptsource
from data_prep.readers.templates import read_flan, read_jinja

DATA = Path(__file__).resolve().parents[2] / "examples" / "data"


def test_bundled_niv2():
    tasks = read_niv2(DATA / "natural_instructions")
    assert [t.name for t in tasks] == [
        "task1290_xsum_summarization",
        "task1292_yelp_review_full_text_categorization",
    ]
    t = tasks[1]
    assert t.instruction_level == "task" and t.category == "sentiment analysis"
    assert t.definition.startswith("You are given a review about a place.")
    assert len(t.instances) == 100 and t.demonstrations
    assert t.instances[0].outputs == ["1 star"]


def test_bundled_bigbench_multiple_choice_becomes_options():
    tasks = {t.name: t for t in read_bigbench(DATA / "bigbench")}
    assert len(tasks) == 10
    mc = tasks["hindu_knowledge"].instances[0]
    assert mc.options and len(mc.options) >= 2 and mc.outputs[0] in mc.options
    gen = tasks["auto_debugging"].instances[0]
    assert gen.options is None and gen.outputs == ["2"]
    assert sum(1 for t in tasks.values() if t.instances[0].options) == 8


def test_bundled_promptsource_templates_form_one_task():
    names = ["ag_news", "amazon_polarity", "yelp_review_full", "xsum", "samsum", "glue_mrpc"]
    names += ["paws_labeled_final", "paws", "sciq", "commonsense_qa"]
    tasks = {t.name: t for t in read_promptsource(DATA / "promptsource_t0", datasets=names)}
    ag = tasks["ag_news"]
    assert ag.instruction_level == "instance" and len(ag.instances) == 3 * 40
    assert all("<|endoftext|>" not in o for i in ag.instances for o in i.outputs)
    assert "paws_labeled_final" in tasks and "paws" not in tasks  # longest prefix wins


def test_jsonl_split_on_newline_only(tmp_path):
    f = tmp_path / "x.jsonl"
    recs = [{"prompt": "a\u2028b\rc", "completion": "ok"}, {"prompt": "d", "completion": "e"}]
    f.write_bytes(("\n".join(json.dumps(r, ensure_ascii=False) for r in recs) + "\n").encode())
    (t,) = read_jsonl(f, benchmark="x", task="t")
    assert [i.input for i in t.instances] == ["a\u2028b\rc", "d"]


def test_jsonl_input_output_with_task_field_and_text(tmp_path):
    f = tmp_path / "m.jsonl"
    f.write_text(
        '{"task": "b", "input": "i", "output": ["o1", "o2"], "options": ["o1", "x"]}\n'
        '{"task": "a", "input": "j", "output": "p"}\n'
    )
    tasks = read_jsonl(f, benchmark="reasoning")
    assert [t.name for t in tasks] == ["a", "b"] and tasks[1].instances[0].options == ["o1", "x"]
    g = tmp_path / "pt.jsonl"
    g.write_text('{"text": "Plain pre-training text."}\n')
    (pt,) = read_text(g, benchmark="pretrain", task="pretrain")
    assert pt.instances[0].input == "" and pt.instances[0].outputs == ["Plain pre-training text."]


def test_jinja_templates(tmp_path):
    recs = tmp_path / "r.jsonl"
    recs.write_text('{"text": "Stocks rose.", "label": 2}\n{"text": "Team won.", "label": 1}\n')
    tpl = tmp_path / "t.yaml"
    tpl.write_text(
        "templates:\n"
        "  - name: classify\n"
        '    jinja: "{{text}}\\nWhich topic? ||| {{answer_choices[label]}}"\n'
        '    answer_choices: "World ||| Sports ||| Business"\n'
        "  - name: plain\n"
        '    jinja: "Topic of: {{text}} ||| {{label}}"\n'
    )
    t = read_jinja(recs, tpl, task="news", benchmark="promptsource")
    assert len(t.instances) == 4
    assert t.instances[0].input == "Stocks rose.\nWhich topic?"
    assert t.instances[0].outputs == ["Business"] and t.instances[0].options == [
        "World",
        "Sports",
        "Business",
    ]


def test_flan_templates(tmp_path):
    recs = tmp_path / "r.jsonl"
    recs.write_text(
        '{"premise": "P.", "hypothesis": "H.", "answer": "yes", "choices": ["yes", "no"]}\n'
    )
    tpl = tmp_path / "t.yaml"
    tpl.write_text(
        'options_field: choices\ntemplates:\n  - ["{premise}\\nDoes it follow that {hypothesis}?\\n{options_}", "{answer}"]\n'
    )
    (inst,) = read_flan(recs, tpl, task="nli", benchmark="flan").instances
    assert inst.input == "P.\nDoes it follow that H.?\nOPTIONS:\n- yes\n- no"
    assert inst.outputs == ["yes"] and inst.options == ["yes", "no"]


# --- bad input: errors name the file, line, task and field ------------------------------


def test_malformed_json_names_file_and_line(tmp_path):
    f = tmp_path / "bad.jsonl"
    f.write_text('{"prompt": "a", "completion": "b"}\n{"prompt": "a", \n')
    with pytest.raises(DataError, match=r"bad\.jsonl:2: malformed JSON"):
        read_jsonl(f, benchmark="x", task="t")


def test_missing_field_names_line_and_field(tmp_path):
    f = tmp_path / "ds_tpl.jsonl"
    f.write_text('{"prompt": "a", "completion": "b"}\n\n{"prompt": "c"}\n')
    with pytest.raises(DataError, match=r"ds_tpl\.jsonl:3: missing field 'completion'"):
        read_promptsource(f, datasets=["ds"])


def test_empty_output_is_an_error(tmp_path):
    f = tmp_path / "ds_tpl.jsonl"
    f.write_text('{"prompt": "a", "completion": "<|endoftext|>"}\n')
    with pytest.raises(DataError, match=r"ds_tpl\.jsonl:1: field 'completion' is empty"):
        read_promptsource(f, datasets=["ds"])
    g = tmp_path / "task1_x.json"
    g.write_text(
        json.dumps({"Definition": ["d"], "Instances": [{"id": "i0", "input": "x", "output": [""]}]})
    )
    with pytest.raises(
        DataError, match=r"task1_x\.json: Instances\[0\] \(id 'i0'\): field 'output' is empty"
    ):
        read_niv2(g)


def test_niv2_missing_definition(tmp_path):
    g = tmp_path / "task2_y.json"
    g.write_text(json.dumps({"Instances": []}))
    with pytest.raises(DataError, match=r"task2_y\.json: missing field 'Definition'"):
        read_niv2(g)


def test_unreadable_template(tmp_path):
    recs = tmp_path / "r.jsonl"
    recs.write_text('{"text": "a"}\n')
    tpl = tmp_path / "t.yaml"
    tpl.write_text('templates:\n  - name: broken\n    jinja: "{{ text ||| x"\n')
    with pytest.raises(DataError, match=r"t\.yaml: template 'broken': unreadable template"):
        read_jinja(recs, tpl, task="t", benchmark="b")
    tpl.write_text('templates:\n  - name: ok\n    jinja: "{{ title }} ||| x"\n')
    with pytest.raises(DataError, match=r"r\.jsonl:1: template 'ok': 'title' is undefined"):
        read_jinja(recs, tpl, task="t", benchmark="b")


def test_unknown_category_names_task_and_mapping(tmp_path):
    m = tmp_path / "map.yaml"
    m.write_text("categories: [summarization]\ntasks:\n  t: {category: sentiment analysis}\n")
    f = tmp_path / "d.jsonl"
    f.write_text('{"input": "x", "output": "y"}\n')
    src = SourceConfig(type="jsonl", path=str(f), benchmark="b", task="t")
    with pytest.raises(
        DataError, match=r"task 't' .*unknown category 'sentiment analysis'.*map\.yaml"
    ):
        read_sources([src], load_task_map(m))
    src2 = SourceConfig(type="jsonl", path=str(f), benchmark="b", task="u")
    with pytest.raises(DataError, match=r"task 'u' .*field 'category' is missing"):
        read_sources([src2], TaskMap())


def test_bundled_task_map_covers_bundled_data(bench_config):
    tasks, _ = read_sources(bench_config.sources, load_task_map(bench_config.task_map))
    assert len(tasks) == 21
    assert {t.benchmark for t in tasks} == {"niv2", "promptsource", "bigbench"}


# --- answer labels (issue: scoring and labels) ------------------------------------------

# BIG-bench strategyqa's schema: options in `target_scores`, an explanation in `target`.
STRATEGYQA_EXAMPLES = [
    {
        "input": "Are more people today related to Genghis Khan than Julius Caesar?",
        "target_scores": {"Yes": 1, "No": 0},
        "target": "Yes. Julius Caesar had three children. Genghis Khan had sixteen children. "
        "Modern geneticists have determined that out of every 200 men today has DNA that can "
        "be traced to Genghis Khan.",
    },
    {
        "input": "Could the members of The Police perform lawful arrests?",
        "target_scores": {"Yes": 0, "No": 1},
        "target": "No. The members of The Police were musicians, not law enforcement officers. "
        "Only law enforcement officers can perform lawful arrests.",
    },
    {
        "input": "Would a Monoamine Oxidase candy bar cheer up a depressed friend?",
        "target_scores": {"Yes": 0, "No": 1},
        "target": "No. Depression is caused by low levels of serotonin, dopamine and "
        "norepinephrine. Monoamine Oxidase breaks down neurotransmitters and lowers levels of "
        "serotonin, dopamine and norepinephrine.",
    },
    {
        "input": "Do hamsters provide food for any animals?",
        "target_scores": {"Yes": 1, "No": 0},
        "target": "Yes. Hamsters are prey animals. Prey are food for predators.",
    },
]


def _bigbench_file(tmp_path, examples, name="strategyqa"):
    f = tmp_path / f"{name}.json"
    f.write_text(
        json.dumps(
            {
                "name": name,
                "description": "Answer questions in which the required reasoning steps are implicit.",
                "keywords": ["logical reasoning", "multiple choice"],
                "examples": examples,
            }
        )
    )
    return f


def test_bigbench_multiple_choice_outputs_come_from_target_scores(tmp_path):
    """strategyqa: `target` is an explanation; taking it as the output made every option wrong
    (accuracy 0.0 for any model, chance 50%)."""
    from data_prep.render import render_example

    (task,) = read_bigbench(_bigbench_file(tmp_path, STRATEGYQA_EXAMPLES))
    answers = [next(k for k, v in ex["target_scores"].items() if v) for ex in STRATEGYQA_EXAMPLES]
    assert [i.outputs for i in task.instances] == [[a] for a in answers]
    assert all(i.options == ["Yes", "No"] for i in task.instances)
    # Rank classification counts the chosen option right when it is an output: exactly one is.
    for inst in task.instances:
        assert sum(o in inst.outputs for o in inst.options) == 1
    always_yes = sum("Yes" in i.outputs for i in task.instances) / len(task.instances)
    assert always_yes == 0.5
    # ... and training learns the answer, not the explanation.
    assert render_example(task, task.instances[0]).target == " Yes"


def test_bigbench_no_correct_option_is_an_error_or_skipped_with_a_count(tmp_path, caplog):
    examples = [dict(STRATEGYQA_EXAMPLES[0]), {"input": "Q?", "target_scores": {"a": 0, "b": 0}}]
    examples.append(dict(STRATEGYQA_EXAMPLES[1]))
    f = _bigbench_file(tmp_path, examples, name="nocorrect")
    with pytest.raises(
        DataError, match=r"nocorrect\.json: examples\[1\]: field 'target_scores' marks no option"
    ):
        read_bigbench(f)
    with caplog.at_level("WARNING", logger="data_prep.readers.bigbench"):
        (task,) = read_bigbench(f, skip_empty=True)
    assert [i.id for i in task.instances] == ["0", "2"]
    assert "nocorrect.json: skipped 1 of 3 examples (1 with no correct option" in caplog.text


def test_promptsource_classification_templates_are_rank_classified():
    """The applied T0 files carry no answer choices: a template whose completions are a fixed
    label set gets that set as options (every instance), free-text templates get none."""
    names = ["ag_news", "amazon_polarity", "yelp_review_full", "xsum", "samsum", "glue_mrpc"]
    names += ["paws_labeled_final", "sciq", "commonsense_qa"]
    tasks = {t.name: t for t in read_promptsource(DATA / "promptsource_t0", datasets=names)}
    by_template: dict[str, set] = {}
    for task in tasks.values():
        for inst in task.instances:
            template = inst.id.rsplit(":", 1)[0]
            by_template.setdefault(template, set()).add(tuple(inst.options or ()))
            assert inst.options is None or inst.outputs[0] in inst.options
    options = {t: v.pop() for t, v in by_template.items() if len(v) == 1}
    assert len(options) == len(by_template)  # one label set per template
    assert options["amazon_polarity_Is_this_review"] == ("Negative", "Positive")
    assert options["amazon_polarity_would_you_buy"] == ("decrease", "increase")
    assert options["glue_mrpc_equivalent"] == ("equivalent", "not equivalent")
    assert options["yelp_review_full_format_star"] == tuple(
        ["1 star"] + [f"{n} stars" for n in range(2, 6)]
    )
    ranked = {t for t, o in options.items() if o}
    assert {t.split("_")[0] for t in ranked} == {"ag", "amazon", "yelp", "glue", "paws"}
    # every template of those 5 datasets but paws' paraphrase generation
    assert len(ranked) == 14 and options["paws_labeled_final_paraphrase_task"] == ()
    for free in ("xsum", "samsum", "sciq", "commonsense_qa"):  # summaries, free answers
        assert all(i.options is None for i in tasks[free].instances)


def test_promptsource_record_answer_choices(tmp_path):
    f = tmp_path / "ds_tpl.jsonl"
    f.write_text(
        '{"prompt": "Is it? A or B", "completion": "B<|endoftext|>", "answer_choices": "A ||| B"}\n'
        '{"prompt": "Or C?", "completion": "C", "answer_choices": ["C", "D", "E"]}\n'
    )
    (task,) = read_promptsource(f, datasets=["ds"])
    assert [i.options for i in task.instances] == [["A", "B"], ["C", "D", "E"]]
    f.write_text('{"prompt": "Is it?", "completion": "Z", "answer_choices": "A ||| B"}\n')
    with pytest.raises(DataError, match=r"ds_tpl\.jsonl:1: completion 'Z' is not one of"):
        read_promptsource(f, datasets=["ds"])


# --- silent acceptance: duplicates, skipped instances, skipped files ---------------------


def _niv2_copy(tmp_path, edit=None):
    d = json.loads(
        (
            DATA / "natural_instructions" / "task1292_yelp_review_full_text_categorization.json"
        ).read_text(encoding="utf-8")
    )
    if edit is not None:
        edit(d)
    f = tmp_path / "task1292_yelp_review_full_text_categorization.json"
    f.write_text(json.dumps(d), encoding="utf-8")
    return f


def test_niv2_duplicate_instance_ids(tmp_path, caplog):
    same = _niv2_copy(tmp_path, lambda d: d["Instances"].append(dict(d["Instances"][3])))
    with caplog.at_level("WARNING", logger="data_prep.readers.niv2"):
        (task,) = read_niv2(same)
    assert len(task.instances) == 100 and len({i.id for i in task.instances}) == 100
    assert "dropped 1 instances repeating an earlier instance" in caplog.text

    def clash(d):
        d["Instances"].append({**d["Instances"][3], "output": ["another output"]})

    other = _niv2_copy(tmp_path, clash)
    with pytest.raises(
        DataError, match=r"Instances\[100\] \(id '.*'\): id already used by Instances\[3\]"
    ):
        read_niv2(other)


def test_skipped_empty_outputs_are_counted(tmp_path, caplog):
    def empty(d):
        d["Instances"][5]["output"] = [""]
        d["Instances"][7]["output"] = ["  "]

    f = _niv2_copy(tmp_path, empty)
    with pytest.raises(DataError, match=r"Instances\[5\]"):
        read_niv2(f)
    with caplog.at_level("WARNING"):
        (task,) = read_niv2(f, skip_empty=True)
        ps = tmp_path / "ds_tpl.jsonl"
        ps.write_text(
            '{"prompt": "a", "completion": "<|endoftext|>"}\n{"prompt": "b", "completion": "c"}\n'
        )
        (ps_task,) = read_promptsource(ps, datasets=["ds"], skip_empty=True)
    assert len(task.instances) == 98 and len(ps_task.instances) == 1
    assert "skipped 2 of 100 instances with an empty output (skip_empty_outputs)" in caplog.text
    assert "ds_tpl.jsonl: skipped 1 of 2 records with an empty completion" in caplog.text


def test_niv2_files_not_named_task_json_are_named(tmp_path, caplog):
    _niv2_copy(tmp_path)
    (tmp_path / "Task1293_renamed.json").write_text("{}")
    (tmp_path / "README.md").write_text("notes")
    with caplog.at_level("WARNING", logger="data_prep.readers.niv2"):
        tasks = read_niv2(tmp_path)
    assert len(tasks) == 1
    assert "skipped 2 files not named task*.json: README.md, Task1293_renamed.json" in caplog.text
